"""Phone-recogniser features (pocketsphinx's US-English model, offline) on speech made here."""

from __future__ import annotations

import numpy as np
import pytest

from tests.pipeline.test_vad import espeak
from workers.pipeline.phones import FEATURE_NAMES, PHONES, decode_phones, phone_features, phone_features_from_segments


def test_speech_decodes_to_phones_with_a_plausible_rate() -> None:
    x = espeak("Please call Stella. Ask her to bring these things with her from the store.")
    segments = decode_phones(x)
    heard = [p for p, *_ in segments if p in PHONES]
    assert len(heard) >= 20 and len(set(heard)) >= 8  # (no S: the 3.8 kHz low-pass takes its energy)
    f = dict(zip(FEATURE_NAMES, phone_features(x), strict=True))
    assert 5.0 <= f["phones_per_s"] <= 20.0  # speech runs at roughly 10-15 phones a second
    assert 0.3 <= f["speech_share"] <= 1.0
    assert sum(f[f"share_{p}"] for p in PHONES) == pytest.approx(1.0)
    assert f["score_per_frame"] < 0  # log-scores
    # a recording's features do not depend on what the process decoded before
    phone_features(espeak("Something else entirely, said in another voice.", "en-gb"))
    assert np.array_equal(phone_features(x), np.array(list(f.values())))


def test_summary_of_hand_made_segments() -> None:
    e = np.exp
    segs = [("SIL", 0, 9, e(-1)), ("AA", 10, 19, e(-2)), ("S", 20, 24, e(-1)), ("AA", 25, 29, e(-2)), ("SIL", 30, 39, 1.0)]
    f = dict(zip(FEATURE_NAMES, phone_features_from_segments(segs), strict=True))
    assert f["share_AA"] == pytest.approx(2 / 3) and f["share_S"] == pytest.approx(1 / 3)
    assert f["frames_AA"] == pytest.approx(7.5) and f["frames_S"] == pytest.approx(5)
    assert f["score_AA"] == pytest.approx(np.mean([-2 / 10, -2 / 5])) and f["score_S"] == pytest.approx(-1 / 5)
    assert f["score_per_frame"] == pytest.approx(-5 / 20)
    assert f["phones_per_s"] == pytest.approx(3 / 40 * 100) and f["speech_share"] == pytest.approx(20 / 40)
    assert not phone_features_from_segments([("SIL", 0, 99, 0.5)]).any()  # silence only: zeros

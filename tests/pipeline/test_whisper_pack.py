"""Tests for workers.pipeline.whisper_pack: short speech pieces of several recordings share one
30-s Whisper encoding, and each recording still gets its own words, times and language.

Audio is made here (numpy, espeak-ng); see tests/pipeline/test_whisper_asr.py for which espeak
voices Whisper base hears as their language.
"""

from __future__ import annotations

import numpy as np

from tests.pipeline.test_whisper_asr import EN, ES, SR, engine, silence, words  # noqa: F401 (engine is a fixture)
from tests.pipeline.test_whisper_lang import espeak
from workers.pipeline.whisper_asr import transcribe_many
from workers.pipeline.whisper_pack import _sentences, plan

S = SR  # one second of samples

# --- pure helpers --------------------------------------------------------------------------------


def test_plan_packs_short_pieces_in_order_within_the_window() -> None:
    spans = [[(0, 8 * S)], [(0, 8 * S), (10 * S, 16 * S)], [(0, 25 * S)], [(0, 4 * S)], [(0, 9 * S)]]
    packs = plan(spans, pack_s=29.0, gap_s=1.0, piece_max_s=20.0)
    # 8 + 1 + 8 + 1 + 6 = 24 s, + 1 + 4 = 29 s: recording 3 still fits; the 25-s piece is never packed;
    # the 9-s piece alone is no pack
    assert packs == [[(0, 0), (1, 0), (1, 1), (3, 0)]]
    for pack in plan([[(0, 5 * S)] for _ in range(12)]):
        assert 2 <= len(pack) and sum(5.0 for _ in pack) + (len(pack) - 1) * 1.0 <= 29.0
    assert plan([[(0, 5 * S)]]) == []  # one piece: nothing to share


def test_sentences_cut_after_full_stops() -> None:
    ws = [{"word": w} for w in (" Hello", " there.", " How", " are", " you?", " Fine")]
    assert [[w["word"] for w in s] for s in _sentences(ws)] == [[" Hello", " there."], [" How", " are", " you?"], [" Fine"]]


# --- on the model ----------------------------------------------------------------------------------

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Seven purple elephants were dancing in the garden yesterday.",
    "Please remember to water the tomatoes before lunch.",
]


def test_short_recordings_share_one_encoding_and_keep_their_own_words(engine, monkeypatch) -> None:  # noqa: F811
    clips = [np.concatenate([silence(0.5), espeak(text), silence(0.5)]) for text in SENTENCES]
    calls = []
    real = engine.model.encode
    monkeypatch.setattr(engine.model, "encode", lambda features: calls.append(features.shape) or real(features))
    out = transcribe_many(engine, clips, language="en")
    assert len(calls) == 1, calls  # three recordings, one encoding
    own = [set(words(t)) - {"the", "to", "in", "over", "before", "were"} for t in SENTENCES]
    for k, result in enumerate(out):
        got = set(words(result["text"]))
        assert result["packed"] == 1 and result["language"] == "en"
        assert len(got & own[k]) >= len(own[k]) - 2, (k, result["text"])
        for other in (n for n in range(3) if n != k):
            assert not got & own[other], (k, result["text"])  # nothing of another recording
        stamps = [w["start_s"] for s in result["segments"] for w in s["words"]]
        assert stamps and stamps == sorted(stamps) and 0 <= stamps[0] and stamps[-1] <= result["duration_s"]
        assert all(s["language"] == "en" and s["words"] for s in result["segments"])
    alone = transcribe_many(engine, clips, language="en", pack=False)
    assert all(a["packed"] == 0 for a in alone) and len(calls) == 4  # one more encoding per recording
    for a, b in zip(alone, out, strict=True):  # the two readings agree on most words
        assert len(set(words(a["text"])) & set(words(b["text"]))) >= 0.7 * len(set(words(b["text"]))), (a["text"], b["text"])


def test_a_recording_in_another_language_leaves_the_pack(engine) -> None:  # noqa: F811
    clips = [espeak(EN), espeak(ES, "es"), espeak(SENTENCES[1])]
    out = transcribe_many(engine, clips)
    assert [o["language"] for o in out] == ["en", "es", "en"], [(o["language"], o["text"]) for o in out]
    assert {"perro", "favor", "cosas"} <= set(words(out[1]["text"])), out[1]["text"]
    assert {"quick", "brown", "fox"} <= set(words(out[0]["text"])), out[0]["text"]
    assert out[1]["packed"] == 0  # transcribed alone, in its own language
    assert out[0]["packed"] + out[2]["packed"] >= 1  # the English ones still share an encoding


def test_noise_in_a_chunk_gets_no_text_and_takes_none(engine) -> None:  # noqa: F811
    rng = np.random.default_rng(1)
    noise = (0.05 * rng.standard_normal(4 * SR)).astype(np.float32)
    out = transcribe_many(engine, [espeak(SENTENCES[0]), noise, silence(3), espeak(SENTENCES[2])], language="en")
    assert out[1]["text"] == "" and out[2]["text"] == "" and out[2]["segments"] == []
    assert {"quick", "brown", "fox"} <= set(words(out[0]["text"]))
    assert {"remember", "water", "tomatoes"} <= set(words(out[3]["text"]))

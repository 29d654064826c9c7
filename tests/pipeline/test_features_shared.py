"""What the extractors of one recording share gives the values each computed alone (old path vs new),
and the warm-up leaves a fresh process ready for its first recording."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
import torchaudio

from tests.factories import pulse_train
from workers.pipeline.features import EXTRACTORS, default_extractors, extract_features, get_extractor, shared, spectrogram_shared

SR = 16000
ROOT = Path(__file__).resolve().parents[2]


def _voice() -> np.ndarray:
    x = np.concatenate([pulse_train(f0=130, seconds=1.2, seed=1), np.zeros(4000, np.float32), pulse_train(f0=210, seconds=0.8, seed=2)])
    return x + 0.002 * np.random.default_rng(3).standard_normal(x.size).astype(np.float32)


def test_logmel_and_mfcc_on_the_shared_spectrogram_equal_the_plain_torchaudio_transforms():
    x = _voice()
    new = extract_features(x, SR, names=["logmel", "mfcc"])
    with torch.inference_mode():  # the code before the shared spectrogram, verbatim
        mel = torchaudio.transforms.MelSpectrogram(sample_rate=SR, n_fft=400, hop_length=160, f_min=0.0, f_max=None, n_mels=80)
        logmel = (10.0 * torch.log10(mel(torch.from_numpy(x)).clamp_min(1e-10))).numpy()
        mfcc = torchaudio.transforms.MFCC(sample_rate=SR, n_mfcc=13,
                                          melkwargs={"n_fft": 400, "hop_length": 160, "n_mels": 40, "f_min": 20.0, "f_max": None})
        coeffs = mfcc(torch.from_numpy(x))
        delta = torchaudio.functional.compute_deltas(coeffs, win_length=5)
        old_mfcc = torch.cat([coeffs, delta, torchaudio.functional.compute_deltas(delta, win_length=5)]).numpy()
    assert np.array_equal(new["logmel"].arrays["logmel"], logmel)  # bit for bit
    assert np.array_equal(new["mfcc"].arrays["mfcc"], old_mfcc)


def test_a_changed_setting_gets_its_own_spectrogram():
    x = _voice()
    a = get_extractor("logmel").extract(x, SR).arrays["logmel"]
    b = get_extractor("logmel", {"n_fft": 512}).extract(x, SR).arrays["logmel"]
    alone = get_extractor("logmel", {"n_fft": 512})
    shared.forget()
    assert a.shape == b.shape and not np.array_equal(a, b)
    assert np.array_equal(alone.extract(x, SR).arrays["logmel"], b)


def test_the_default_set_measures_each_quantity_once():
    """eGeMAPS has formants, jitter, shimmer and HNR: Praat's formants and voice report are opt-in."""
    assert default_extractors() == ["egemaps", "logmel", "mfcc", "prosody", "spectral"]
    assert list(extract_features(_voice(), SR)) == default_extractors()


def test_every_extractor_together_equals_each_extractor_alone():
    """The shared Sound, Pitch and spectrogram change no value (the Praat three share one pitch track)."""
    x = _voice()
    names = [n for n in EXTRACTORS if n != "compare"]
    together = extract_features(x, SR, names)
    assert list(together) == names
    for name in names:
        shared.forget()  # nothing shared: the extractor builds its own Sound, Pitch and spectrogram
        spectrogram_shared.mel_spectrogram.cache_clear()
        spectrogram_shared.mfcc.cache_clear()
        alone = get_extractor(name).extract(x, SR)
        assert together[name].summary == alone.summary, name
        assert together[name].arrays.keys() == alone.arrays.keys()
        for key, array in alone.arrays.items():
            assert np.array_equal(together[name].arrays[key], array, equal_nan=True), (name, key)


def test_the_shared_cache_never_serves_another_or_a_modified_array():
    x = _voice()
    calls = []

    def make():
        calls.append(1)
        return object()

    first = shared.cached(x, SR, ("test",), make)
    assert shared.cached(x.copy(), SR, ("test",), make) is first  # same samples, another array: same object
    y = x.copy()
    y[100] += 0.5
    assert shared.cached(y, SR, ("test",), make) is not first
    assert shared.cached(x, 8000, ("test",), make) is not first
    assert len(calls) == 3
    shared.forget("test")
    assert shared.cached(x, SR, ("test",), make) is not first
    with shared.recording(x, SR):  # the pinned array's hash is reused; any other array is still hashed
        pinned = shared.cached(x, SR, ("test",), make)
        assert shared.cached(y, SR, ("test",), make) is not pinned
    assert len(calls) == 5


def test_extract_features_keeps_nothing_of_the_recording_afterwards():
    x = _voice()
    extract_features(x, SR)
    made = []
    shared.cached(x, SR, ("praat.sound",), lambda: made.append(1))
    assert made == [1]  # the Sound was dropped with the rest when extract_features returned


_PROBE = """
import json, sys
from workers.pipeline import features
from workers.pipeline.features import opensmile_shared, spectrogram_shared

def state():
    import numba  # noqa: F401
    utils = sys.modules.get("librosa.util.utils")
    return {
        "librosa_spectrum": "librosa.core.spectrum" in sys.modules,
        "librosa_spectral": "librosa.feature.spectral" in sys.modules,
        "numba_kernels": bool(utils is not None and utils._localmax.types and utils._cabs2.types),
        "opensmile_sets": opensmile_shared._smile.cache_info().currsize,
        "torch_transforms": spectrogram_shared.mel_spectrogram.cache_info().currsize + spectrogram_shared.mfcc.cache_info().currsize,
    }

out = {"imported": state()}
ran = features.warm_up(uses_torch=False)
out["before_fork"] = {**state(), "ran": sorted(ran)}
ran = features.warm_up(uses_torch=True)
out["after_fork"] = {**state(), "ran": sorted(ran)}
print(json.dumps(out))
"""


def test_warm_up_loads_librosa_numba_and_opensmile_before_the_fork_and_torch_only_after():
    proc = subprocess.run([sys.executable, "-c", _PROBE], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    # A fresh process that only imported the registry has none of it: its first recording would pay.
    assert out["imported"] == {"librosa_spectrum": False, "librosa_spectral": False, "numba_kernels": False,
                               "opensmile_sets": 0, "torch_transforms": 0}
    torch_free = sorted(n for n in default_extractors() if n not in ("logmel", "mfcc"))
    assert out["before_fork"] == {"librosa_spectrum": True, "librosa_spectral": True, "numba_kernels": True,
                                  "opensmile_sets": 1, "torch_transforms": 0, "ran": torch_free}
    assert out["after_fork"]["ran"] == ["logmel", "mfcc"] and out["after_fork"]["torch_transforms"] == 2


def test_the_warm_up_signal_is_voiced_so_every_measure_is_computed():
    from workers.pipeline.features import warm_up_signal

    results = extract_features(warm_up_signal(SR), SR, [*default_extractors(), "formants", "voice_quality"])
    assert abs(results["prosody"].summary["f0_mean_hz"] - 120.0) < 2.0
    assert all(v is not None for v in results["voice_quality"].summary.values())
    assert results["formants"].summary["voiced_frames"] > 50

"""The torch Whisper encoder against CTranslate2's own, on the bundled model (offline)."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from models.whisper_encoder import WhisperModelError, check_model_dir, load_encoder, read_ct2_variables
from models.whisper_probe import candidate_model_dirs

ROOT = Path(__file__).resolve().parents[2]
BUNDLED = ROOT / "var" / "models" / "whisper-base"


@pytest.fixture(scope="module")
def model_dir() -> Path:
    if not (BUNDLED / "model.bin").exists():
        pytest.fail("the bundled Whisper model is missing: run `make setup` (scripts/whisper_model.py)")
    return BUNDLED


def _speech(text: str, voice: str = "en-us") -> np.ndarray:
    import librosa
    import soundfile as sf

    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng not installed")
    subprocess.run(["espeak-ng", "-v", voice, "-w", "/tmp/accentsite-whisper-test.wav", text], check=True, capture_output=True)
    x, sr = sf.read("/tmp/accentsite-whisper-test.wav", dtype="float32")
    return librosa.resample(x, orig_sr=sr, target_sr=16000)


def test_ct2_reader_finds_every_encoder_tensor(model_dir):
    variables, header = read_ct2_variables(model_dir / "model.bin")
    assert header["spec"] == "WhisperSpec"
    assert variables["conv1/weight"].shape == (512, 80, 3)
    assert sum(name.endswith("self_attention/linear_0/weight") for name in variables) == 6
    assert variables["position_encodings/encodings"].shape == (1500, 512)


def test_log_mel_matches_faster_whisper(model_dir):
    from faster_whisper.feature_extractor import FeatureExtractor

    enc, _ = load_encoder(model_dir)
    x = np.zeros(480000, dtype=np.float32)
    speech = _speech("Please call Stella and ask her to bring these things.")
    x[: len(speech)] = speech
    ours = enc.mel(torch.from_numpy(x)[None])[0].numpy()
    theirs = FeatureExtractor(feature_size=80)(x, padding=0)[:, :3000]
    assert ours.shape == theirs.shape == (80, 3000)
    assert np.abs(ours - theirs).max() < 1e-3


def test_encoder_matches_ctranslate2_within_fp16_tolerance(model_dir):
    import ctranslate2
    from faster_whisper.feature_extractor import FeatureExtractor

    enc, _ = load_encoder(model_dir)
    x = np.zeros(480000, dtype=np.float32)
    speech = _speech("The quick brown fox jumps over the lazy dog.")
    x[: len(speech)] = speech
    mel = FeatureExtractor(feature_size=80)(x, padding=0)[:, :3000].astype(np.float32)
    ct2 = ctranslate2.models.Whisper(str(model_dir), device="cpu", compute_type="float32", intra_threads=1)
    theirs = np.array(ct2.encode(ctranslate2.StorageView.from_array(mel[None])))[0]
    with torch.inference_mode():
        states = enc.encode_mel(torch.from_numpy(mel)[None])
    ours = states[-1][0].numpy()
    assert len(states) == enc.n_layers + 1 == 7
    # weights are fp16 in model.bin; both run fp32: agreement to ~1e-3 of the output's scale
    assert np.abs(ours - theirs).max() < 2e-3 * np.abs(theirs).max()
    cos = (ours * theirs).sum(-1) / (np.linalg.norm(ours, axis=-1) * np.linalg.norm(theirs, axis=-1))
    assert cos.min() > 0.9999


def test_unpadded_windows_and_masking(model_dir):
    """A short window needs no 30-s padding, and zero padding in a batch does not change its states."""
    enc, _ = load_encoder(model_dir)
    speech = _speech("Hello there, how are you today?")[: 3 * 16000]
    alone = torch.from_numpy(np.ascontiguousarray(speech))[None]
    padded = torch.zeros(1, 5 * 16000)
    padded[0, : alone.shape[1]] = alone[0]
    with torch.inference_mode():
        s1, m1 = enc.hidden_states(alone, torch.tensor([alone.shape[1]]))
        s2, m2 = enc.hidden_states(padded, torch.tensor([alone.shape[1]]))
    n = int(m1[0].sum())
    assert s1[0].shape[1] == (alone.shape[1] // 160 + 1) // 2  # 50 positions per second, not 1500
    for a, b in zip(s1, s2, strict=True):
        assert torch.allclose(a[0, :n], b[0, :n], atol=2e-3, rtol=1e-3)


def test_missing_or_corrupt_model_is_a_clear_error(tmp_path, model_dir):
    with pytest.raises(WhisperModelError, match="does not exist"):
        check_model_dir(tmp_path / "nowhere")
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "model.bin").write_bytes(b"not a model")
    with pytest.raises(WhisperModelError, match="lacks config.json"):
        check_model_dir(tmp_path / "m")
    for name in ("config.json", "tokenizer.json"):
        shutil.copy(model_dir / name, tmp_path / "m" / name)
    with pytest.raises(WhisperModelError, match="sha256"):
        check_model_dir(tmp_path / "m", expected_sha256="0" * 64)


def test_setting_points_at_another_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("WHISPER_MODEL_DIR", str(tmp_path / "mine"))
    assert candidate_model_dirs()[0] == tmp_path / "mine"

"""Forward shapes, checkpoint round trips and the resemblyzer frontend match for every family."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from models.checkpoint import LoadedModel, build_model, load_checkpoint, load_speaker_encoder, save_checkpoint
from models.specs import ModelSpec

SR = 16000

TINY = {
    "cnn": {"channels": 4, "embedding_dim": 16, "n_mels": 32},
    "resnet": {"base_channels": 4, "embedding_dim": 16, "n_mels": 32},
    "speaker_head": {"hidden": 16},
    "accent_embed": {"d_model": 32, "n_layers": 1, "n_heads": 2, "n_mels": 32, "n_mfcc": 13},
}


def _spec(family: str, window_s: float = 1.0) -> ModelSpec:
    task = "embed" if family == "accent_embed" else "classify"
    return ModelSpec(name=f"t-{family}", version="0", family=family, task=task, labels=("a", "b", "c"),
                     window_s=window_s, hop_s=window_s / 2, embedding_dim=32 if family == "accent_embed" else None)


def _windows(n: int = 2, seconds: float = 1.0, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    out = [0.3 * np.sin(2 * np.pi * (120 + 40 * k) * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))
           + 0.01 * rng.standard_normal(len(t)) for k in range(n)]
    return np.stack(out).astype(np.float32)


def test_spec_round_trip() -> None:
    spec = _spec("cnn")
    assert ModelSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(ValueError):
        ModelSpec(name="x", version="0", family="nope", task="classify", labels=("a", "b"))


@pytest.mark.parametrize("family", ["cnn", "resnet", "speaker_head", "accent_embed"])
def test_forward_shapes(family: str) -> None:
    torch.manual_seed(0)
    spec = _spec(family)
    model = build_model(spec, TINY[family]).eval()
    loaded = LoadedModel(model=model, spec=spec)
    inputs = loaded.prepare(_windows(2))
    with torch.no_grad():
        logits = loaded.logits(inputs) if spec.task == "classify" else model(inputs)
        emb = loaded.embed(inputs)
    assert logits.shape == (2, 3)
    assert emb.shape[0] == 2 and emb.ndim == 2
    assert torch.allclose(emb.norm(dim=1), torch.ones(2), atol=1e-4)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("family", ["cnn", "speaker_head", "accent_embed"])
def test_checkpoint_round_trip(family: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    spec = _spec(family)
    model = build_model(spec, TINY[family]).eval()
    cal = {"temperature": 1.5, "train_prior": [1 / 3] * 3, "deploy_prior": None, "threshold": 0.6}
    sha = save_checkpoint(tmp_path / "m.pt", model=model, spec=spec, calibration=cal, hparams=TINY[family],
                          metrics={"x": np.float32(1.0)}, training_data={"n": 3})
    loaded = load_checkpoint(tmp_path / "m.pt")
    assert loaded.sha256 == sha and loaded.spec == spec and loaded.calibration == cal
    assert (tmp_path / "m.json").exists()
    x = _windows(2)
    with torch.no_grad():
        ref = model(LoadedModel(model=model, spec=spec).prepare(x))
        got = loaded.model(loaded.prepare(x))
    torch.testing.assert_close(ref, got)


def test_resemblyzer_frontend_and_embedding_match() -> None:
    from resemblyzer import VoiceEncoder, audio

    from models.speaker_head import GE2EEncoder

    wav = _windows(1, seconds=1.59)[0] + 0.05 * np.random.default_rng(1).standard_normal(25440).astype(np.float32)
    ref_mel = audio.wav_to_mel_spectrogram(wav)
    enc = GE2EEncoder(normalise_volume=False)
    enc.load_pretrained()
    enc.eval()
    mel = enc.frontend(torch.from_numpy(wav)[None])[0].numpy()
    assert mel.shape == ref_mel.shape
    np.testing.assert_allclose(mel, ref_mel, rtol=1e-3, atol=1e-5 * float(ref_mel.max()))
    ve = VoiceEncoder("cpu", verbose=False)
    with torch.no_grad():
        ref = ve(torch.from_numpy(ref_mel)[None])[0].numpy()
        got = enc(torch.from_numpy(wav)[None])[0].numpy()
    assert float(ref @ got) > 1 - 1e-3


def test_load_speaker_encoder() -> None:
    loaded = load_speaker_encoder()
    assert loaded.spec.task == "embed" and loaded.spec.embedding_dim == 256 and len(loaded.sha256) == 64
    with torch.no_grad():
        e = loaded.embed(loaded.prepare(_windows(3, seconds=1.6)))
    assert e.shape == (3, 256)


def test_logits_refused_for_pure_embedding_model() -> None:
    loaded = load_speaker_encoder()
    with pytest.raises(TypeError):
        loaded.logits(loaded.prepare(_windows(1)))


def test_frame_features_shape() -> None:
    from models.accent_embed import N_FRAME_FEATURES, frame_features

    x = _windows(1, seconds=1.0)[0]
    f = frame_features(x)
    assert f.shape == (len(x) // 160 + 1, N_FRAME_FEATURES)
    assert np.isfinite(f).all() and f[:, 1].mean() > 0.5  # a harmonic tone is voiced


def test_speaker_head_ensemble_and_single_head_checkpoints(tmp_path: Path) -> None:
    """``n_heads`` > 1 averages independent heads; a 1-head state dict (1.0 layout) still loads."""
    from models.speaker_head import SpeakerHeadClassifier

    torch.manual_seed(0)
    model = SpeakerHeadClassifier(3, hidden=16, n_heads=3).eval()
    feats = torch.randn(4, model.feature_dim)
    with torch.no_grad():
        per_head = model.head_all(feats)
        assert per_head.shape == (3, 4, 3)
        torch.testing.assert_close(model.head(feats), per_head.mean(dim=0))
    spec = _spec("speaker_head")
    sha = save_checkpoint(tmp_path / "e.pt", model=model, spec=spec, calibration={}, hparams={"hidden": 16, "n_heads": 3},
                          metrics={}, training_data={})
    loaded = load_checkpoint(tmp_path / "e.pt")
    assert loaded.sha256 == sha and loaded.model.n_heads == 3
    single = SpeakerHeadClassifier(3, hidden=16)
    assert not any(k.startswith("extra_heads") for k in single.state_dict())


@pytest.mark.parametrize("family", ["cnn", "resnet"])
def test_folding_batchnorm_keeps_the_outputs(family: str, tmp_path: Path) -> None:
    """load_checkpoint folds every conv -> batch norm pair (models/fold.py); with batch-norm
    statistics that are far from the identity, the outputs stay the same."""
    from torch import nn

    torch.manual_seed(1)
    spec = _spec(family)
    model = build_model(spec, TINY[family])
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.3, 3.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.3, 0.3)
    model.eval()
    save_checkpoint(tmp_path / "f.pt", model=model, spec=spec, calibration={}, hparams=TINY[family])
    loaded = load_checkpoint(tmp_path / "f.pt")
    assert not any(isinstance(m, nn.BatchNorm2d) for m in loaded.model.modules())
    x = _windows(3)
    with torch.no_grad():
        ref = model(LoadedModel(model=model, spec=spec).prepare(x))
        got = loaded.model(loaded.prepare(x))
    torch.testing.assert_close(ref, got, rtol=1e-4, atol=1e-4)
    from models.fold import fold_batchnorm

    with pytest.raises(ValueError):
        fold_batchnorm(build_model(spec, TINY[family]).train())


def test_phonetic_fusion_layer_reproduces_the_fitted_logistic_regression() -> None:
    """set_fusion installs a scikit-learn pipeline (scaler + binary logistic regression) so that
    fuse() gives the pipeline's predict_proba, from [log window mean, features]."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from models.phonetic_fusion import PhoneticFusion

    rng = np.random.default_rng(0)
    p = rng.dirichlet([2, 2], size=60)
    feats = rng.normal(size=(60, 3)) * [1.0, 10.0, 0.1] + [0.0, 5.0, -1.0]
    y = (p[:, 1] + 0.1 * feats[:, 0] > 0.5).astype(int)
    fused = PhoneticFusion(torch.nn.Identity(), n_classes=2, n_features=3)
    x = fused.fusion_inputs(p, feats)
    assert np.allclose(x[:, :2], np.log(p)) and np.allclose(x[:, 2:], feats)
    lr = make_pipeline(StandardScaler(), LogisticRegression(C=1.0)).fit(x, y)
    fused.set_fusion(lr[0].mean_, lr[0].scale_, lr[1].coef_, lr[1].intercept_)
    assert np.allclose(fused.fuse(p, feats), lr.predict_proba(x), atol=1e-5)
    # one hand-computed case: logit = w . (x - mean) / scale + b, p(class 1) = sigmoid(logit)
    z = (x[0] - lr[0].mean_) / lr[0].scale_
    p1 = 1 / (1 + np.exp(-(z @ lr[1].coef_[0] + lr[1].intercept_[0])))
    assert fused.fuse(p[:1], feats[:1])[0, 1] == pytest.approx(p1, abs=1e-5)

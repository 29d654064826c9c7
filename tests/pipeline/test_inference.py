"""Tests for workers.pipeline.inference with a tiny torch model (CPU, a few seconds)."""

from __future__ import annotations

import io
import shutil
import subprocess
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from workers.pipeline.inference import (
    ClassifyOutcome,
    EmbedOutcome,
    classify_batch,
    embed_batch,
    is_oom_error,
    window_spans,
)

SR = 16000
LABELS = ("native_english", "mandarin_l1", "other_l1")


@dataclass(frozen=True)
class Spec:
    """The ModelSpec fields inference uses."""

    labels: tuple[str, ...] = LABELS
    sample_rate: int = SR
    window_s: float = 1.0
    hop_s: float = 0.5
    task: str = "classify"
    name: str = "tiny"


class TinyNet(nn.Module):
    """Waveform ``[b, t]`` -> logits ``[b, C]`` via a strided conv and mean pooling."""

    def __init__(self, n_classes: int = 3, dim: int = 8, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.conv = nn.Conv1d(1, 4, kernel_size=400, stride=160)
        self.proj = nn.Linear(4, dim)
        self.head = nn.Linear(dim, n_classes)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.conv(x[:, None, :] * 10.0))  # [b, 4, frames]
        return self.proj(h.mean(dim=2))  # [b, dim]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(self.features(x), dim=1)


@dataclass
class FakeLoaded:
    """LoadedModel-shaped stand-in (models.checkpoint.LoadedModel has the same surface)."""

    model: nn.Module
    spec: Spec = field(default_factory=Spec)
    calibration: dict[str, Any] = field(default_factory=lambda: {"temperature": 1.0, "threshold": 0.0})
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    calls: list[int] = field(default_factory=list)

    def prepare(self, windows: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(windows, dtype=np.float32)).to(self.device)

    def logits(self, inputs: torch.Tensor) -> torch.Tensor:
        self.calls.append(int(inputs.shape[0]))
        return self.model(inputs)

    def embed(self, inputs: torch.Tensor) -> torch.Tensor:
        self.calls.append(int(inputs.shape[0]))
        return self.model.embed(inputs)


class OOMLoaded(FakeLoaded):
    """Raises an out-of-memory error whenever a batch is larger than ``limit``."""

    limit: int = 3
    error: type[BaseException] | None = None

    def logits(self, inputs: torch.Tensor) -> torch.Tensor:
        if inputs.shape[0] > self.limit:
            if self.error is torch.cuda.OutOfMemoryError:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
            raise RuntimeError("CUDA error: out of memory")
        return super().logits(inputs)


def noise_signals(seed: int = 0, lengths_s: tuple[float, ...] = (3.3, 0.6, 2.0, 5.1)) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [(0.1 * rng.standard_normal(int(s * SR))).astype(np.float32) for s in lengths_s]


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    """~4 s of espeak-ng speech at 16 kHz, ``[time]`` float32 (skips without espeak-ng)."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng not installed")
    import soundfile as sf
    from scipy.signal import resample_poly

    text = "Please call Stella. Ask her to bring these things with her from the store."
    wav = subprocess.run(["espeak-ng", "-v", "en-us", "--stdout", text], check=True, capture_output=True).stdout
    x, sr = sf.read(io.BytesIO(wav), dtype="float32")
    from math import gcd

    g = gcd(SR, sr)
    return resample_poly(x, SR // g, sr // g).astype(np.float32)


@pytest.fixture()
def loaded() -> FakeLoaded:
    torch.manual_seed(0)
    return FakeLoaded(model=TinyNet().eval())


# ----------------------------------------------------------------------------------------------


def test_window_spans() -> None:
    np.testing.assert_array_equal(window_spans(10 * SR, SR, 4.0, 2.0) / SR, [[0, 4], [2, 6], [4, 8], [6, 10]])
    # 9.5 s: the uncovered 1.5 s tail gets one extra window aligned to the end (no padding)
    np.testing.assert_array_equal(window_spans(int(9.5 * SR), SR, 4.0, 2.0) / SR, [[0, 4], [2, 6], [4, 8], [5.5, 9.5]])
    np.testing.assert_array_equal(window_spans(int(8.5 * SR), SR, 4.0, 2.0) / SR, [[0, 4], [2, 6], [4, 8], [4.5, 8.5]])
    # shorter than a window: one (to be padded) window over the real audio
    np.testing.assert_array_equal(window_spans(2 * SR, SR, 4.0, 2.0), [[0, 2 * SR]])
    assert window_spans(0, SR, 4.0, 2.0).shape == (0, 2)
    # hop larger than the window leaves gaps
    np.testing.assert_array_equal(window_spans(10 * SR, SR, 1.0, 3.0) / SR, [[0, 1], [3, 4], [6, 7], [9, 10]])
    with pytest.raises(ValueError):
        window_spans(100, SR, 0.0, 1.0)


def test_window_spans_match_training_windows() -> None:
    """Inference windows are the trainer's windows, so training-time evaluation matches serving."""
    data = pytest.importorskip("workers.pipeline.data")
    for n in (1, 999, 16000, 16001, 40000, 64000, 64001, 100_000, 151_234):
        for win, hop in ((16000, 8000), (64000, 32000), (25600, 12800)):
            spans = window_spans(n, SR, win / SR, hop / SR)
            assert spans[:, 0].tolist() == data.window_starts(n, win, hop)


def test_classify_shapes_keys_and_time_spans(loaded: FakeLoaded) -> None:
    signals = noise_signals()
    out = classify_batch(loaded, signals, vad=False)
    assert len(out) == len(signals)
    keys = {
        "outcome",
        "predicted_class",
        "confidence",
        "probabilities",
        "probabilities_raw",
        "window_share",
        "agreement",
        "windows",
        "n_windows",
        "speech_fraction",
        "timings",
    }
    for x, res in zip(signals, out, strict=True):
        assert keys <= set(res.as_dict())
        assert res.outcome in ("ok", "uncertain")
        assert res.predicted_class in LABELS
        assert set(res.probabilities) == set(LABELS)
        assert sum(res.probabilities.values()) == pytest.approx(1.0)
        assert sum(res.window_share.values()) == pytest.approx(1.0)
        assert res.confidence == pytest.approx(max(res.probabilities.values()))
        assert res.agreement == pytest.approx(res.window_share[res.predicted_class])
        spans = window_spans(len(x), SR, 1.0, 0.5) / SR
        assert res.n_windows == len(spans) == len(res.windows)
        np.testing.assert_allclose([[w["start_s"], w["end_s"]] for w in res.windows], spans)
        mean = np.mean([[w["probabilities"][lab] for lab in LABELS] for w in res.windows], axis=0)
        np.testing.assert_allclose([res.probabilities[lab] for lab in LABELS], mean, atol=1e-9)
        assert set(res.timings) >= {"windowing", "vad", "forward", "aggregate"}
        assert res.speech_fraction is None
    # the 0.6 s signal is one padded window over its real 0.6 s
    assert out[1].windows == [{"start_s": 0.0, "end_s": 0.6, "probabilities": out[1].windows[0]["probabilities"]}]
    # all windows of all signals were packed into one batch
    assert loaded.calls == [sum(r.n_windows for r in out)]
    import json

    json.dumps([r.as_dict() for r in out], allow_nan=False)


def test_outcomes_are_typed_with_one_set_of_api_keys(loaded: FakeLoaded) -> None:
    """classify_batch returns ClassifyOutcome: as_dict() is the old dict, api_dict() the API's keys,
    and the deprecated mapping bridge reads the same values."""
    import dataclasses

    (res,) = classify_batch(loaded, noise_signals(lengths_s=(2.0,)), vad=False)
    assert isinstance(res, ClassifyOutcome)
    with pytest.raises(dataclasses.FrozenInstanceError):
        res.outcome = "ok"  # type: ignore[misc]
    plain = res.as_dict()
    assert "reading" not in plain and "fused" not in plain and res.fused is None  # not a reading model
    assert res["probabilities"] is res.probabilities and res.get("nope", 1) == 1 and "fused" not in res
    with pytest.raises(KeyError):
        res["reading"]
    api = res.api_dict()
    assert set(api) == {"outcome", "predicted_class", "confidence", "probabilities", "probabilities_raw",
                        "window_share", "agreement", "speech_fraction", "windows", "reading"}
    assert api["probabilities"] == res.probabilities and api["reading"] is None
    none = ClassifyOutcome(outcome="insufficient_speech").api_dict()
    assert none["probabilities"] == {} and none["windows"] == [] and none["predicted_class"] is None
    read = ClassifyOutcome(outcome="ok", reading={"words_read": 3}, fused=True)
    assert read.api_dict()["reading"] == {"words_read": 3, "fused": True} and read.as_dict()["fused"] is True
    (emb,) = embed_batch(loaded, noise_signals(lengths_s=(2.0,)))
    assert isinstance(emb, EmbedOutcome) and set(emb.as_dict()) == {"vector", "n_windows", "duration_s", "timings"}


def test_insufficient_speech_on_silence(loaded: FakeLoaded) -> None:
    out = classify_batch(loaded, [np.zeros(3 * SR, dtype=np.float32), np.zeros(0, dtype=np.float32)])
    for res in out:
        assert res.outcome == "insufficient_speech"
        assert res.predicted_class is None and res.probabilities is None
        assert res.windows == [] and res.n_windows == 0
    assert out[0].speech_fraction == 0.0
    assert loaded.calls == []  # nothing was forwarded


def test_vad_gate_keeps_speech_windows(loaded: FakeLoaded, speech: np.ndarray) -> None:
    silence = np.zeros(2 * SR, dtype=np.float32)
    x = np.concatenate([silence, speech, silence])
    res, short = classify_batch(loaded, [x, speech[: int(0.6 * SR)]], min_speech_s=1.0)
    assert res.outcome in ("ok", "uncertain")
    assert 0 < res.n_windows < res.n_windows_total
    assert 0.2 < res.speech_fraction < 0.9
    # windows entirely inside the leading silence were dropped
    assert min(w["start_s"] for w in res.windows) >= 1.0
    assert short.outcome == "insufficient_speech"  # under min_speech_s
    # the gate is per recording: with a lower bar the short one is classified
    _, short2 = classify_batch(loaded, [x, speech[: int(0.6 * SR)]], min_speech_s=0.3)
    assert short2.outcome in ("ok", "uncertain")


def test_uncertain_with_high_threshold() -> None:
    net = TinyNet()
    with torch.no_grad():
        net.head.weight.zero_()
        net.head.bias.zero_()  # uniform output: confidence 1/3
    unsure = FakeLoaded(model=net.eval(), calibration={"temperature": 1.0, "threshold": 0.2})
    signals = noise_signals(lengths_s=(2.0,))
    assert classify_batch(unsure, signals, vad=False)[0].outcome == "ok"  # calibration threshold 0.2
    res = classify_batch(unsure, signals, vad=False, threshold=0.99)[0]
    assert res.outcome == "uncertain" and res.threshold == 0.99
    assert res.confidence == pytest.approx(1 / 3)
    assert res.predicted_class is not None  # still reported


def test_calibration_is_applied_per_window(loaded: FakeLoaded) -> None:
    signals = noise_signals(lengths_s=(3.0,))
    base = classify_batch(loaded, signals, vad=False)[0]
    loaded.calibration = {"temperature": 1000.0, "threshold": 0.0}
    hot = classify_batch(loaded, signals, vad=False)[0]
    assert hot.probabilities_raw == pytest.approx(base.probabilities_raw)
    assert max(hot.probabilities.values()) < 1 / 3 + 0.01  # flattened
    loaded.calibration = {"temperature": 1.0, "train_prior": [1 / 3] * 3, "deploy_prior": [0.98, 0.01, 0.01]}
    shifted = classify_batch(loaded, signals, vad=False)[0]
    assert shifted.probabilities["native_english"] > base.probabilities["native_english"]


def test_a_model_trained_at_a_level_hears_every_recording_at_that_level(loaded: FakeLoaded) -> None:
    """A whisper_probe's trainer normalised each recording to -25 dBFS RMS; serving does the same, so
    a recording 30 dB quieter (or with a DC offset) gets the answer of the original."""
    signals = noise_signals(seed=4, lengths_s=(3.0, 2.2))
    quiet = [0.03 * x + 0.01 for x in signals]
    as_is = classify_batch(loaded, signals, vad=False), classify_batch(loaded, quiet, vad=False)
    assert as_is[0][0].probabilities_raw != pytest.approx(as_is[1][0].probabilities_raw, abs=1e-3)  # TinyNet hears level
    loaded.model.input_level_dbfs = -25.0
    for a, b in zip(classify_batch(loaded, signals, vad=False), classify_batch(loaded, quiet, vad=False), strict=True):
        assert a.probabilities_raw == pytest.approx(b.probabilities_raw, abs=1e-4)
    a, b = embed_batch(loaded, signals[:1]), embed_batch(loaded, quiet[:1])
    assert a[0].vector == pytest.approx(b[0].vector, abs=1e-4)


def test_shipped_whisper_probes_declare_the_level_their_trainer_used() -> None:
    import json
    from pathlib import Path

    from models.specs import ModelSpec
    from models.whisper_probe import trained_level_dbfs

    root = Path(__file__).resolve().parents[2] / "models" / "checkpoints"
    for name in ("accent-native", "accent-native-2.1.0", "accent-group", "accent-embed"):
        spec = json.loads((root / f"{name}.json").read_text())["spec"]
        assert spec["family"] == "whisper_probe" and trained_level_dbfs(ModelSpec(**spec)) == -25.0, name
    plain = {"name": "x", "version": "1", "family": "whisper_probe", "task": "classify", "labels": ("a", "b")}
    assert trained_level_dbfs(ModelSpec(**plain, extra={"normalisation": "none"})) is None


def test_batching_invariance(loaded: FakeLoaded) -> None:
    signals = noise_signals(seed=1)
    one = classify_batch(loaded, signals, vad=False, batch_size=1)
    many = classify_batch(loaded, signals, vad=False, batch_size=64)
    three = classify_batch(loaded, signals, vad=False, batch_size=3)
    for a, b, c in zip(one, many, three, strict=True):
        for lab in LABELS:
            assert a.probabilities[lab] == pytest.approx(b.probabilities[lab], abs=1e-5)
            assert c.probabilities[lab] == pytest.approx(b.probabilities[lab], abs=1e-5)
        assert [w["start_s"] for w in a.windows] == [w["start_s"] for w in b.windows]


@pytest.mark.parametrize("error", [torch.cuda.OutOfMemoryError, RuntimeError])
def test_oom_halves_batch_and_gives_same_results(error: type[BaseException]) -> None:
    signals = noise_signals(seed=2)
    ref_model = FakeLoaded(model=TinyNet().eval())
    reference = classify_batch(ref_model, signals, vad=False, batch_size=64)
    oom = OOMLoaded(model=TinyNet().eval())
    oom.limit, oom.error = 3, error
    seen: list[tuple[int, int]] = []
    got = classify_batch(oom, signals, vad=False, batch_size=64, progress=lambda d, t: seen.append((d, t)))
    assert max(oom.calls) <= 3 and max(oom.calls) == 2  # 64 -> 32 -> ... -> 2
    for a, b in zip(reference, got, strict=True):
        for lab in LABELS:
            assert a.probabilities[lab] == pytest.approx(b.probabilities[lab], abs=1e-5)
    total = sum(r.n_windows for r in reference)
    assert seen[-1] == (total, total) and sum(oom.calls) == total


def test_oom_at_batch_one_and_other_errors_propagate() -> None:
    oom = OOMLoaded(model=TinyNet().eval())
    oom.limit, oom.error = 0, RuntimeError
    with pytest.raises(RuntimeError, match="out of memory"):
        classify_batch(oom, noise_signals(lengths_s=(2.0,)), vad=False)

    class Broken(FakeLoaded):
        def logits(self, inputs: torch.Tensor) -> torch.Tensor:
            raise RuntimeError("shape mismatch")

    with pytest.raises(RuntimeError, match="shape mismatch"):
        classify_batch(Broken(model=TinyNet()), noise_signals(lengths_s=(2.0,)), vad=False)
    assert is_oom_error(torch.cuda.OutOfMemoryError("x")) and not is_oom_error(ValueError("out of memory"))


def test_bf16_autocast_on_cpu_close(loaded: FakeLoaded) -> None:
    signals = noise_signals(seed=3, lengths_s=(2.0, 1.5))
    fp32 = classify_batch(loaded, signals, vad=False)
    bf16 = classify_batch(loaded, signals, vad=False, autocast=True)
    for a, b in zip(fp32, bf16, strict=True):
        for lab in LABELS:
            assert a.probabilities[lab] == pytest.approx(b.probabilities[lab], abs=0.05)


def test_embed_batch(loaded: FakeLoaded) -> None:
    signals = noise_signals(seed=4)
    out = embed_batch(loaded, signals, per_window=True, batch_size=5)
    for x, res in zip(signals, out, strict=True):
        v = np.asarray(res.vector)
        assert v.shape == (8,)
        assert np.linalg.norm(v) == pytest.approx(1.0)
        assert res.n_windows == len(res.windows) == len(window_spans(len(x), SR, 1.0, 0.5))
        mean = np.mean([w["vector"] for w in res.windows], axis=0)
        np.testing.assert_allclose(v, mean / np.linalg.norm(mean), atol=1e-6)
    again = embed_batch(loaded, signals, batch_size=1)
    for a, b in zip(out, again, strict=True):
        np.testing.assert_allclose(a.vector, b.vector, atol=1e-5)
        assert b.windows is None and "windows" not in b.as_dict()
    empty = embed_batch(loaded, [np.zeros(0, dtype=np.float32)])[0]
    assert empty.vector is None and empty.n_windows == 0


def test_real_loaded_model_surface() -> None:
    """The real LoadedModel works with classify_batch (skipped until models.checkpoint exists)."""
    checkpoint = pytest.importorskip("models.checkpoint")
    specs = pytest.importorskip("models.specs")
    spec = specs.ModelSpec(name="tiny", version="0", family="cnn", task="classify", labels=LABELS, window_s=1.0, hop_s=0.5)
    real = checkpoint.LoadedModel(model=TinyNet().eval(), spec=spec, calibration={"temperature": 1.0, "threshold": 0.5})
    fake = FakeLoaded(model=real.model)
    signals = noise_signals(seed=5, lengths_s=(2.2, 0.4))
    a = classify_batch(real, signals, vad=False)
    b = classify_batch(fake, signals, vad=False)
    for ra, rb in zip(a, b, strict=True):
        assert ra.probabilities == pytest.approx(rb.probabilities)
    vec = embed_batch(real, signals)[0].vector
    assert len(vec) == 8

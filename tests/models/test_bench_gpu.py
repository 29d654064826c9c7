"""bench/gpu.py: the bundle a GPU machine carries rebuilds the service's own feature path."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from bench import gpu
from models.checkpoint import load_checkpoint
from models.whisper_encoder import WhisperModelError
from models.whisper_probe import find_encoder_dir

CHECKPOINT = gpu.ROOT / "models" / "checkpoints" / "accent-native.pt"


@pytest.fixture(scope="module")
def bundle_path(tmp_path_factory):
    try:
        find_encoder_dir(load_checkpoint(CHECKPOINT).model.encoder_sha256)
    except WhisperModelError as exc:
        pytest.skip(f"bundled Whisper model not assembled: {exc}")
    return gpu.export(None, str(CHECKPOINT), str(tmp_path_factory.mktemp("gpu") / "bundle.pt"))


def test_the_bundle_fits_the_carry_limit_and_matches_the_service_features(bundle_path):
    assert bundle_path.stat().st_size < 48 * 2**20  # the tracked tree (~14 MB) travels beside it: 64 MiB in all
    bundle = torch.load(bundle_path, map_location="cpu", weights_only=False)
    enc, band = gpu.build(bundle, "cpu")
    loaded = load_checkpoint(CHECKPOINT)
    probe = loaded.model
    probe.attach_encoder()
    wave = torch.from_numpy((0.1 * np.random.default_rng(1).standard_normal((2, 64000))).astype(np.float32))
    ours = gpu.features(enc, band, wave, bf16=False)
    theirs = probe.pooled_states({"wave": wave})  # [n, states, (mean, std), d]
    assert ours.shape == theirs.shape
    assert torch.allclose(ours, theirs, atol=2e-3, rtol=1e-3)
    # the head applied to the carried features gives the probe's own logits
    assert torch.allclose(gpu.head_logits(bundle, ours), probe(probe.prepare_inputs(wave.numpy(), "cpu")), atol=1e-2)


def test_the_prepared_run_writes_its_table_on_a_cpu(bundle_path, tmp_path):
    out = tmp_path / "gpu.md"
    text = gpu.run(str(bundle_path), "cpu", [1, 2], 2, str(out))
    rows = [line for line in text.splitlines() if line.startswith("| fp32 |") or line.startswith("| bf16 |")]
    assert len(rows) == 4 and out.read_text().strip() == text.strip()
    assert "head decides the same on" in text

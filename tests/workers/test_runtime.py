"""Worker runtime choices: inference windows."""
from types import SimpleNamespace

from workers import runtime


def test_window_params_default_to_touching_windows_and_respect_the_job(settings):
    loaded = SimpleNamespace(spec=SimpleNamespace(window_s=2.0, hop_s=1.0))
    settings.INFERENCE_OVERLAP = 0.0
    assert runtime.window_params(loaded) == {"window_s": 2.0, "hop_s": 2.0}
    settings.INFERENCE_OVERLAP = 0.5
    assert runtime.window_params(loaded) == {"window_s": 2.0, "hop_s": 1.0}
    assert runtime.window_params(loaded, {"window_s": 3.0, "hop_s": 0.5, "threshold": 0.8}) == {"window_s": 3.0, "hop_s": 0.5}
    assert runtime.window_params(loaded, {"window_s": 4.0}) == {"window_s": 4.0, "hop_s": 2.0}


def test_batch_size_follows_the_family_on_cpu_and_the_setting_wins(settings):
    def loaded(family, device="cpu"):
        return SimpleNamespace(device=device, spec=SimpleNamespace(family=family))

    settings.WORKER_BATCH_SIZE = 0
    settings.WORKER_AUTOCAST = "off"  # fp32: big batches for every family
    assert runtime.default_batch_size(loaded("resnet")) == runtime.default_batch_size(loaded("cnn")) == 16
    settings.WORKER_AUTOCAST = "bf16"  # bf16: conv nets in small batches
    assert runtime.default_batch_size(loaded("resnet")) == runtime.default_batch_size(loaded("cnn")) == 2
    assert runtime.default_batch_size(loaded("speaker_head")) == runtime.default_batch_size(loaded("accent_embed")) == 16
    assert runtime.default_batch_size(loaded("resnet", "cuda:0")) == 64
    settings.WORKER_BATCH_SIZE = 8
    assert runtime.default_batch_size(loaded("resnet")) == 8

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

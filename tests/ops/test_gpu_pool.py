"""The gpu worker runs prefork with one child: its parent must not initialise CUDA before forking."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")


def test_the_parent_heartbeat_never_initialises_cuda(monkeypatch, settings):
    """``worker_ready`` runs in the prefork parent: it may count GPUs (NVML), never start CUDA."""
    from recognition import ops

    def refuse(*args, **kwargs):
        raise AssertionError("CUDA initialised in the prefork parent")

    monkeypatch.setattr(torch.cuda, "_lazy_init", refuse)
    monkeypatch.setattr(torch.cuda, "init", refuse)
    monkeypatch.setattr(torch.cuda, "mem_get_info", refuse)
    monkeypatch.setattr(torch.cuda, "get_device_properties", refuse)
    settings.WORKER_DEVICE = "cuda"
    info = ops.device_info(solo=False)
    assert info["device"] == "cuda" and "gpus" in info
    settings.WORKER_DEVICE = "auto"
    assert ops.device_info(solo=False)["device"] in ("cpu", "cuda (in each child)")


def test_no_time_limit_timer_of_our_own_remains():
    """Celery's prefork pool enforces soft and hard limits; the tasks carry no SIGALRM timer."""
    import inspect

    from workers import tasks

    assert "SIGALRM" not in inspect.getsource(tasks) and not hasattr(tasks, "_solo_soft_time_limit")

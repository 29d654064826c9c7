"""A fresh worker warms its runners at start, not on its first chunk: a prefork ``cpu`` worker's
parent runs the torch-free part of the features warm-up before the fork and its child the torch part
after it; a worker whose queues carry no features chunks warms nothing."""
import re

import pytest

from tests.conftest import WorkerProcess, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

_LINE = re.compile(r"Warmed up \(pid (\d+), (before|after) the fork\): (.*)")


def _warm_lines(log) -> list[tuple[int, str, str]]:
    return [(int(m[1]), m[2], m[3]) for m in _LINE.finditer(log.read_text())]


def test_a_prefork_cpu_worker_warms_features_in_its_parent_and_its_child(worker_env, tmp_path):
    worker = WorkerProcess(worker_env, tmp_path / "cpu.log", queues="cpu", pool="prefork", prefix="warm").start()
    try:
        lines = wait_until(lambda: (lambda found: found if len(found) >= 2 else None)(_warm_lines(worker.log)),
                           timeout=60, what="both warm-up log lines")
    finally:
        worker.stop()
    (parent, when_p, what_p), (child, when_c, what_c) = lines[:2]
    assert (when_p, when_c) == ("before", "after")
    assert parent == worker.proc.pid and child != parent  # the child is a forked pool process
    assert what_p.startswith("features ") and what_c.startswith("features ")
    assert "Warm-up failed" not in worker.log.read_text()


def test_a_worker_without_features_queues_warms_nothing(worker_env, tmp_path):
    worker = WorkerProcess(worker_env, tmp_path / "gpu.log", queues="gpu", pool="solo", prefix="nowarm").start()
    worker.stop()
    assert _warm_lines(worker.log) == []
    assert "Warm-up failed" not in worker.log.read_text()

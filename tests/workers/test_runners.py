"""A runner per job kind (workers/runners.py), one error ladder per recording, and no code outside the
registries that branches on a job kind's name."""
from __future__ import annotations

import ast
from pathlib import Path
from types import SimpleNamespace

import pytest

from recognition import jobkinds
from workers import runners

ROOT = Path(__file__).resolve().parents[2]


def test_every_per_recording_kind_has_a_runner():
    """A kind is one declaration (recognition/jobkinds.py) plus one runner; a kind that makes a model
    runs as a task of its own (workers.tasks.run_train_job)."""
    assert set(runners.RUNNERS) == {k.name for k in jobkinds.KINDS.values() if not k.makes_model}
    assert all(isinstance(r, runners.Runner) for r in runners.RUNNERS.values())


class _Boom(Exception):
    pass


@pytest.fixture
def failed(monkeypatch):
    calls: list[tuple[int, str, str]] = []
    monkeypatch.setattr(runners.services, "result_fail",
                        lambda *, job, recording, code, message: calls.append((recording.pk, code, message)))
    return calls


CTX = SimpleNamespace(job=SimpleNamespace(pk=1))


def test_the_ladder_fails_bad_audio_with_its_reason_and_a_bug_with_processing_error(failed):
    from workers.pipeline.audio import AudioError

    rec = SimpleNamespace(pk=7)
    with runners.recording_errors(CTX, rec) as step:
        raise AudioError("too_short", "The recording is too short.")
    assert step.failed and failed[-1] == (7, "too_short", "The recording is too short.")
    with runners.recording_errors(CTX, rec) as step:
        raise ValueError("odd input")
    assert step.failed and failed[-1][1] == "processing_error" and "ValueError: odd input" in failed[-1][2]
    with runners.recording_errors(CTX, rec, model_errors=(_Boom,)) as step:
        raise _Boom("no model")
    assert step.failed and failed[-1] == (7, "model_unavailable", "no model")
    with runners.recording_errors(CTX, rec) as step:
        pass
    assert not step.failed and len(failed) == 3


@pytest.mark.parametrize("exc", [ConnectionError("broker"), runners.SoftTimeLimitExceeded()])
def test_the_ladder_raises_transient_errors_and_the_time_limit_on(failed, exc):
    with pytest.raises(type(exc)):
        with runners.recording_errors(CTX, SimpleNamespace(pk=7)):
            raise exc
    assert failed == []


KIND_NAMES = {"features", "classify", "embed", "train", "language", "transcribe"}



def _kind_literal(node: ast.AST) -> bool:
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute) and node.value.attr == "Kind":
        return node.attr not in ("values", "choices", "labels", "names")
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return any(_kind_literal(e) for e in node.elts)
    return isinstance(node, ast.Constant) and node.value in KIND_NAMES


def _about_a_kind(node: ast.AST) -> bool:
    return any((isinstance(x, ast.Name) and "kind" in x.id.lower()) or (isinstance(x, ast.Attribute) and x.attr == "kind")
               or (isinstance(x, ast.Subscript) and isinstance(x.slice, ast.Constant) and x.slice.value == "kind")
               for x in ast.walk(node))


def _kind_branches() -> dict[str, int]:
    found: dict[str, int] = {}
    for package in ("recognition", "workers", "models", "accentsite", "bench"):
        for path in (ROOT / package).rglob("*.py"):
            name = str(path.relative_to(ROOT))
            if "migrations" in path.parts or name == "recognition/jobkinds.py":  # the registry itself
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Compare):
                    sides = [node.left, *node.comparators]
                    literals = [s for s in sides if _kind_literal(s)]
                    if literals and any(_about_a_kind(s) for s in sides if s not in literals):
                        found[name] = found.get(name, 0) + 1
    return found


def test_no_code_branches_on_a_job_kind_name_outside_the_registry():
    """Tasks, runners, services, pages and exports read what a kind declares (``evaluates``,
    ``makes_model``, ``needs_recordings``, ``stores``: what its results hold) or look its runner up;
    they never test ``kind == "classify"``."""
    assert _kind_branches() == {}


def test_the_branch_scan_sees_a_branch():
    tree = ast.parse('if job.kind == Job.Kind.CLASSIFY or params["kind"] in ("train", "embed"): pass')
    compares = [n for n in ast.walk(tree) if isinstance(n, ast.Compare)]
    assert all(any(_kind_literal(s) for s in [c.left, *c.comparators]) for c in compares) and len(compares) == 2

"""The model contract (models/hooks.py) and the family facts on the registry (models/registry.py)."""
from __future__ import annotations

import ast
import typing
from pathlib import Path

import pytest

from models.hooks import HOOK_DEFAULTS, ModelHooks, model_hook
from models.registry import FAMILIES, TRAINABLE_FAMILIES

ROOT = Path(__file__).resolve().parents[2]


def test_the_protocol_and_the_defaults_list_the_same_hooks() -> None:
    assert set(typing.get_type_hints(ModelHooks)) == set(HOOK_DEFAULTS)


def test_a_hook_reads_the_model_or_its_default_and_an_unknown_name_is_refused() -> None:
    class Reading:
        needs_transcript = True

    assert model_hook(Reading(), "needs_transcript") is True
    assert model_hook(Reading(), "train_source") == "wave"
    assert model_hook(None, "variable_length") is False
    with pytest.raises(KeyError, match="model contract"):
        model_hook(Reading(), "needs_transcript_typo")


def test_no_code_reads_a_hook_by_a_bare_getattr() -> None:
    """Every ``getattr(x, "<hook>", ...)`` goes through :func:`model_hook`, so the contract is complete."""
    found = []
    for package in ("recognition", "workers", "models", "accentsite", "bench"):
        for path in (ROOT / package).rglob("*.py"):
            if path.name == "hooks.py" and path.parent.name == "models":
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if (isinstance(node, ast.Call) and getattr(node.func, "id", None) in ("getattr", "hasattr")
                        and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant)
                        and node.args[1].value in HOOK_DEFAULTS):
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.args[1].value}")
    assert found == []


def test_family_facts_live_on_the_registry() -> None:
    """The training defaults and the admin's list are read from the registry, not written beside it."""
    from workers.pipeline.train_config import DEFAULT_HPARAMS, DEFAULT_TASK, DEFAULT_WINDOW

    window = {name for name, f in FAMILIES.items() if f.trainer == "window"}
    assert set(DEFAULT_HPARAMS) == set(DEFAULT_WINDOW) == window == {"cnn", "resnet", "speaker_head", "accent_embed"}
    assert DEFAULT_TASK == {"accent_embed": "embed"}
    assert DEFAULT_HPARAMS["resnet"] == FAMILIES["resnet"].default_hparams
    DEFAULT_HPARAMS["resnet"]["n_mels"] = -1  # a copy: the registry's facts stay as written
    assert FAMILIES["resnet"].default_hparams["n_mels"] == 80
    assert set(TRAINABLE_FAMILIES) == {name for name, f in FAMILIES.items() if f.trainer}
    assert "spoken_words" not in TRAINABLE_FAMILIES and "whisper_probe" in TRAINABLE_FAMILIES


def test_every_trainer_key_resolves() -> None:
    from workers.pipeline.trainers import TRAINERS

    assert {f.trainer for f in FAMILIES.values() if f.trainer} == set(TRAINERS)


def test_the_train_form_lists_the_registry_without_importing_the_training_pipeline() -> None:
    """recognition/forms.py reads the family names from the registry (docs/architecture.md: never the pipeline)."""
    source = (ROOT / "recognition" / "forms.py").read_text()
    assert "workers.pipeline" not in source
    from recognition.forms import _family_choices

    choices = _family_choices()
    assert [name for name, _ in choices][0] == "whisper_probe"  # the recommended one first
    assert {name for name, _ in choices} == set(TRAINABLE_FAMILIES)

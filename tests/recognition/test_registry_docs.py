"""The lists people read stay those of the registries: the API's ``params`` help text is written from
them, and the README's job-kind table is checked against them (a new extractor, family or parameter
fails here until the README says so)."""
from __future__ import annotations

import re
from pathlib import Path

from models.registry import TRAINABLE_FAMILIES
from recognition import jobkinds

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def _readme_rows() -> dict[str, str]:
    """``{kind: params column}`` of the README's job-kind table."""
    rows = {}
    for line in README.splitlines():
        m = re.match(r"\| `(\w+)` \| .* \| (.*) \|$", line)
        if m and m.group(1) in jobkinds.KINDS:
            rows[m.group(1)] = m.group(2)
    return rows


def test_the_params_help_text_is_written_from_the_registries():
    from recognition.api.serializers import JobCreateSerializer
    from workers.pipeline.features import EXTRACTORS

    text = str(JobCreateSerializer().fields["params"].help_text)
    assert text == jobkinds.params_help()
    for kind in jobkinds.KINDS.values():
        section = text.split(f"{kind.name}: ", 1)[1]
        assert all(key in section for key in kind.params), kind.name
    assert "names: " + ", ".join(EXTRACTORS) + ";" in text
    assert ", ".join(sorted(TRAINABLE_FAMILIES, key=lambda f: f != "whisper_probe")) in text


def test_the_readme_table_lists_every_kind_parameter_extractor_and_family():
    from workers.pipeline.features import EXTRACTORS

    rows = _readme_rows()
    assert set(rows) == set(jobkinds.KINDS)
    for name, kind in jobkinds.KINDS.items():
        missing = [key for key in kind.params if f"`{key}`" not in rows[name]]
        assert missing == [], f"README's {name} row lacks {missing}"
    listed = re.search(r"any of `([\w ]+)`", rows["features"]).group(1).split()
    assert sorted(listed) == sorted(EXTRACTORS)
    families = re.findall(r"`(\w+)`", rows["train"].split("`label_map`")[0])
    assert set(families) - {"family", "name"} == set(TRAINABLE_FAMILIES)


def test_the_train_kinds_robustness_param_is_declared_checked_and_documented():
    """``robustness`` is a train param (registry, help text, README row), its condition names are
    checked at submission, and a train job turns it into the conditions its run scores."""
    import pytest

    from recognition.jobkinds import ParamsError
    from recognition.services.training import train_robustness_conditions
    from workers.pipeline.degrade import CONDITIONS, DEFAULT_CONDITIONS

    kind = jobkinds.KINDS["train"]
    assert "robustness" in kind.params and "robustness" in _readme_rows()["train"]
    assert "robustness (true (default conditions) or a list of: " + ", ".join(CONDITIONS) in jobkinds.params_help()
    assert jobkinds.validate_params("train", {"robustness": True}) == {"robustness": True}
    assert jobkinds.validate_params("train", {"robustness": ["pink_10db", "telephone"]})
    with pytest.raises(ParamsError, match="wrong type"):
        jobkinds.validate_params("train", {"robustness": 1})
    with pytest.raises(ParamsError, match="wrong type"):
        jobkinds.validate_params("train", {"epochs": True})  # a bool is still not an int
    with pytest.raises(ParamsError, match="unknown robustness condition"):
        kind.validate({"robustness": ["pink_11db"]})
    assert train_robustness_conditions(True) == list(DEFAULT_CONDITIONS)
    assert train_robustness_conditions(["telephone"]) == ["clean", "telephone"]
    assert train_robustness_conditions(False) is None and train_robustness_conditions(None) is None

"""``tuneyard init --template``: every starter definition is a valid study that says where
its ranges come from, and the command writes it without overwriting a file by accident."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from tuneyard import cli
from tuneyard.cli.init import TEMPLATES, template_text
from tuneyard.spec import StudySpec


@pytest.mark.parametrize("name", TEMPLATES)
def test_every_template_is_a_valid_definition_with_its_sources(name: str) -> None:
    text = template_text(name)
    spec = StudySpec.model_validate(yaml.safe_load(text))
    assert spec.name == name
    # Each tuned parameter's range is explained in a comment above it, with a source (a year).
    comments = "\n".join(line for line in text.splitlines() if line.lstrip().startswith("#"))
    assert any(str(year) in comments for year in range(1990, 2030))
    assert "start simple" in text.lower()


def test_init_writes_a_template_and_refuses_to_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "study.yaml"
    runner = CliRunner()
    first = runner.invoke(cli.app, ["init", "--template", "gbdt", "-o", str(out)])
    assert first.exit_code == 0, first.output
    assert out.read_text() == template_text("gbdt")
    out.write_text("mine")
    again = runner.invoke(cli.app, ["init", "--template", "mlp", "-o", str(out)])
    assert again.exit_code == 2 and "--force" in again.output
    assert out.read_text() == "mine"
    forced = runner.invoke(cli.app, ["init", "--template", "mlp", "-o", str(out), "--force"])
    assert forced.exit_code == 0 and out.read_text() == template_text("mlp")
    unknown = runner.invoke(cli.app, ["init", "--template", "resnet", "-o", str(out)])
    assert unknown.exit_code == 2 and "not one of" in unknown.output

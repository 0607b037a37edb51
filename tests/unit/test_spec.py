"""The study definition accepts the reference study and refuses bad ones, naming the field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from tuneyard.spec import (
    DEFAULT_SAMPLER,
    MAX_GRID_POINTS,
    SamplerSpec,
    StudySpec,
    default_sampler_type,
    grid_size,
)

REFERENCE = {
    "name": "mlp-digits",
    "metric": "val_error",
    "direction": "minimize",
    "space": {
        "lr": {"type": "float", "low": 1.0e-4, "high": 1.0, "log": True},
        "batch_size": {"type": "categorical", "choices": [16, 32, 64, 128, 256]},
        "layers": {"type": "int", "low": 1, "high": 3},
        "units": {"type": "int", "low": 16, "high": 512, "log": True},
        "momentum": {"type": "float", "low": 0.0, "high": 0.99, "step": 0.01},
        "solver": {"type": "categorical", "choices": ["sgd", "adam"]},
        "nesterov": {"type": "categorical", "choices": [True, False], "when": {"solver": "sgd"}},
    },
    "sampler": {"type": "random", "seed": 7},
    "scheduler": {
        "type": "asha",
        "min_resource": 1,
        "max_resource": 27,
        "reduction_factor": 3,
        "mode": "promotion",
    },
    "limits": {"max_trials": 200, "max_concurrent": 8},
    "execution": {"entrypoint": "examples.mlp_digits:train", "queue": "default", "max_retries": 2},
}


def with_(**changes: Any) -> dict[str, Any]:
    return {**REFERENCE, **changes}


def error_text(spec: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as exc:
        StudySpec.model_validate(spec)
    return str(exc.value)


def test_reference_study_is_valid_and_json_roundtrips() -> None:
    spec = StudySpec.model_validate(REFERENCE)
    again = StudySpec.model_validate(spec.model_dump(mode="json"))
    assert again == spec
    assert spec.space["nesterov"].when == {"solver": "sgd"}


def test_example_yaml_is_the_reference_study() -> None:
    path = Path(__file__).resolve().parents[2] / "examples" / "study.yaml"
    spec = StudySpec.model_validate(yaml.safe_load(path.read_text()))
    assert spec == StudySpec.model_validate(REFERENCE)


@pytest.mark.parametrize(
    ("space", "words"),
    [
        ({"a": {"type": "float", "low": 1, "high": 0}}, "low (1.0) must not be greater"),
        ({"a": {"type": "float", "low": 0, "high": 1, "log": True}}, "log scale needs low > 0"),
        ({"a": {"type": "int", "low": 5, "high": 1}}, "low (5) must not be greater"),
        ({"a": {"type": "categorical", "choices": []}}, "choices must not be empty"),
        ({"a": {"type": "categorical", "choices": [1, 1]}}, "unique"),
        ({"a": {"type": "float", "low": 0, "high": 1, "when": {"b": 1}}}, "unknown parameter 'b'"),
        ({"a": {"type": "float", "low": 0, "high": 1, "wen": {}}}, "wen"),
        ({"a": {"type": "complex"}}, "type"),
        ({"1a": {"type": "int", "low": 0, "high": 1}}, "must start with a letter"),
        (
            {
                "a": {"type": "categorical", "choices": [1, 2], "when": {"b": "x"}},
                "b": {"type": "categorical", "choices": ["x"], "when": {"a": 1}},
            },
            "cycle",
        ),
        (
            {
                "a": {"type": "categorical", "choices": ["x", "y"]},
                "b": {"type": "int", "low": 0, "high": 1, "when": {"a": "z"}},
            },
            "'z' is not one of 'a''s choices",
        ),
    ],
)
def test_invalid_spaces_name_field_and_reason(space: dict[str, Any], words: str) -> None:
    assert words in error_text(with_(space=space))


def test_grid_needs_steps_and_a_finite_size() -> None:
    space = {"a": {"type": "float", "low": 0, "high": 1}}
    assert "grid search needs a step" in error_text(with_(space=space, sampler={"type": "grid"}))
    huge = {f"p{i}": {"type": "int", "low": 0, "high": 9} for i in range(9)}
    assert "1e+09 points" in error_text(with_(space=huge, sampler={"type": "grid"}))
    spec = StudySpec.model_validate(
        with_(
            space={
                "a": {"type": "float", "low": 0, "high": 1, "grid_points": 5},
                "s": {"type": "categorical", "choices": ["sgd", "adam"]},
                "n": {"type": "categorical", "choices": [True, False], "when": {"s": "sgd"}},
                "m": {"type": "float", "low": 0, "high": 0.9, "step": 0.1, "when": {"s": "sgd"}},
            },
            sampler={"type": "grid"},
        )
    )
    # sgd: 5 * 2 * 10, adam: 5
    assert grid_size(spec.space) == 105
    assert grid_size({f"p{i}": spec.space["a"] for i in range(12)}) == 5**12
    assert MAX_GRID_POINTS < 5**12


def test_scheduler_and_limits_are_checked() -> None:
    assert "min_resource" in error_text(with_(scheduler={"min_resource": 5, "max_resource": 2}))
    assert "reduction_factor" in error_text(with_(scheduler={"reduction_factor": 1}))
    assert "applies to asha only" in error_text(
        with_(scheduler={"type": "sha", "mode": "stopping"})
    )
    assert "max_trials" in error_text(with_(limits={"max_trials": 0}))
    assert "entrypoint" in error_text(with_(execution={"entrypoint": "no colon"}))


def _without_sampler(**changes: Any) -> dict[str, Any]:
    spec = with_(**changes)
    del spec["sampler"]
    return spec


def test_a_study_that_names_no_sampler_gets_tpe_or_the_one_its_kind_needs() -> None:
    assert DEFAULT_SAMPLER == "tpe"
    assert SamplerSpec().type == "tpe"
    assert StudySpec.model_validate(_without_sampler()).sampler.type == "tpe"
    # Options without a type: the default type, which then checks them.
    seeded = StudySpec.model_validate(with_(sampler={"seed": 5, "n_startup": 4}))
    assert (seeded.sampler.type, seeded.sampler.seed, seeded.sampler.n_startup) == ("tpe", 5, 4)
    # A population is drawn before any result: random.
    pbt = {"type": "pbt", "population": 4, "interval": 3, "max_resource": 27}
    population = {"scheduler": pbt, "limits": {"max_concurrent": 4}}
    assert StudySpec.model_validate(_without_sampler(**population)).sampler.type == "random"
    assert (
        StudySpec.model_validate(
            _without_sampler(**{**population, "scheduler": {**pbt, "type": "pb2"}})
        ).sampler.type
        == "random"
    )
    assert "not an option of the random sampler" in error_text(
        with_(**population, sampler={"n_startup": 4})
    )
    # Several objectives or constraints: MOTPE, which ranks by fronts and feasibility.
    two = [{"metric": "val_error"}, {"metric": "latency"}]
    assert StudySpec.model_validate(_without_sampler(objectives=two)).sampler.type == "motpe"
    bounded = [{"metric": "latency", "max": 2.0}]
    assert StudySpec.model_validate(_without_sampler(constraints=bounded)).sampler.type == "motpe"
    # A sampler named is kept whatever the study.
    assert (
        StudySpec.model_validate(with_(**population, sampler={"type": "sobol"})).sampler.type
        == "sobol"
    )
    assert (
        StudySpec.model_validate(with_(objectives=two, sampler={"type": "nsga2"})).sampler.type
        == "nsga2"
    )
    assert default_sampler_type("asha") == "tpe"
    assert default_sampler_type("pb2", objectives=2) == "random"
    assert default_sampler_type(None, constraints=1) == "motpe"


def test_a_stored_definition_keeps_the_sampler_it_was_created_with() -> None:
    # Stored definitions are full dumps, so changing the default leaves old studies alone.
    stored = StudySpec.model_validate(REFERENCE).model_dump(mode="json")
    assert stored["sampler"]["type"] == "random"
    assert StudySpec.from_stored(stored).sampler.type == "random"
    created = StudySpec.model_validate(_without_sampler()).model_dump(mode="json")
    assert created["sampler"] == {"type": "tpe", "seed": None}

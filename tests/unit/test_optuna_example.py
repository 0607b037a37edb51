"""examples/optuna_style.py: its definition is the one shipped as examples/optuna_study.yaml,
and its Optuna objective trains, is stopped by the service, and completes under a worker."""

from __future__ import annotations

from pathlib import Path

import yaml

from tests.fakes import FakeService, job, run
from tuneyard.spec import StudySpec
from tuneyard.worker.runner import load_objective

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SGD = {
    "solver": "sgd",
    "momentum": 0.9,
    "nesterov": True,
    "units": 32,
    "activation": "relu",
    "lr": 0.01,
    "l2": 1e-4,
}


def test_the_shipped_definition_is_the_one_derived_from_the_objective() -> None:
    from examples.optuna_style import definition

    shipped = StudySpec.model_validate(yaml.safe_load((EXAMPLES / "optuna_study.yaml").read_text()))
    derived = definition()
    assert shipped == derived
    assert list(shipped.space) == list(derived.space)


def test_the_objective_is_stopped_by_the_service_and_completes_otherwise(tmp_path: Path) -> None:
    train = load_objective("examples.optuna_style:train")
    svc = FakeService({3: ("stop", None)})
    assert run(svc, job(to=20, params=SGD), train, tmp_path, "a") == "stop"
    assert [a[1] for a in svc.args("report")] == [1, 2, 3]

    adam = {k: v for k, v in SGD.items() if k not in ("momentum", "nesterov")}
    svc = FakeService()
    assert (
        run(svc, job(to=20, params={**adam, "solver": "adam"}), train, tmp_path, "b") == "complete"
    )
    errors = [a[2] for a in svc.args("report")]
    assert len(errors) == 20 and errors[-1] < 0.1 and errors[-1] < errors[0]
    assert svc.args("complete") == [(5, errors[-1])]

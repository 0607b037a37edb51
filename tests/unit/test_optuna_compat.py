"""An Optuna-style objective under tuneyard: suggest calls answered from the study's values,
reports and pruning through the service's decisions, and the space read from the objective."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.fakes import FakeService, job, run
from tuneyard.optuna_compat import (
    CompatTrial,
    ConditionalSpaceError,
    SpaceMismatch,
    TrialPruned,
    definition_from,
    objective,
    space_from,
)
from tuneyard.spec import StudySpec
from tuneyard.worker import Trial


def tuneyard_trial(tmp: Path, params: dict[str, Any], svc: FakeService | None = None) -> Trial:
    return Trial(svc or FakeService(), 1, 5, 4, params, 0, 27, tmp)


# -- each suggest call as a parameter of the space, and back --------------------------------
SUGGESTS: list[tuple[str, tuple[Any, ...], dict[str, Any], dict[str, Any], Any]] = [
    # (method, args, kwargs, the space's entry, a value the study may give)
    ("suggest_float", (0.0, 1.0), {}, {"type": "float", "low": 0.0, "high": 1.0}, 0.25),
    (
        "suggest_float",
        (1e-5, 1e-1),
        {"log": True},
        {"type": "float", "low": 1e-5, "high": 1e-1, "log": True},
        1e-3,
    ),
    (
        "suggest_float",
        (0.0, 0.9),
        {"step": 0.1},
        {"type": "float", "low": 0.0, "high": 0.9, "step": 0.1},
        0.3,
    ),
    ("suggest_int", (1, 8), {}, {"type": "int", "low": 1, "high": 8}, 3),
    (
        "suggest_int",
        (16, 512),
        {"log": True},
        {"type": "int", "low": 16, "high": 512, "log": True},
        64,
    ),
    ("suggest_int", (0, 100), {"step": 10}, {"type": "int", "low": 0, "high": 100, "step": 10}, 40),
    (
        "suggest_categorical",
        (["adam", "sgd", None, 3, True],),
        {},
        {"type": "categorical", "choices": ["adam", "sgd", None, 3, True]},
        "sgd",
    ),
    ("suggest_uniform", (0.0, 2.0), {}, {"type": "float", "low": 0.0, "high": 2.0}, 1.5),
    (
        "suggest_loguniform",
        (1e-3, 1.0),
        {},
        {"type": "float", "low": 1e-3, "high": 1.0, "log": True},
        0.01,
    ),
    (
        "suggest_discrete_uniform",
        (0.0, 1.0, 0.25),
        {},
        {"type": "float", "low": 0.0, "high": 1.0, "step": 0.25},
        0.5,
    ),
]


@pytest.mark.parametrize(("method", "args", "kwargs", "entry", "given"), SUGGESTS)
def test_a_suggest_call_is_one_parameter_of_the_space_and_returns_the_studys_value(
    tmp_path: Path,
    method: str,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    entry: dict[str, Any],
    given: Any,
) -> None:
    def fn(trial: Any) -> Any:
        return getattr(trial, method)("x", *args, **kwargs)

    space = space_from(fn)
    assert space == {"x": entry}
    # Back: a trial whose study gave x from that space sees it, checked against the space.
    compat = CompatTrial(tuneyard_trial(tmp_path, {"x": given}), space=space)
    value = fn(compat)
    assert value == given and type(value) is type(given)
    assert compat.params == {"x": given}


def test_an_int_parameter_comes_back_as_an_int_and_a_float_as_a_float(tmp_path: Path) -> None:
    # JSON may carry 3.0 for an int and 1 for a float; the objective gets Optuna's types.
    compat = CompatTrial(tuneyard_trial(tmp_path, {"n": 3.0, "lr": 1}))
    n, lr = compat.suggest_int("n", 1, 8), compat.suggest_float("lr", 0.5, 2.0)
    assert (n, type(n), lr, type(lr)) == (3, int, 1.0, float)


# -- disagreements, in words -----------------------------------------------------------------
def test_a_range_that_disagrees_with_the_study_names_the_parameter_and_both_ranges(
    tmp_path: Path,
) -> None:
    space = {"lr": {"type": "float", "low": 1e-4, "high": 1.0, "log": True}}
    compat = CompatTrial(tuneyard_trial(tmp_path, {"lr": 0.01}), space=space)
    with pytest.raises(SpaceMismatch) as err:
        compat.suggest_float("lr", 1e-5, 1e-1, log=True)
    msg = str(err.value)
    assert msg.startswith("lr: ")
    assert "float 0.0001..1 (log)" in msg and "float 1e-05..0.1 (log)" in msg


def test_a_type_or_choice_disagreement_is_an_error_too(tmp_path: Path) -> None:
    space = StudySpec.model_validate(
        {"name": "s", "space": {"opt": {"type": "categorical", "choices": ["adam", "sgd"]}}}
    )
    compat = CompatTrial(tuneyard_trial(tmp_path, {"opt": "adam"}), space=space)
    with pytest.raises(SpaceMismatch, match=r"opt: .*\['adam', 'sgd'\].*\['adam', 'rmsprop'\]"):
        compat.suggest_categorical("opt", ["adam", "rmsprop"])
    with pytest.raises(SpaceMismatch, match=r"opt: .*categorical.*int 1..3"):
        compat.suggest_int("opt", 1, 3)
    with pytest.raises(SpaceMismatch, match=r"no parameter 'units' .*it has opt"):
        compat.suggest_int("units", 1, 3)


def test_without_the_space_a_value_outside_the_suggested_range_is_an_error(tmp_path: Path) -> None:
    compat = CompatTrial(tuneyard_trial(tmp_path, {"lr": 0.5, "n": 2.5, "act": "gelu"}))
    with pytest.raises(SpaceMismatch, match=r"lr: the study gave 0.5, outside .*float 1e-05..0.1"):
        compat.suggest_float("lr", 1e-5, 0.1)
    with pytest.raises(SpaceMismatch, match=r"n: the study gave 2.5, not an integer"):
        compat.suggest_int("n", 1, 4)
    with pytest.raises(SpaceMismatch, match=r"act: the study gave 'gelu', which is not one of"):
        compat.suggest_categorical("act", ["relu", "tanh"])
    with pytest.raises(SpaceMismatch, match=r"units: .*no 'units' \(it gave act, lr, n\)"):
        compat.suggest_int("units", 1, 4)


def test_a_suggest_call_optuna_itself_refuses_is_refused_with_the_parameter(tmp_path: Path) -> None:
    compat = CompatTrial(tuneyard_trial(tmp_path, {"lr": 0.5}))
    with pytest.raises(SpaceMismatch, match=r"lr: .*log scale needs low > 0"):
        compat.suggest_float("lr", 0.0, 1.0, log=True)
    with pytest.raises(SpaceMismatch, match=r"lr: .*must not be greater than high"):
        compat.suggest_float("lr", 2.0, 1.0)
    with pytest.raises(SpaceMismatch, match=r"k: a choice must be None, a bool"):
        compat.suggest_categorical("k", [(1, 2), (3, 4)])


# -- report, should_prune and TrialPruned against the service's decisions -------------------
def test_report_is_a_report_of_the_studys_metric_counted_from_one(tmp_path: Path) -> None:
    svc = FakeService({2: ("stop", None)})
    compat = CompatTrial(tuneyard_trial(tmp_path, {}, svc))
    compat.report(0.9, 0)  # Optuna counts from 0: one epoch done is tuneyard's step 1
    assert not compat.should_prune()
    compat.report(0.7, 1)
    assert compat.should_prune()
    assert [(step, value) for _, step, value, _ in svc.args("report")] == [(1, 0.9), (2, 0.7)]


def test_an_objective_counting_from_one_keeps_its_steps(tmp_path: Path) -> None:
    svc = FakeService()
    compat = CompatTrial(tuneyard_trial(tmp_path, {}, svc))
    compat.report(0.9, 1)
    compat.report(0.8, 2)
    assert [a[1] for a in svc.args("report")] == [1, 2]
    fixed = CompatTrial(tuneyard_trial(tmp_path, {}, svc := FakeService()), step_offset=0)
    fixed.report(0.9, 0)
    assert [a[1] for a in svc.args("report")] == [0]


def test_numeric_user_attrs_travel_as_metrics_with_later_reports(tmp_path: Path) -> None:
    svc = FakeService()
    compat = CompatTrial(tuneyard_trial(tmp_path, {}, svc))
    compat.set_user_attr("train_loss", 0.3)
    compat.set_user_attr("note", "kept here only")
    compat.set_user_attr("value", 7)  # Trial.report's own argument: not a metric
    compat.report(0.5, 0)
    ((_, _, _, metrics),) = svc.args("report")
    assert metrics == {"train_loss": 0.3}
    assert compat.user_attrs == {"train_loss": 0.3, "note": "kept here only", "value": 7}


def pruning_objective(trial: Any) -> float:
    """An Optuna-style loop: report every epoch, prune when told, return the last value."""
    x = trial.suggest_float("x", -10.0, 10.0)
    value = 0.0
    for epoch in range(9):
        value = (x - 2) ** 2 + 1 / (epoch + 1)
        trial.report(value, epoch)
        if trial.should_prune():
            raise TrialPruned()
    return value


def test_a_stop_decision_prunes_and_the_trial_ends_stopped(tmp_path: Path) -> None:
    svc = FakeService({3: ("stop", None)})
    out = run(svc, job(to=9, params={"x": 2.0}), objective(pruning_objective), tmp_path, "w")
    assert out == "stop"
    assert [a[1] for a in svc.args("report")] == [1, 2, 3]
    assert svc.kinds() == ["report"] * 3  # nothing after: the service already stopped it


def test_the_returned_value_completes_the_trial(tmp_path: Path) -> None:
    svc = FakeService()
    out = run(svc, job(to=9, params={"x": 3.0}), objective(pruning_objective), tmp_path, "w")
    assert out == "complete"
    assert svc.args("complete") == [(5, pytest.approx(1 + 1 / 9))]


def test_a_paused_trial_starts_again_and_skips_the_steps_it_already_reported(
    tmp_path: Path,
) -> None:
    svc = FakeService({1: ("pause", 1)})
    out = run(svc, job(to=1, params={"x": 0.0}), objective(pruning_objective), tmp_path, "a")
    assert out == "pause"
    ((_, location),) = svc.args("pause")
    # Promoted to 3: the objective runs from its first epoch, and the service hears of 2 and 3.
    svc2 = FakeService({3: ("pause", 3)})
    resumed = job("resume", 1, 3, location, params={"x": 0.0})
    assert run(svc2, resumed, objective(pruning_objective), tmp_path, "b") == "pause"
    assert [a[1] for a in svc2.args("report")] == [2, 3]


def test_a_decorated_objective_checks_its_space(tmp_path: Path) -> None:
    @objective(space={"x": {"type": "float", "low": -5.0, "high": 5.0}})
    def train(trial: Any) -> float:
        return pruning_objective(trial)

    svc = FakeService()
    assert run(svc, job(params={"x": 1.0}), train, tmp_path, "w") == "fail"
    ((_, error),) = svc.args("fail")
    assert "SpaceMismatch: x: the study's space has float -5..5" in error
    assert "the objective suggests float -10..10" in error


def test_pruning_on_its_own_completes_with_the_latest_report_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def impatient(trial: Any) -> float:
        trial.report(0.4, 0)
        raise TrialPruned()

    svc = FakeService()
    with caplog.at_level(logging.WARNING, logger="tuneyard.optuna_compat"):
        assert run(svc, job(to=9), objective(impatient), tmp_path, "w") == "complete"
    assert svc.args("complete") == [(5, None)]  # the service takes the latest report's value
    assert "a worker cannot stop a trial" in caplog.text


def test_pruning_before_any_report_fails_the_trial_with_the_reason(tmp_path: Path) -> None:
    def hasty(trial: Any) -> float:
        raise TrialPruned()

    svc = FakeService()
    assert run(svc, job(to=9), objective(hasty), tmp_path, "w") == "fail"
    ((_, error),) = svc.args("fail")
    assert "raised TrialPruned before reporting anything" in error


def test_an_error_that_is_not_pruning_fails_the_trial(tmp_path: Path) -> None:
    def broken(trial: Any) -> float:
        trial.suggest_float("x", -10.0, 10.0)
        raise ValueError("diverged")

    svc = FakeService()
    assert run(svc, job(params={"x": 0.0}), objective(broken), tmp_path, "w") == "fail"
    assert "ValueError: diverged" in svc.args("fail")[0][1]


# -- the space and the definition, read from the objective ----------------------------------
def conditional(trial: Any) -> float:
    solver = trial.suggest_categorical("solver", ["adam", "sgd", "rmsprop"])
    lr = trial.suggest_float("lr", 1e-5, 1e-1, log=True)
    if solver in ("sgd", "rmsprop"):
        trial.suggest_float("momentum", 0.0, 0.99, step=0.01)
    if solver == "sgd":
        trial.suggest_categorical("nesterov", [True, False])
    trial.suggest_int("units", 16, 512, log=True)
    for epoch in range(100):
        trial.report(lr, epoch)
    raise AssertionError("the recorder ends the run at the first report")


def test_a_space_gated_by_a_categorical_gets_when_conditions_in_the_objectives_order() -> None:
    space = space_from(conditional)
    assert list(space) == ["solver", "lr", "momentum", "nesterov", "units"]
    assert space["momentum"]["when"] == {"solver": ["sgd", "rmsprop"]}
    assert space["nesterov"]["when"] == {"solver": "sgd"}
    assert all("when" not in space[n] for n in ("solver", "lr", "units"))


def test_the_derived_definition_validates_and_stops_rather_than_promotes() -> None:
    spec = definition_from(
        conditional,
        name="from-optuna",
        direction="maximize",
        max_resource=100,
        entrypoint="examples.optuna_style:train",
        sampler={"type": "tpe", "seed": 3},
    )
    again = StudySpec.model_validate(spec.model_dump(mode="json"))
    assert again == spec
    assert (spec.scheduler.type, spec.scheduler.mode) == ("asha", "stopping")
    assert spec.scheduler.max_resource == 100 and spec.direction == "maximize"
    assert spec.execution is not None and spec.execution.entrypoint == "examples.optuna_style:train"
    assert spec.space["nesterov"].when == {"solver": "sgd"}
    promoting = definition_from(
        conditional, name="p", scheduler={"type": "asha", "mode": "promotion"}
    )
    assert promoting.scheduler.mode == "promotion"


def test_parameters_that_depend_on_a_number_are_refused_with_their_name() -> None:
    def layers(trial: Any) -> float:
        n = trial.suggest_int("n_layers", 1, 3)
        for i in range(n):
            trial.suggest_int(f"n_units_l{i}", 4, 128, log=True)
        return 0.0

    with pytest.raises(ConditionalSpaceError) as err:
        space_from(layers)
    msg = str(err.value)
    assert msg.startswith("n_units_l1: ") and "int parameter 'n_layers' took 3" in msg


def test_a_range_that_depends_on_an_earlier_value_is_refused() -> None:
    def ranged(trial: Any) -> float:
        low = trial.suggest_int("low", 1, 5)
        trial.suggest_int("high", low, 10)
        return 0.0

    with pytest.raises(ConditionalSpaceError, match=r"high: its range depends .*int 1..10.*5..10"):
        space_from(ranged)


def test_a_parameter_gated_by_two_categoricals_together_is_refused() -> None:
    def both(trial: Any) -> float:
        a = trial.suggest_categorical("a", ["x", "y"])
        b = trial.suggest_categorical("b", ["x", "y"])
        if a == "y" and b == "y":
            trial.suggest_float("c", 0.0, 1.0)
        return 0.0

    with pytest.raises(ConditionalSpaceError, match=r"^c: suggested only for some values"):
        space_from(both)


def test_a_crash_while_recording_names_the_values_it_ran_with() -> None:
    def crashes(trial: Any) -> float:
        trial.suggest_categorical("act", ["relu", "tanh"])
        raise OSError("no data")

    with pytest.raises(RuntimeError, match=r"raised OSError: no data .*act='relu'"):
        space_from(crashes)


def test_an_objective_that_suggests_nothing_has_no_space() -> None:
    with pytest.raises(ConditionalSpaceError, match=r"suggested no parameter"):
        space_from(lambda trial: 0.0)


def test_the_compat_layer_never_imports_optuna() -> None:
    # Optuna is an optional extra: importing the layer and wrapping an objective leaves it out.
    code = (
        "import sys; from tuneyard import optuna_compat as oc; "
        "oc.space_from(lambda t: t.suggest_int('n', 1, 3)); "
        "oc.is_pruned(ValueError()); "
        "print('optuna' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "False"


def test_a_resumed_trial_that_prunes_itself_early_keeps_what_it_reported_before(
    tmp_path: Path,
) -> None:
    def impatient(trial: Any) -> float:
        trial.report(0.4, 0)  # step 1: reported before the pause, not sent again
        raise TrialPruned()

    svc = FakeService()
    resumed = job("resume", 1, 3, None)
    assert run(svc, resumed, objective(impatient), tmp_path, "w") == "complete"
    assert svc.kinds() == ["complete"]


def test_recording_stops_at_the_first_report_even_inside_a_catch_all() -> None:
    epochs = []

    def guarded(trial: Any) -> float:
        lr = trial.suggest_float("lr", 1e-4, 1.0, log=True)
        try:
            for epoch in range(50):
                epochs.append(epoch)
                trial.report(lr, epoch)
        except Exception:  # an objective's own guard must not keep the recorder training
            return float("inf")
        return lr

    assert space_from(guarded) == {"lr": {"type": "float", "low": 1e-4, "high": 1.0, "log": True}}
    assert set(epochs) == {0}

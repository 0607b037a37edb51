"""A replicated job (one fold and/or seed of a trial, in a study with ``evaluation``) as the
objective sees it: the trial handle of a Python entrypoint, the ``TUNEYARD_*`` variables and
placeholders of a command, the Optuna-style trial, and the worker's log lines."""

from __future__ import annotations

import json
import logging
import sys
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from tests.fakes import FakeService, job, run
from tuneyard.optuna_compat import CompatTrial, objective
from tuneyard.protocol import Assignment, ReplicateInfo
from tuneyard.worker import Trial, trial_from_env
from tuneyard.worker.checkpoints import FilesystemCheckpointStore
from tuneyard.worker.command import CommandError, CommandObjective, trial_env
from tuneyard.worker.output import LogShipper
from tuneyard.worker.runner import run_assignment
from tuneyard.worker.trial import REPLICATE_ENV, replicate_label

# Fold 2 of 5 under seed 1 of 3: index 1 * 5 + 2 of 15, for the configuration of trial 7.
BOTH = ReplicateInfo(index=7, of=15, fold=2, folds=5, seed=1, parent_id=7)
FOLDS = ReplicateInfo(index=3, of=5, fold=3, folds=5, parent_id=7)
SEEDS = ReplicateInfo(index=1, of=3, seed=1, parent_id=7)
ATTRS = ("fold", "folds", "seed", "replicate", "replicates", "parent_id")
# What an objective of the BOTH replicate reads.
BOTH_SEEN = {"fold": 2, "folds": 5, "seed": 1, "replicate": 7, "replicates": 15, "parent_id": 7}


def replicated(info: ReplicateInfo | None, **kw: Any) -> Assignment:
    return job(**kw).model_copy(update={"replicate": info})


def attrs(trial: Any) -> dict[str, Any]:
    return {name: getattr(trial, name) for name in ATTRS}


class CommandService(FakeService):
    """A service for command jobs: the worker reads the trial back after the process ends,
    and finds it still running with nothing pending (the process reported nothing)."""

    def get_trial(self, trial_id: int) -> Any:
        self._record("get_trial", trial_id)
        return SimpleNamespace(attempts=1, state="running", resource=None, pending=None)

    def complete(
        self,
        trial_id: int,
        value: float | None = None,
        metrics: Any = None,
        checkpoint: str | None = None,
        *,
        attempt: int,
        **kw: Any,
    ) -> None:
        """The client's signature, which the fake's own leaves to ``**kw``."""
        super().complete(trial_id, value, attempt=attempt, checkpoint=checkpoint, **kw)


# -- the trial handle of a Python entrypoint -----------------------------------------------------
def test_the_objective_sees_its_fold_and_seed_and_reports_as_the_replicate(
    tmp_path: Path,
) -> None:
    seen: dict[str, Any] = {}

    def train(trial: Trial) -> float:
        seen.update(attrs(trial), trial_id=trial.trial_id)
        trial.report(1, 0.25)
        return 0.25

    svc = FakeService()
    assert run(svc, replicated(BOTH), train, tmp_path, "w") == "complete"
    assert seen == {**BOTH_SEEN, "trial_id": 5}
    # Reports and the completion name the replicate's own id, never the configuration's.
    assert [a[0] for a in svc.args("report")] == [5]
    assert svc.args("complete") == [(5, 0.25)]


def test_a_trial_that_is_not_replicated_has_none_of_them(tmp_path: Path) -> None:
    seen: dict[str, Any] = {}

    def train(trial: Trial) -> float:
        seen.update(attrs(trial), label=trial.describe_replicate(), text=repr(trial))
        return 0.5

    assert run(FakeService(), job(), train, tmp_path, "w") == "complete"
    assert seen.pop("label") is None
    assert "fold" not in seen.pop("text")
    assert seen == dict.fromkeys(ATTRS)


def test_a_study_with_folds_alone_gives_no_seed(tmp_path: Path) -> None:
    trial = Trial(FakeService(), 1, 5, 4, {}, 0, 1, tmp_path, replicate=FOLDS)
    assert attrs(trial) == {
        "fold": 3,
        "folds": 5,
        "seed": None,
        "replicate": 3,
        "replicates": 5,
        "parent_id": 7,
    }


@pytest.mark.parametrize(
    ("info", "label"),
    [(FOLDS, "fold 4/5"), (SEEDS, "seed 2/3"), (BOTH, "fold 3/5, seed 2/3")],
)
def test_a_replicate_is_named_by_its_fold_and_seed_counted_from_one(
    info: ReplicateInfo, label: str
) -> None:
    assert replicate_label(info) == label


def test_the_repr_and_the_worker_log_name_the_fold_and_the_configuration(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    reprs: list[str] = []

    def train(trial: Trial) -> float:
        reprs.append(repr(trial))
        return 0.5

    with caplog.at_level(logging.INFO, logger="tuneyard.worker"):
        assert run(FakeService(), replicated(FOLDS), train, tmp_path, "w") == "complete"
    assert reprs == [
        "Trial(id=5, number=4, study=1, fold 4/5 of trial 7, resource 0..1, decision=None)"
    ]
    lines = [r.getMessage() for r in caplog.records if r.name == "tuneyard.worker"]
    assert "trial 5 (fold 4/5 of trial 7; study 1, attempt 1) starts: new, resource 0..1" in lines
    ends = [line for line in lines if " ends after " in line]
    assert len(ends) == 1 and ends[0].startswith(
        "trial 5 (fold 4/5 of trial 7; study 1, attempt 1)"
    )


# -- the variables and placeholders of a command --------------------------------------------------
def test_the_command_variables_name_only_what_the_replicate_has(tmp_path: Path) -> None:
    def env_of(info: ReplicateInfo | None) -> dict[str, str]:
        trial = Trial(FakeService(), 1, 5, 4, {}, 0, 1, tmp_path, replicate=info)
        env = trial_env(trial, "http://127.0.0.1:9", None, 1)
        return {k: v for k, v in env.items() if k in REPLICATE_ENV}

    assert env_of(None) == {}
    assert env_of(SEEDS) == {
        "TUNEYARD_SEED": "1",
        "TUNEYARD_REPLICATE": "1",
        "TUNEYARD_REPLICATES": "3",
        "TUNEYARD_PARENT_ID": "7",
    }
    assert env_of(BOTH) == {
        "TUNEYARD_FOLD": "2",
        "TUNEYARD_FOLDS": "5",
        "TUNEYARD_SEED": "1",
        "TUNEYARD_REPLICATE": "7",
        "TUNEYARD_REPLICATES": "15",
        "TUNEYARD_PARENT_ID": "7",
    }


@pytest.mark.parametrize("info", [None, FOLDS, SEEDS, BOTH])
def test_trial_from_env_reads_back_the_replicate_the_worker_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, info: ReplicateInfo | None
) -> None:
    given = Trial(FakeService(), 3, 11, 4, {"lr": 0.5}, 0, 9, tmp_path / "a", replicate=info)
    for name in REPLICATE_ENV:
        monkeypatch.delenv(name, raising=False)
    for name, value in trial_env(given, "http://127.0.0.1:9", None, 2).items():
        monkeypatch.setenv(name, value)
    back = trial_from_env()
    assert back.replicate_info == info
    assert attrs(back) == attrs(given)
    assert (back.trial_id, back.attempt, back.params) == (11, 2, {"lr": 0.5})


@pytest.mark.parametrize(
    ("unset", "change", "error"),
    [
        ("TUNEYARD_PARENT_ID", {}, "TUNEYARD_PARENT_ID is not set, though TUNEYARD_REPLICATE is"),
        (None, {"TUNEYARD_FOLD": "two"}, "TUNEYARD_FOLD must be a whole number, got 'two'"),
    ],
)
def test_a_replicate_variable_missing_or_wrong_is_named(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    unset: str | None,
    change: dict[str, str],
    error: str,
) -> None:
    given = Trial(FakeService(), 3, 11, 4, {}, 0, 9, tmp_path, replicate=BOTH)
    for name, value in {**trial_env(given, "http://127.0.0.1:9", None, 1), **change}.items():
        monkeypatch.setenv(name, value)
    if unset is not None:
        monkeypatch.delenv(unset)
    with pytest.raises(RuntimeError, match=error):
        trial_from_env()


# The process a command job runs: what it was given, written where its last argument says.
PROBE = f"""
import json, os, sys
import tuneyard
trial = tuneyard.trial_from_env()
seen = {{name: getattr(trial, name) for name in {ATTRS!r}}}
env = {{k: v for k, v in os.environ.items() if k in {tuple(REPLICATE_ENV)!r}}}
with open(sys.argv[-1], "w") as f:
    json.dump({{"trial": seen, "env": env, "argv": sys.argv[1:-1]}}, f)
"""


def run_command(
    tmp_path: Path, info: ReplicateInfo | None, template: list[str]
) -> tuple[str, dict[str, Any]]:
    """Run the probe as the job's command (a file: the template's braces are placeholders)."""
    probe, out = tmp_path / "probe.py", tmp_path / "seen.json"
    probe.write_text(PROBE)
    command = CommandObjective([sys.executable, str(probe), *template, str(out)], "http://x")
    store = FilesystemCheckpointStore(tmp_path / "shared")
    outcome = run_assignment(CommandService(), 1, replicated(info), command, store, tmp_path / "w")
    return outcome, json.loads(out.read_text()) if out.exists() else {}


def test_a_command_gets_its_replicate_as_variables_and_placeholders(tmp_path: Path) -> None:
    outcome, seen = run_command(tmp_path, BOTH, ["--fold={fold}/{folds}", "--seed={seed}"])
    assert outcome == "complete"
    assert seen["argv"] == ["--fold=2/5", "--seed=1"]
    assert seen["trial"] == BOTH_SEEN
    assert seen["env"]["TUNEYARD_FOLD"] == "2" and seen["env"]["TUNEYARD_PARENT_ID"] == "7"


def test_a_command_of_a_trial_not_replicated_gets_none_even_if_the_worker_had_some(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A worker started from inside a replicated job inherits that job's variables.
    monkeypatch.setenv("TUNEYARD_FOLD", "4")
    monkeypatch.setenv("TUNEYARD_REPLICATE", "4")
    outcome, seen = run_command(tmp_path, None, [])
    assert outcome == "complete"
    assert seen["env"] == {}
    assert seen["trial"] == dict.fromkeys(ATTRS)


def test_a_placeholder_the_replicate_lacks_is_refused_by_name(tmp_path: Path) -> None:
    trial = Trial(FakeService(), 1, 5, 4, {"lr": 0.1}, 0, 1, tmp_path, replicate=FOLDS)
    command = CommandObjective(["train", "--seed={seed}"], "http://x")
    shipper = LogShipper(FakeService(), 5, 1)
    with pytest.raises(CommandError, match=r"names \{seed\}, which is none of: .*fold, folds"):
        command.run(trial, 1, shipper, None, threading.Event())


# -- an Optuna-style objective --------------------------------------------------------------------
def test_an_optuna_objective_sees_fold_and_seed_as_attributes_and_user_attrs(
    tmp_path: Path,
) -> None:
    seen: dict[str, Any] = {}

    def fn(trial: CompatTrial) -> float:
        lr = trial.suggest_float("lr", 0.01, 1.0)
        seen.update(attrs(trial), user_attrs=dict(trial.user_attrs), text=repr(trial))
        trial.report(lr, 0)
        return lr

    svc = FakeService()
    assert run(svc, replicated(BOTH), objective(fn), tmp_path, "w") == "complete"
    assert seen.pop("user_attrs") == {"fold": 2, "seed": 1, "replicate": 7}
    assert "fold 3/5, seed 2/3 of trial 7" in seen.pop("text")
    assert seen == BOTH_SEEN
    # Which evaluation a report is is no metric of how it went.
    ((_tid, _step, _value, metrics),) = svc.args("report")
    assert metrics == {}


def test_a_user_attr_the_objective_sets_over_a_given_one_is_sent(tmp_path: Path) -> None:
    svc = FakeService()
    trial = CompatTrial(Trial(svc, 1, 5, 4, {}, 0, 9, tmp_path, replicate=SEEDS))
    trial.set_user_attr("seed", 42)
    trial.report(0.5, 1)
    assert svc.args("report")[0][3] == {"seed": 42.0}


def test_an_optuna_objective_of_a_trial_not_replicated_sees_nothing_new(tmp_path: Path) -> None:
    trial = CompatTrial(Trial(FakeService(), 1, 5, 4, {}, 0, 9, tmp_path))
    assert trial.user_attrs == {}
    assert attrs(trial) == dict.fromkeys(ATTRS)

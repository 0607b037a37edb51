"""The Python API as a notebook uses it: ``tuneyard.local()`` starts the embedded stack (on
SQLite) in this process, studies are created, run by local workers, and read back."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import tuneyard
from tuneyard import errors


def quadratic(trial: Any) -> float:
    """A bowl at x = 0.5, y = 2. Trials wait (up to 30 s) until a second one has started, so
    that the first worker cannot run every trial before the second worker has come up."""
    deadline = time.monotonic() + 30
    while trial.client.get_study(trial.study_id).trials_started < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    x, y = trial.params["x"], trial.params["y"]
    loss = (x - 0.5) ** 2 + (y - 2) ** 2
    for epoch in trial.epochs():
        trial.report(epoch, loss=loss + 1.0 / epoch)
    return loss


def definition(name: str, max_trials: int = 8) -> dict[str, Any]:
    return {
        "name": name,
        "metric": "loss",
        "direction": "minimize",
        "space": {
            "x": {"type": "float", "low": -2.0, "high": 2.0},
            "y": {"type": "int", "low": 0, "high": 4},
        },
        "sampler": {"type": "random", "seed": 5},
        "scheduler": {"type": "fifo", "max_resource": 2},
        "limits": {"max_trials": max_trials, "max_concurrent": 2},
    }


@pytest.fixture(scope="module")
def ty(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuneyard.Local]:
    with pytest.MonkeyPatch.context() as mp:
        # Its own Redis, database and tokens: nothing of the shared services or the shell.
        for var in ("TUNEYARD_REDIS_URL", "TUNEYARD_DATABASE_URL", "TUNEYARD_TOKEN"):
            mp.delenv(var, raising=False)
        with tuneyard.local(tmp_path_factory.mktemp("local")) as conn:
            yield conn
    # Leaving the block stopped every process of the stack.
    assert all(proc.poll() is not None for proc, _ in conn.stack.processes.values())


def test_optimize_with_two_worker_processes(ty: tuneyard.Local) -> None:
    study = ty.create_study(definition("notebook"))
    assert study.state == "running"
    assert tuneyard.Study.get(study.id).name == "notebook"

    study.optimize(quadratic, n_workers=2)

    assert study.wait(timeout=30).state == "completed"
    trials = list(study.trials())
    assert len(trials) == 8
    assert all(t.state == "completed" for t in trials)
    best = min(trials, key=lambda t: t.value if t.value is not None else float("inf"))
    assert study.best_params == best.params
    assert study.best_value == best.value
    assert study.best_trial.number == best.number
    # Both worker processes ran trials.
    workers = {ty.client.get_trial(t.id).worker for t in trials}
    assert len(workers) == 2, workers

    df = study.trials_dataframe()
    assert df.shape[0] == 8
    assert {"number", "state", "value", "params_x", "params_y"} <= set(df.columns)
    assert set(df["state"]) == {"completed"}
    assert df["value"].min() == pytest.approx(study.best_value)
    assert len(list(study.trials(state="completed"))) == 8


def test_optimize_a_notebook_function_in_threads(ty: tuneyard.Local) -> None:
    ran: list[tuple[int, float, float]] = []

    def objective(trial: Any) -> None:  # a closure: no process could import it
        state = trial.load(default={"epochs": 0})
        if state["epochs"] != int(trial.resource_from):
            raise RuntimeError(f"resumed at {trial.resource_from} from {state['epochs']} epochs")
        for epoch in trial.epochs():
            state["epochs"] = epoch
            trial.save(state)
            # Later trials are worse: the first ones pause at the rung, and are resumed.
            trial.report(epoch, loss=trial.number + 1.0 / epoch)
        ran.append((trial.number, trial.resource_from, trial.resource_to))

    spec = definition("asha", max_trials=6)
    spec["scheduler"] = {
        "type": "asha",
        "min_resource": 1,
        "max_resource": 3,
        "reduction_factor": 3,
    }
    study = tuneyard.Study.create(spec, ty)
    study.optimize(objective, n_workers=2)

    assert study.wait(timeout=30).state == "completed"
    trials = list(study.trials())
    assert not [t for t in trials if t.state == "failed"], [t.reason for t in trials]
    # A trial paused at the first rung was promoted and resumed from its checkpoint.
    assert any(start == 1 and end == 3 for _, start, end in ran), ran
    assert study.best_trial.resource == 3
    assert study.best_value == pytest.approx(min(t.value for t in trials if t.resource == 3))


def test_ask_tell_loop_ends_when_the_study_is_over(ty: tuneyard.Local) -> None:
    study = ty.create_study(definition("ask-tell", max_trials=5))
    told = 0
    for job in study.jobs(worker="nb"):
        loss = (job.params["x"] - 0.5) ** 2
        for epoch in job.epochs():
            job.report(epoch, loss=loss)
        assert job.complete() == "complete"
        told += 1
    # The loop ended by itself, without an exception, once every trial was told.
    assert told == 5
    assert study.info.state == "completed"
    with pytest.raises(errors.Conflict):  # the client's 409 is the server's Conflict
        study.pause()


def test_ask_tell_jobs_pause_and_resume_from_what_they_saved(ty: tuneyard.Local) -> None:
    spec = definition("ask-tell-asha", max_trials=6)
    spec["scheduler"] = {
        "type": "asha",
        "min_resource": 1,
        "max_resource": 3,
        "reduction_factor": 3,
    }
    study = ty.create_study(spec)
    ended, resumed = [], []
    for job in study.jobs():
        state = job.load(default={"epochs": 0})
        assert state["epochs"] == int(job.resource_from)
        if job.resource_from > 0:
            resumed.append(job.number)
        for epoch in job.epochs():
            state["epochs"] = epoch
            job.save(state)
            job.report(epoch, loss=job.number + 1.0 / epoch)
        ended.append(job.complete())
    assert "pause" in ended and resumed, ended
    assert study.info.state == "completed"
    assert study.best_trial.number in resumed


def serve_with_a_worker_process(ty: tuneyard.Local, study: tuneyard.Study, tmp: Path) -> None:
    """`tuneyard worker` started on its own with a worker token, as on another machine, until
    the study is over."""
    token = ty.client.create_token("separate worker", "worker", queues=["nb"]).token
    env = {
        **os.environ,
        "TUNEYARD_TOKEN": token,
        "TUNEYARD_REDIS_URL": ty.stack.redis_url,
        "PYTHONPATH": os.pathsep.join([str(Path.cwd()), os.environ.get("PYTHONPATH", "")]),
    }
    cmd = [sys.executable, "-m", "tuneyard.cli", "worker", "--api", ty.url, "--queue", "nb"]
    cmd += ["--slots", "1", "--allow", "tests.e2e.*", "--data-dir", str(tmp)]
    with open(tmp / "worker.log", "wb") as log:
        worker = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            out = study.wait(timeout=120, poll=0.5)
        finally:
            worker.terminate()
            worker.wait(30)
    assert out.state == "completed", (tmp / "worker.log").read_text()[-3000:]


def test_optimize_part_then_a_worker_started_separately_serves_the_same_study(
    ty: tuneyard.Local, tmp_path: Path
) -> None:
    spec = definition("served", max_trials=8)
    spec["execution"] = {"entrypoint": "tests.e2e.test_python_api:quadratic", "queue": "nb"}
    study = ty.create_study(spec)
    # The notebook runs four trials on two local worker processes and reads the results...
    study.optimize(quadratic, n_workers=2, n_trials=4)
    assert study.state == "running"
    trials = list(study.trials())
    assert len(trials) == 4 and all(t.state == "completed" for t in trials), trials
    assert len({ty.client.get_trial(t.id).worker for t in trials}) == 2
    best = min(trials, key=lambda t: t.value if t.value is not None else float("inf"))
    assert study.best_params == best.params
    df = study.trials_dataframe()
    assert list(df["number"]) == sorted(t.number for t in trials)
    assert df["value"].min() == pytest.approx(best.value)

    # ...then leaves the rest to a worker process started on its own, as on another machine.
    serve_with_a_worker_process(ty, study, tmp_path)
    later = [t for t in study.trials() if t.id not in {t.id for t in trials}]
    assert len(later) == 4 and all(t.state == "completed" for t in later)
    served = {ty.client.get_trial(t.id).worker for t in later}
    assert served and not served & {ty.client.get_trial(t.id).worker for t in trials}, served
    assert len(study.trials_dataframe()) == 8


def test_an_ask_tell_loop_hands_over_to_a_worker_process(
    ty: tuneyard.Local, tmp_path: Path
) -> None:
    spec = definition("handed-over", max_trials=6)
    spec["execution"] = {"entrypoint": "tests.e2e.test_python_api:quadratic", "queue": "nb"}
    study = ty.create_study(spec)
    # The notebook evaluates two trials itself, then leaves the rest to a worker process.
    for done, job in enumerate(study.jobs(worker="nb"), start=1):
        job.report(1, loss=0.0)
        job.complete()
        if done == 2:
            break
    assert study.state == "running"
    serve_with_a_worker_process(ty, study, tmp_path)
    trials = list(study.trials())
    assert len(trials) == 6
    served = [ty.client.get_trial(t.id).worker for t in trials]
    assert served.count("nb") == 2
    assert all(w and w != "nb" for w in served if w != "nb"), served


def test_stopping_a_study_ends_its_ask_tell_loop(ty: tuneyard.Local) -> None:
    study = ty.create_study(definition("stopped", max_trials=50))
    numbers = []
    for job in study.jobs():
        numbers.append(job.number)
        job.complete(1.0)
        if len(numbers) == 2:
            study.stop()
    assert len(numbers) == 2
    assert study.state == "stopped"


def test_a_bad_definition_raises_an_error_naming_the_field(ty: tuneyard.Local) -> None:
    bad = definition("bad")
    bad["space"]["x"] = {"type": "float", "low": 3.0, "high": 1.0}
    with pytest.raises(errors.InvalidRequest) as caught:
        ty.create_study(bad)
    assert isinstance(caught.value, errors.TuneyardError)
    assert "space.x" in str(caught.value)
    with pytest.raises(errors.NotFound):
        tuneyard.Study.get(10_000, ty)


def test_a_definition_file_and_the_dataframe_without_pandas(
    ty: tuneyard.Local, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "study.yaml"
    path.write_text(
        "name: from-file\nmetric: loss\nspace:\n  x: {type: float, low: 0, high: 1}\n"
        "limits: {max_trials: 1}\n"
    )
    study = ty.create_study(path)
    assert study.info.spec.name == "from-file"
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(ImportError, match=r"tuneyard\[notebook\]"):
        study.trials_dataframe()


def test_connect_to_a_running_server_with_a_token(ty: tuneyard.Local) -> None:
    made = ty.create_study(definition("remote", max_trials=1))
    with tuneyard.connect(ty.url, token=ty.token) as remote:
        # The connection opened last is the default one.
        study = tuneyard.Study.get(made.id)
        assert study.connection is remote
        assert study.name == "remote"
        assert [s.id for s in remote.studies() if s.id == made.id] == [made.id]
    with (
        tuneyard.connect(ty.url, token="ty_not-a-token") as stranger,
        pytest.raises(errors.Unauthorized),
    ):
        stranger.study(made.id)
    # Both closed: the default is the local stack again.
    assert tuneyard.Study.get(made.id).connection is ty

"""A study as a notebook sees it: create or look it up, run its trials, read its results.

    with tuneyard.local() as ty:
        study = ty.create_study({"name": "demo", "metric": "loss", ...})
        study.optimize(train, n_workers=2)
        study.best_params

Every property reads the service afresh (no cached state that could go stale while remote
workers serve the same study)."""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tuneyard import errors
from tuneyard.notebook.connection import Connection, current
from tuneyard.notebook.workers import (
    Job,
    Objective,
    ask,
    entrypoint_of,
    run_in_processes,
    run_in_threads,
)
from tuneyard.protocol import ParetoOut, StudyOut, TrialSummary
from tuneyard.states import FINAL_STUDY_STATES
from tuneyard.worker.local import TrialBudget

if TYPE_CHECKING:
    import pandas


def read_definition(definition: Mapping[str, Any] | str | os.PathLike[str]) -> dict[str, Any]:
    """A study definition as a mapping: given as one, or read from a YAML or JSON file."""
    if isinstance(definition, Mapping):
        return dict(definition)
    path = Path(definition)
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".json":
        data = json.loads(text)
    else:
        import yaml

        data = yaml.safe_load(text)
    if not isinstance(data, dict):
        raise errors.InvalidRequest(
            f"{path.name} holds a {type(data).__name__}, not a mapping of study fields"
        )
    return data


def _named_fields(exc: errors.ApiError) -> None:
    """Put the invalid fields of the server's 422 in its message (``field: problem``) when
    its detail does not name them already."""
    named = []
    for e in exc.errors:
        if isinstance(e, dict):
            # Ours carry ``field``; FastAPI's own shape carries ``loc`` (after "body").
            loc = e.get("field") or ".".join(str(p) for p in e.get("loc", [])[1:])
            named.append(f"{loc}: {e.get('message') or e.get('msg', '')}")
    if named and not all(n.split(":")[0] in exc.detail for n in named):
        exc.args = (f"{exc.args[0]} ({'; '.join(named)})",)


class Study:
    """A study of the service at ``connection`` (default: the connection opened last)."""

    def __init__(self, study_id: int, name: str, connection: Connection | None = None) -> None:
        self.id = study_id
        self.name = name
        self.connection = connection or current()

    def __repr__(self) -> str:
        return f"Study(id={self.id}, name={self.name!r})"

    @classmethod
    def create(
        cls,
        definition: Mapping[str, Any] | str | os.PathLike[str],
        connection: Connection | None = None,
    ) -> Study:
        """A new study from a definition (a mapping, or a YAML or JSON file's path). An invalid
        one raises :class:`tuneyard.errors.InvalidRequest` naming the fields at fault."""
        conn = connection or current()
        try:
            out = conn.client.create_study(read_definition(definition))
        except errors.ApiError as exc:
            if exc.status in (400, 422):
                _named_fields(exc)
            raise
        return cls(out.id, out.name, conn)

    @classmethod
    def get(cls, study_id: int, connection: Connection | None = None) -> Study:
        """The study with this id; :class:`tuneyard.errors.NotFound` when there is none."""
        conn = connection or current()
        out = conn.client.get_study(study_id)
        return cls(out.id, out.name, conn)

    # -- state -----------------------------------------------------------------------------
    @property
    def info(self) -> StudyOut:
        """The study as the service has it now: state, reason, counts, best trial, definition."""
        return self.connection.client.get_study(self.id)

    @property
    def state(self) -> str:
        return str(self.info.state)

    def pause(self) -> StudyOut:
        """Start no new trials; running ones pause at their next report."""
        return self.connection.client.pause_study(self.id)

    def resume(self) -> StudyOut:
        return self.connection.client.resume_study(self.id)

    def stop(self) -> StudyOut:
        """End the study for good: no new trials, and ``jobs``/``optimize`` return."""
        return self.connection.client.stop_study(self.id)

    def wait(self, timeout: float | None = None, poll: float = 1.0) -> StudyOut:
        """Block until the study is over (completed, failed, exhausted or stopped), whoever
        runs its trials; TimeoutError after ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            out = self.info
            if out.state in FINAL_STUDY_STATES:
                return out
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(
                    f"study {self.id} is still {out.state} after {timeout:g} s "
                    f"({out.trials_started} trials started)"
                )
            time.sleep(poll)

    # -- running trials --------------------------------------------------------------------
    def optimize(
        self,
        fn: Objective,
        n_workers: int = 4,
        timeout: float | None = None,
        n_trials: int | None = None,
    ) -> Study:
        """Run ``fn(trial)`` on ``n_workers`` local workers until the study is over, for at
        most ``timeout`` seconds, or until these workers have started ``n_trials`` new
        trials (each worker then returns once its current job ends; trials paused at a rung
        wait for the next call, or for other workers). ``trial`` is the handle every tuneyard
        worker gives an objective (``params``, ``report``, ``epochs``, ``save``, ``load``).

        An importable ``fn`` runs in worker processes; one defined in the notebook runs in
        threads. Other workers (``tuneyard worker`` elsewhere) may serve the same study
        meanwhile: they all ask the service for the next trial."""
        if n_workers < 1:
            raise ValueError(f"n_workers must be at least 1, got {n_workers}")
        budget = None if n_trials is None else TrialBudget(n_trials)
        conn = self.connection
        deadline = None if timeout is None else time.monotonic() + timeout
        data_dir = conn.data_dir / f"study-{self.id}"
        data_dir.mkdir(parents=True, exist_ok=True)
        entrypoint = entrypoint_of(fn)
        if entrypoint is None:
            run_in_threads(conn.client, self.id, fn, n_workers, data_dir, deadline, budget)
            return self
        codes = run_in_processes(
            conn.client, self.id, entrypoint, n_workers, data_dir, conn.token, deadline, budget
        )
        crashed = [f"worker {i} (exit code {c})" for i, c in enumerate(codes) if c]
        if crashed and deadline is None:
            raise RuntimeError(
                f"local workers of study {self.id} failed: {', '.join(crashed)}; "
                "their tracebacks are above"
            )
        return self

    def jobs(self, worker: str | None = "notebook", poll: float = 0.5) -> Iterator[Job]:
        """An ask/tell loop: each job is a trial to evaluate, until the study is over.

        for job in study.jobs():
            job.report(1, loss=evaluate(job.params))
            job.complete()
        """
        with tempfile.TemporaryDirectory(prefix=f"tuneyard-study-{self.id}-") as tmp:
            yield from ask(self.connection.client, self.id, worker, Path(tmp), poll)

    # -- results ---------------------------------------------------------------------------
    @property
    def best_trial(self) -> TrialSummary:
        """The best completed trial; :class:`tuneyard.errors.NotFound` before there is one."""
        best = self.info.best
        if best is None:
            raise errors.NotFound(f"study {self.id} has no completed trial yet")
        return best

    @property
    def best_params(self) -> dict[str, Any]:
        return self.best_trial.params

    @property
    def best_value(self) -> float | None:
        return self.best_trial.value

    @property
    def pareto(self) -> ParetoOut:
        """The non-dominated completed trials of a study with several objectives."""
        return self.connection.client.get_pareto(self.id)

    def trials(self, state: str | None = None) -> Iterator[TrialSummary]:
        """Every trial (or those in ``state``: running, completed, …), by number."""
        return self.connection.client.iter_trials(self.id, state)

    def trials_dataframe(self, state: str | None = None) -> pandas.DataFrame:
        """One row per trial: number, state, value, resource, rung, attempts, reason, a
        ``params_<name>`` column per parameter and a ``values_<metric>`` column per
        objective of a study with several. Needs pandas (the ``notebook`` extra)."""
        try:
            import pandas
        except ImportError as exc:
            raise ImportError(
                "trials_dataframe needs pandas: pip install 'tuneyard[notebook]'"
            ) from exc
        rows = []
        for t in self.trials(state):
            row: dict[str, Any] = {
                "number": t.number,
                "id": t.id,
                "state": str(t.state),
                "value": t.value,
                "resource": t.resource,
                "rung": t.rung,
                "attempts": t.attempts,
                "reason": t.reason,
                "created_at": t.created_at,
                "updated_at": t.updated_at,
            }
            row.update({f"params_{k}": v for k, v in t.params.items()})
            row.update({f"values_{k}": v for k, v in (t.values or {}).items()})
            rows.append(row)
        columns = ["number", "id", "state", "value", "resource", "rung", "attempts", "reason"]
        return pandas.DataFrame(rows, columns=None if rows else columns)

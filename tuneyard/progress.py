"""A live progress bar of one study, polled from the API: `tuneyard study watch` and the
embedded demo both show it."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from tuneyard.client import ApiError, Client
from tuneyard.states import FINAL_STUDY_STATES, FINAL_TRIAL_STATES, StudyState, TrialState

if TYPE_CHECKING:
    from tuneyard.protocol import StudyOut

# Trial states a trial does not leave: the bar counts these as done.
FINISHED_TRIALS = FINAL_TRIAL_STATES
# Study states watching ends in: those it does not leave, and failing (it starts nothing
# until someone fixes its code and resumes it).
FINISHED_STUDIES = FINAL_STUDY_STATES | {StudyState.FAILING}


@dataclass(frozen=True)
class Watched:
    """How watching ended: the study's last answer, or what went wrong before it was over."""

    study: StudyOut | None
    problem: str | None = None


def trials_done(counts: Mapping[str, int]) -> int:
    return sum(counts.get(s, 0) for s in FINISHED_TRIALS)


def best_value(s: StudyOut) -> str:
    return f"{s.best.value:.4f}" if s.best and s.best.value is not None else "-"


def status_line(s: StudyOut) -> str:
    c = s.counts
    return (
        f"running {c.get(TrialState.RUNNING, 0)}  paused {c.get(TrialState.PAUSED, 0)}  "
        f"queued {c.get(TrialState.QUEUED, 0)}  failed {c.get(TrialState.FAILED, 0)}  "
        f"best {s.spec.metric} {best_value(s)}  [{s.state}]"
    )


def watch_study(
    client: Client,
    study_id: int,
    console: Console,
    *,
    interval: float,
    problem: Callable[[], str | None] = lambda: None,
    sleep: Callable[[float], None] = time.sleep,
    plain: bool = False,
) -> Watched:
    """Poll the study every ``interval`` seconds, drawing its progress, until it is over.

    ``problem`` names a component that died (e.g. the embedded server): it ends the watch,
    and it explains an API that stopped answering; without one an :class:`ApiError` is raised.
    ``plain`` prints a line at each change instead of a live bar (for a pipe or a log file).
    """
    if plain:
        return _watch_plain(client, study_id, console, interval, problem, sleep)
    with Progress(
        TextColumn("[bold]trials"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        console=console,
    ) as bar:
        task = bar.add_task("trials", total=None, status="")
        while True:
            try:
                s = client.get_study(study_id)
            except ApiError:
                trouble = problem()  # a dead server explains an unreachable API
                if trouble is not None:
                    return Watched(None, trouble)
                raise
            bar.update(
                task,
                total=s.spec.limits.max_trials,
                completed=trials_done(s.counts),
                status=status_line(s),
            )
            if s.state in FINISHED_STUDIES:
                return Watched(s)
            trouble = problem()
            if trouble is not None:
                return Watched(s, trouble)
            sleep(interval)


def progress_line(s: StudyOut) -> str:
    """One line of a plain watch: trials done of the budget, then the status."""
    return f"trials {trials_done(s.counts)}/{s.spec.limits.max_trials}  {status_line(s)}"


def _watch_plain(
    client: Client,
    study_id: int,
    console: Console,
    interval: float,
    problem: Callable[[], str | None],
    sleep: Callable[[float], None],
) -> Watched:
    """``watch_study`` for an output that is no terminal: a line each time the progress
    changes, with the time, and nothing while it does not."""
    last = None
    while True:
        try:
            s = client.get_study(study_id)
        except ApiError:
            trouble = problem()
            if trouble is not None:
                return Watched(None, trouble)
            raise
        line = progress_line(s)
        if line != last:
            console.print(f"{time.strftime('%H:%M:%S')} {line}", markup=False, highlight=False)
            console.file.flush()
            last = line
        if s.state in FINISHED_STUDIES:
            return Watched(s)
        trouble = problem()
        if trouble is not None:
            return Watched(s, trouble)
        sleep(interval)

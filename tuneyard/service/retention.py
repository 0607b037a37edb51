"""Deleting checkpoints nobody can resume any more, and keeping the best models.

What a trial stores: archives uploaded to this server (``<data_dir>/checkpoints-api/
study-S/trial-T/<sha256>.tar.gz``, one per save), or one directory ``…/study-S/trial-T``
under a shared checkpoint root that workers save into in place. Its ``checkpoint`` names the
one it resumes from, and once it has completed, its model.

- A checkpoint superseded by a newer one, and every checkpoint of a trial that stopped or
  failed, is deleted ``checkpoint_retention`` seconds after that happened (0: at the next
  sweep). An upload that no call ever named (its worker died between the upload and the
  call) counts as superseded ``PENDING_GRACE`` seconds after it arrived.
- A completed trial keeps its checkpoint as its model while it ranks among the best
  ``limits.keep_models`` completed trials of its study that have one; the others' models are
  deleted at the next sweep.

The sweep runs in the API server (the process that holds the uploaded archives), every
``checkpoint_sweep_every`` seconds, never on the report or next path. It reads only trials
whose ``sweep_at`` has come (set when one of the events above happens; an index serves it),
at most ``limit`` per run, each under its row lock. Directories under shared roots are
deleted only where this server sees them, and only a trial's own ``…/study-S/trial-T``.
"""

from __future__ import annotations

import logging
import shutil
import threading
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import literal_column, select

from tuneyard.service.checkpoint_locations import API_PREFIX, own_directory, uploaded_folder
from tuneyard.service.context import Toolkit
from tuneyard.spec import StudySpec
from tuneyard.states import TrialState
from tuneyard.store.models import Study, Trial

log = logging.getLogger("tuneyard.retention")

# An uploaded archive that no /pause, /release, /complete or checkpoint call named within
# this many seconds is taken as abandoned (the call follows the upload within seconds).
PENDING_GRACE = 600.0
# Trials the sweep looks at per run.
SWEEP_LIMIT = 200
_ENDED = (TrialState.STOPPED, TrialState.FAILED)


@dataclass
class SweepResult:
    trials: int = 0  # trials looked at
    deleted: int = 0  # archives and directories deleted
    models_dropped: int = 0  # completed trials whose model was deleted (out of the top K)


def _mtime(path: Path) -> datetime | None:
    try:
        return datetime.fromtimestamp(path.stat().st_mtime, UTC)
    except FileNotFoundError:
        return None


def prune_folder(
    folder: Path,
    keep: Collection[str | None],
    now: datetime,
    retention: float,
    grace: float = PENDING_GRACE,
) -> tuple[int, datetime | None]:
    """Delete the archives of one trial's upload folder that are due; returns how many were
    deleted and when the next one left is due (None: none is).

    ``keep`` are digests never deleted here (the one the trial refers to, one just stored).
    File times are compared with ``now``, the service's clock. Any other archive was
    superseded when the next newer one arrived, and is due ``retention`` seconds after that;
    the newest, when it is not ``keep``, is an upload no call named yet, due ``max(retention,
    grace)`` seconds after it arrived."""
    try:
        entries = [p for p in folder.iterdir() if p.name.endswith(".tar.gz")]
    except FileNotFoundError:
        return 0, None
    dated = sorted(((t, p) for p in entries if (t := _mtime(p)) is not None), key=lambda x: x[0])
    deleted = 0
    due_next: datetime | None = None
    for i, (when, path) in enumerate(dated):
        if path.name.removesuffix(".tar.gz") in keep:
            continue
        if i + 1 < len(dated):
            due = dated[i + 1][0] + timedelta(seconds=retention)
        else:
            due = when + timedelta(seconds=max(retention, grace))
        if due <= now:
            path.unlink(missing_ok=True)
            deleted += 1
        elif due_next is None or due < due_next:
            due_next = due
    return deleted, due_next


def delete_stored(kit: Toolkit, trial: Trial) -> int:
    """Delete everything stored for ``trial``: its uploaded archives, and the directory its
    checkpoint names when that is its own directory under one of this server's roots."""
    deleted = 0
    folder = uploaded_folder(kit.settings, trial.study_id, trial.id)
    if folder.is_dir():
        deleted += sum(1 for p in folder.iterdir() if p.name.endswith(".tar.gz"))
        shutil.rmtree(folder, ignore_errors=True)
    location = trial.checkpoint
    if location and not location.startswith(API_PREFIX):
        own = own_directory(kit.settings, trial.study_id, trial.id, location)
        if own is not None and own.is_dir():
            shutil.rmtree(own, ignore_errors=True)
            deleted += 1
    return deleted


class CheckpointSweep:
    def __init__(self, kit: Toolkit) -> None:
        self.kit = kit

    def run(self, limit: int = SWEEP_LIMIT) -> SweepResult:
        """One bounded pass over the trials whose ``sweep_at`` has come."""
        now = self.kit.clock()
        result = SweepResult()
        with self.kit.transaction() as s:
            due = list(
                s.scalars(
                    select(Trial.id)
                    .where(Trial.sweep_at <= now)
                    .order_by(Trial.sweep_at)
                    .limit(limit)
                )
            )
        ranked: set[int] = set()
        for trial_id in due:
            study_id = self._one(trial_id, now, result)
            if study_id is not None and study_id not in ranked:
                ranked.add(study_id)
                self._keep_best(study_id, result)
        return result

    def _one(self, trial_id: int, now: datetime, result: SweepResult) -> int | None:
        """Look at one trial under its row lock; returns its study when it holds a model."""
        retention = self.kit.settings.checkpoint_retention
        with self.kit.transaction() as s:
            trial = s.scalar(
                select(Trial)
                .where(Trial.id == trial_id)
                .with_for_update(skip_locked=True)
                .execution_options(populate_existing=True)
            )
            if trial is None or trial.sweep_at is None or trial.sweep_at > now:
                return None  # deleted, busy (looked at next run), or done by another process
            result.trials += 1
            if trial.state in _ENDED:
                ended = trial.ended_at or now
                due = ended + timedelta(seconds=retention)
                if due > now:
                    trial.sweep_at = due
                    return None
                result.deleted += delete_stored(self.kit, trial)
                trial.checkpoint = None
                trial.sweep_at = None
                return None
            keep = None
            if trial.checkpoint and trial.checkpoint.startswith(API_PREFIX):
                keep = trial.checkpoint.rsplit("/", 1)[-1]
            folder = uploaded_folder(self.kit.settings, trial.study_id, trial.id)
            deleted, due_next = prune_folder(folder, {keep}, now, retention)
            result.deleted += deleted
            trial.sweep_at = due_next
            if trial.state == TrialState.COMPLETED and trial.checkpoint is not None:
                return trial.study_id
            return None

    def _keep_best(self, study_id: int, result: SweepResult) -> None:
        """Delete the models of the study's completed trials beyond its best ``keep_models``."""
        with self.kit.transaction() as s:
            raw = s.scalar(select(Study.spec).where(Study.id == study_id))
            if raw is None:
                return
            spec = StudySpec.from_stored(raw)
            order = Trial.value.desc() if spec.direction == "maximize" else Trial.value.asc()
            beyond = list(
                s.scalars(
                    select(Trial.id)
                    .where(
                        Trial.study_id == study_id,
                        # Written out, as the partial index's predicate is, so it serves.
                        Trial.state == literal_column("'completed'"),
                        Trial.checkpoint.is_not(None),
                    )
                    .order_by(order, Trial.id)
                    .offset(spec.limits.keep_models)
                )
            )
        for trial_id in beyond:
            with self.kit.transaction() as s:
                trial = s.scalar(
                    select(Trial)
                    .where(Trial.id == trial_id)
                    .with_for_update()
                    .execution_options(populate_existing=True)
                )
                if trial is None or trial.checkpoint is None:
                    continue
                result.deleted += delete_stored(self.kit, trial)
                result.models_dropped += 1
                trial.checkpoint = None
                trial.sweep_at = None


class Sweeper:
    """Runs :class:`CheckpointSweep` every ``interval`` seconds in a daemon thread of the API
    process, until stopped; a failed pass is logged and tried again at the next."""

    def __init__(self, kit: Toolkit, interval: float) -> None:
        self.kit = kit
        self.interval = interval
        self.stop_event = threading.Event()
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        """Start sweeping; an app whose lifespan runs again (a test client per test) gets a
        thread of its own each time."""
        if self.interval <= 0 or (self.thread is not None and self.thread.is_alive()):
            return
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="checkpoint-sweep", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.stop_event.set()
        if self.thread is not None and self.thread.is_alive():
            self.thread.join(timeout=10)

    def _loop(self) -> None:
        while not self.stop_event.wait(self.interval):
            try:
                done = CheckpointSweep(self.kit).run()
            except Exception:
                log.exception("checkpoint sweep failed; trying again in %s s", self.interval)
                continue
            if done.deleted:
                log.info(
                    "checkpoint sweep: %s trials looked at, %s checkpoints deleted "
                    "(%s models beyond their study's keep_models)",
                    done.trials,
                    done.deleted,
                    done.models_dropped,
                )

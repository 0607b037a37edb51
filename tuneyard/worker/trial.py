"""The ``trial`` handle a user's objective receives.

def train(trial):
    model = trial.load() or build(trial.params)
    for epoch in trial.epochs():          # follows pauses, stops and promotions
        fit_one_epoch(model)
        trial.report(epoch, val_error=evaluate(model))
    trial.save(model)
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import shutil
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol

from tuneyard.protocol import ReplicateInfo, ReportOut

log = logging.getLogger("tuneyard.worker")
TERMINAL = frozenset({"pause", "stop", "complete"})
_ZIP_MAGIC = b"PK\x03\x04"  # torch.save's default (zip) format; a pickle starts with 0x80


class TrialStopped(RuntimeError):
    """Raised by ``report`` after the service already said pause, stop or complete."""


class Reporter(Protocol):
    def report(
        self,
        trial_id: int,
        step: float,
        value: float | None = None,
        *,
        attempt: int,
        **metrics: float | None,
    ) -> ReportOut: ...


class Trial:
    """One job of one trial: its parameters, its resource range and a checkpoint directory.

    ``resource_to`` moves up when the service promotes the trial on the spot; ``decision`` is
    the last answer to a report (None before the first). ``attempt`` is the attempt of the
    trial this job is, as ``next`` handed it out: every call about the trial names it, and
    once the service says it is no longer the live one (``stale``) the job stops.

    In a study with ``evaluation`` each job is one replicate of a configuration: ``fold`` (of
    ``folds``) is the cross-validation fold to hold out, ``seed`` the seed number to derive
    the random state from, ``replicate`` its index among ``replicates``, and ``parent_id`` the
    configuration's trial (``trial_id`` is the replicate's own, which reports name). All of
    them are None for a trial that is not replicated, and ``fold`` or ``seed`` alone is None
    when the study gives no folds or no seeds.

    A trial with several GPUs runs as ``world_size`` processes under torchrun, one per GPU;
    ``rank`` is this one's. Rank 0 alone talks to the service and writes checkpoints: on
    the other ranks :meth:`save` writes nothing, and :meth:`report` sends nothing and returns
    the decision rank 0 got, which rank 0 broadcasts over the default torch.distributed
    process group. So once the group is initialised, every rank calls ``report`` at the same
    steps (a collective, like DDP's own), and all ranks leave :meth:`epochs` together. Without
    a process group a rank other than 0 cannot learn the decision, and its report raises."""

    def __init__(
        self,
        client: Reporter,
        study_id: int,
        trial_id: int,
        number: int,
        params: dict[str, Any],
        resource_from: float,
        resource_to: float,
        checkpoint_dir: Path,
        attempt: int = 1,
        replicate: ReplicateInfo | None = None,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(
                f"rank must be in 0..world_size - 1 and world_size at least 1, got rank "
                f"{rank} of world_size {world_size}"
            )
        self.rank = rank
        self.world_size = world_size
        self.client = client
        self.attempt = attempt
        self.study_id = study_id
        self.trial_id = trial_id
        self.number = number
        self.params = params
        self.resource_from = resource_from
        self.resource_to = resource_to
        self.checkpoint_dir = Path(checkpoint_dir)
        self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        self.replicate_info = replicate
        self.decision: str | None = None
        self.reason: str | None = None
        self.last_step: float | None = None
        self.last_value: float | None = None
        # Set when the worker is stopping: the next report pauses the trial here, and the
        # worker hands it back with the checkpoint instead of telling the service to pause.
        self.interrupted: str | None = None
        self.handed_back = False
        # Under torchrun the worker asks rank 0 to pause by creating this file rather than by
        # a signal: a SIGTERM that lands in a collective's thread (gloo, NCCL) can abort the
        # rank before its report, and the trial would restart from its start.
        self.stop_file: Path | None = None
        # Set when the service refused a call of this attempt as stale: the trial runs again
        # elsewhere (or waits to), so this job ends without telling the service anything.
        self.stale: str | None = None
        # execution.checkpoint_every: the worker sets both. ``on_checkpoint(step)`` stores the
        # checkpoint directory and tells the service the trial resumes from there, at step.
        self.checkpoint_every: float | None = None
        self.on_checkpoint: Callable[[float], None] | None = None
        self._epoch: int | None = None  # the epoch epochs() is running
        self._saves = 0
        self._saved_at: float | None = None  # the epoch of the latest save
        self._kept_saves = 0  # saves made before the latest upload
        self.kept_at = resource_from  # the step of the latest upload (the job's start)

    def revoke(self, reason: str) -> None:
        """This attempt is no longer the trial's live one: the next report stops the job
        without sending anything (safe to call from any thread)."""
        self.stale = reason

    def interrupt(self, reason: str) -> None:
        """Stop at the next report as if told to pause (safe to call from any thread or a
        signal handler); the worker then hands the trial back with its checkpoint."""
        self.interrupted = reason

    # -- the replicate (evaluation studies) ------------------------------------------------
    @property
    def fold(self) -> int | None:
        """The cross-validation fold to hold out, 0 .. folds - 1; None without folds."""
        return self.replicate_info.fold if self.replicate_info else None

    @property
    def folds(self) -> int | None:
        """How many folds the study's data is split into; None without folds."""
        return self.replicate_info.folds if self.replicate_info else None

    @property
    def seed(self) -> int | None:
        """The seed number, 0 .. seeds - 1, to derive this run's random state from (with the
        study's own seed, if it has one); None without seeds."""
        return self.replicate_info.seed if self.replicate_info else None

    @property
    def replicate(self) -> int | None:
        """This replicate's index among its configuration's, 0 .. replicates - 1."""
        return self.replicate_info.index if self.replicate_info else None

    @property
    def replicates(self) -> int | None:
        """How many replicates each configuration has (folds x seeds)."""
        return self.replicate_info.of if self.replicate_info else None

    @property
    def parent_id(self) -> int | None:
        """The trial id of the configuration this replicate evaluates."""
        return self.replicate_info.parent_id if self.replicate_info else None

    def describe_replicate(self) -> str | None:
        """Which replicate this job evaluates, as a reader of the worker's output wants it:
        ``fold 2/5``, ``seed 1/3`` or ``fold 2/5, seed 1/3``, counted from 1 (None when not
        replicated)."""
        return None if self.replicate_info is None else replicate_label(self.replicate_info)

    def __repr__(self) -> str:
        which = ""
        if self.replicate_info is not None:
            which = f", {self.describe_replicate()} of trial {self.parent_id}"
        return (
            f"Trial(id={self.trial_id}, number={self.number}, study={self.study_id}{which}, "
            f"resource {self.resource_from:g}..{self.resource_to:g}, decision={self.decision})"
        )

    @property
    def should_stop(self) -> bool:
        """True once the service answered pause, stop or complete."""
        return self.decision in TERMINAL

    def report(self, step: float, value: float | None = None, **metrics: float | None) -> str:
        """Send an intermediate result; returns the decision (continue, pause, stop, complete).

        Give the study's metric as ``value`` or by name (``val_error=0.1``). A ``continue``
        whose ``resource_to`` is larger is an on-the-spot promotion: the trial keeps training
        up to the new end, which :meth:`epochs` follows. After pause, stop or complete the
        objective should return; reporting again raises :class:`TrialStopped`.

        Under torchrun (``world_size`` > 1) every rank calls it at the same steps; rank 0's
        report is the one sent, and each rank returns its decision."""
        if self.should_stop:
            raise TrialStopped(
                f"trial {self.trial_id} was told to {self.decision} ({self.reason}); "
                "end the objective instead of reporting again"
            )
        decision = self._send(step, value, metrics) if self.rank == 0 else None
        if self.world_size > 1:
            decision = self._share_decision()
        if decision is None:
            raise RuntimeError(f"trial {self.trial_id}: rank {self.rank} got no decision")
        return decision

    def _send(self, step: float, value: float | None, metrics: dict[str, float | None]) -> str:
        """Rank 0's report: sent to the service, its answer applied."""
        from tuneyard.client import StaleAttempt

        if self.stop_file is not None and not self.interrupted and self.stop_file.exists():
            self.interrupted = "the worker is stopping"
        if self.stale is None:
            try:
                ans = self.client.report(
                    self.trial_id, step, value, attempt=self.attempt, **metrics
                )
            except StaleAttempt as exc:
                self.stale = exc.detail
        if self.stale is not None:
            self.decision, self.reason = "stop", self.stale
            return self.decision
        self.decision, self.reason = ans.decision, ans.reason
        self.last_step, self.last_value = step, ans.value
        if ans.decision == "continue" and ans.resource_to is not None:
            self.resource_to = max(self.resource_to, ans.resource_to)
        if ans.decision == "continue" and self.interrupted:
            self.decision, self.reason = "pause", self.interrupted
            self.handed_back = True
        return self.decision

    def _share_decision(self) -> str | None:
        """Rank 0 broadcasts what its report got; the other ranks take it as their own."""
        dist = _process_group()
        if dist is None:
            if self.rank == 0:
                return self.decision  # the other ranks cannot hear it; theirs raise and say why
            raise RuntimeError(
                f"trial.report on rank {self.rank} of {self.world_size}: only rank 0 reports, "
                "and the others learn its decision through torch.distributed; call "
                "torch.distributed.init_process_group() before the first report"
            )
        state = [
            (self.decision, self.reason, self.last_step, self.last_value, self.resource_to)
            if self.rank == 0
            else None
        ]
        dist.broadcast_object_list(state, src=0)
        decision, reason, last_step, last_value, resource_to = state[0]  # type: ignore[misc]
        if self.rank != 0:
            self.decision, self.reason = decision, reason
            self.last_step, self.last_value = last_step, last_value
            self.resource_to = resource_to
        return self.decision

    def epochs(self) -> Iterator[int]:
        """Whole resource units of this job: resource_from+1, +2, … up to resource_to.

        Ends early once a report's decision is pause, stop or complete, and runs on when a
        report promotes the trial on the spot (``resource_to`` read again at every step)."""
        epoch = int(self.resource_from)
        while not self.should_stop and epoch + 1 <= self.resource_to + 1e-9:
            epoch += 1
            self._epoch = epoch
            yield epoch
            # The objective's body for this epoch is done, its save (before or after its
            # report) included: the moment to upload it, if one is due.
            self._keep_if_due()
        self._epoch = None

    def _keep_if_due(self) -> None:
        """Upload the latest save when ``checkpoint_every`` units passed since the last one,
        once the epoch it was saved in has been reported and answered ``continue``. A save
        made outside :meth:`epochs` has no epoch, and is kept only at a pause or the end."""
        every, keep = self.checkpoint_every, self.on_checkpoint
        if every is None or keep is None or self.should_stop or self.stale is not None:
            return
        at = self._saved_at
        if self._saves == self._kept_saves or at is None or self.last_step is None:
            return
        if at > self.last_step + 1e-9 or at < self.kept_at + every - 1e-9:
            return
        saves = self._saves
        try:
            keep(at)
        except Exception as exc:  # the next one may get through; training goes on
            from tuneyard.client import StaleAttempt

            if isinstance(exc, StaleAttempt):
                self.revoke(exc.detail)
                return
            log.warning("trial %s: checkpoint at %g not kept: %s", self.trial_id, at, exc)
            return
        self._kept_saves, self.kept_at = saves, at

    # -- checkpoints -----------------------------------------------------------------------
    def save(self, obj: Any, name: str = "state.pkl") -> Path:
        """Save ``obj`` in the checkpoint dir: ``torch.save`` when it holds torch objects,
        pickle otherwise. Written to a temporary file and renamed, so never half written.
        On a rank other than 0 nothing is written (rank 0's save is the trial's)."""
        path = self.checkpoint_dir / name
        if self.rank != 0:
            return path
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        if _is_torch(obj):
            import torch

            torch.save(obj, tmp)
        else:
            with open(tmp, "wb") as f:
                pickle.dump(obj, f, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, path)
        self._saves += 1
        self._saved_at = self._epoch
        return path

    def save_with(self, write: Callable[[Path], object], name: str) -> Path:
        """Save a checkpoint with a framework's own saver: ``write(path)`` writes it (a
        Lightning ``trainer.save_checkpoint``, a Keras ``model.save``, a booster's
        ``save_model``), to a temporary path that keeps ``name``'s suffix, which some savers
        read their format from; it is renamed into place once written, so never half
        written, and counts as a save for ``checkpoint_every``. ``name`` may be a folder
        (a Transformers checkpoint): the one it replaces is removed after the rename. On a
        rank other than 0 nothing is written."""
        path = self.checkpoint_dir / name
        if self.rank != 0:
            return path
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
        _remove(tmp)
        write(tmp)
        if not tmp.exists():
            raise FileNotFoundError(f"the saver wrote nothing at {tmp} (checkpoint {name!r})")
        if tmp.is_dir() and path.exists():
            old = path.with_name(f".{path.stem}.old{path.suffix}")
            _remove(old)
            os.replace(path, old)
            os.replace(tmp, path)
            _remove(old)
        else:
            os.replace(tmp, path)
        self._saves += 1
        self._saved_at = self._epoch
        return path

    def load(self, name: str = "state.pkl", default: Any = None) -> Any:
        """What :meth:`save` stored (restored before a resume); ``default`` when nothing is.

        Torch checkpoints are mapped to the CPU when this machine has no GPU, since a
        promoted trial may resume on another machine than the one that paused it."""
        path = self.checkpoint_dir / name
        if not path.exists():
            return default
        with open(path, "rb") as f:
            head = f.read(len(_ZIP_MAGIC))
        if head == _ZIP_MAGIC:
            import torch

            where = None if torch.cuda.is_available() else "cpu"
            return torch.load(path, map_location=where, weights_only=False)
        with open(path, "rb") as f:
            return pickle.load(f)


def _process_group() -> Any:
    """``torch.distributed`` when torch is imported and its default process group is
    initialised, else None. Not imported here: an objective without torch never loads it."""
    import sys

    dist = sys.modules.get("torch.distributed")
    if dist is None or not dist.is_available() or not dist.is_initialized():
        return None
    return dist


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def _is_torch(obj: Any, depth: int = 3) -> bool:
    """A torch object, or a dict, list or tuple holding one within ``depth`` levels (a
    ``{"model": model.state_dict(), "epoch": 3}`` is saved with ``torch.save``)."""
    if (type(obj).__module__ or "").startswith("torch"):
        return True
    if depth == 0:
        return False
    if isinstance(obj, dict):
        return any(_is_torch(v, depth - 1) for v in obj.values())
    if isinstance(obj, list | tuple):
        return any(_is_torch(v, depth - 1) for v in obj)
    return False


def replicate_label(info: ReplicateInfo) -> str:
    """``fold 2/5``, ``seed 1/3`` or ``fold 2/5, seed 1/3``: counted from 1 for people, as
    the service's reasons and tables name them (the objective gets ``trial.fold`` from 0), each
    out of its count. The seed count is not sent: it is the replicates per fold (all of them
    without folds)."""
    parts = []
    if info.fold is not None:
        fold = info.fold + 1
        parts.append(f"fold {fold}/{info.folds}" if info.folds else f"fold {fold}")
    if info.seed is not None:
        seeds = info.of // info.folds if info.fold is not None and info.folds else info.of
        parts.append(f"seed {info.seed + 1}/{seeds}")
    # Neither: a replicate the spec does not make today; its index still tells it apart.
    return ", ".join(parts) or f"replicate {info.index + 1}/{info.of}"


# The variables a replicated job's command gets, each with the Trial attribute it holds; none
# is set for a trial that is not replicated, nor FOLD and FOLDS without folds, SEED without seeds.
REPLICATE_ENV = {
    "TUNEYARD_FOLD": "fold",
    "TUNEYARD_FOLDS": "folds",
    "TUNEYARD_SEED": "seed",
    "TUNEYARD_REPLICATE": "replicate",
    "TUNEYARD_REPLICATES": "replicates",
    "TUNEYARD_PARENT_ID": "parent_id",
}


def replicate_env(trial: Trial) -> dict[str, str]:
    """The :data:`REPLICATE_ENV` variables of the trial's replicate: those that are set."""
    values = {name: getattr(trial, attr) for name, attr in REPLICATE_ENV.items()}
    return {name: str(v) for name, v in values.items() if v is not None}


def _replicate_from_env(env: Mapping[str, str]) -> ReplicateInfo | None:
    """The replicate the ``TUNEYARD_*`` variables name, None when TUNEYARD_REPLICATE is not
    set; a variable that is not a whole number, or one missing beside it, is named."""
    if not env.get("TUNEYARD_REPLICATE"):
        return None
    values: dict[str, int] = {}
    for name, attr in REPLICATE_ENV.items():
        text = env.get(name)
        if not text:
            continue
        try:
            values[attr] = int(text)
        except ValueError:
            raise RuntimeError(f"{name} must be a whole number, got {text!r}") from None
    for name in ("TUNEYARD_REPLICATES", "TUNEYARD_PARENT_ID"):
        if REPLICATE_ENV[name] not in values:
            raise RuntimeError(f"{name} is not set, though TUNEYARD_REPLICATE is")
    return ReplicateInfo(
        index=values["replicate"],
        of=values["replicates"],
        fold=values.get("fold"),
        folds=values.get("folds"),
        seed=values.get("seed"),
        parent_id=values["parent_id"],
    )


def _whole(env: Mapping[str, str], name: str, default: int) -> int:
    text = env.get(name)
    if not text:
        return default
    try:
        return int(text)
    except ValueError:
        raise RuntimeError(f"{name} must be a whole number, got {text!r}") from None


def trial_from_env() -> Trial:
    """The trial of a command-line objective, from the ``TUNEYARD_*`` variables it was given.

    Needs TUNEYARD_API_URL, TUNEYARD_STUDY_ID, TUNEYARD_TRIAL_ID and TUNEYARD_RESOURCE_TO;
    reads TUNEYARD_PARAMS (JSON object), TUNEYARD_RESOURCE_FROM, TUNEYARD_CHECKPOINT_DIR,
    TUNEYARD_TRIAL_NUMBER, TUNEYARD_ATTEMPT and TUNEYARD_TOKEN when set, and for one
    replicate of a study with ``evaluation`` TUNEYARD_REPLICATE, TUNEYARD_REPLICATES and
    TUNEYARD_PARENT_ID with TUNEYARD_FOLD and TUNEYARD_FOLDS and/or TUNEYARD_SEED (see
    :class:`Trial` for what each means). Under torchrun (a trial with several GPUs) it reads
    the process's RANK and WORLD_SIZE too: every rank gets a handle, and only rank 0's
    reports and saves reach the service.

    Called from the main thread, it also turns the SIGTERM a stopping worker sends into a
    pause at the next report: save the state when ``epochs()`` ends (or the report says
    pause) and exit 0, and the trial resumes elsewhere from there."""
    import signal
    import threading

    from tuneyard.client import Client

    env = os.environ
    try:
        api_url = env["TUNEYARD_API_URL"]
        study_id = int(env["TUNEYARD_STUDY_ID"])
        trial_id = int(env["TUNEYARD_TRIAL_ID"])
        resource_to = float(env["TUNEYARD_RESOURCE_TO"])
    except KeyError as exc:
        raise RuntimeError(f"{exc.args[0]} is not set: run this under a tuneyard worker") from exc
    params = json.loads(env.get("TUNEYARD_PARAMS") or "{}")
    if not isinstance(params, dict):
        raise RuntimeError("TUNEYARD_PARAMS must be a JSON object")
    trial = Trial(
        client=Client(api_url, token=env.get("TUNEYARD_TOKEN")),
        study_id=study_id,
        trial_id=trial_id,
        number=int(env.get("TUNEYARD_TRIAL_NUMBER", "0")),
        params=params,
        resource_from=float(env.get("TUNEYARD_RESOURCE_FROM", "0")),
        resource_to=resource_to,
        checkpoint_dir=Path(env.get("TUNEYARD_CHECKPOINT_DIR", ".")),
        attempt=int(env.get("TUNEYARD_ATTEMPT", "1")),
        replicate=_replicate_from_env(env),
        rank=_whole(env, "RANK", 0),
        world_size=_whole(env, "WORLD_SIZE", 1),
    )
    if env.get("TUNEYARD_STOP_FILE"):
        trial.stop_file = Path(env["TUNEYARD_STOP_FILE"])
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: trial.interrupt("the worker is stopping"))
    return trial

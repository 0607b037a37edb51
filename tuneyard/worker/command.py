"""Command-line objectives: ``execution.command`` run as a process per job.

    execution:
      command: ["python", "train.py", "--lr={lr}", "--epochs={resource_to}"]

Placeholders are the trial's parameters and ``trial_id``, ``trial_number``, ``study_id``,
``resource_from``, ``resource_to`` and ``checkpoint_dir``; for one replicate of a study with
``evaluation`` also ``fold`` and ``folds`` (with folds), ``seed`` (with seeds), ``replicate``,
``replicates`` and ``parent_id``, as ``"--fold={fold}"``. The process reports with
``tuneyard.trial_from_env()`` or ``tuneyard report``, which read the ``TUNEYARD_*`` variables
set here; its output goes to the trial's log. It runs in its own process group, so a timeout
or a stopping worker ends it and whatever it started.

A study whose trials get several GPUs (``execution.gpus: N``) runs its command under torchrun,
once per GPU of the slot (``execution.launcher``)::

    python -m torch.distributed.run --standalone --nproc-per-node N --no-python COMMAND...

Each rank inherits the slot's ``CUDA_VISIBLE_DEVICES`` and gets torchrun's ``RANK``,
``LOCAL_RANK`` and ``WORLD_SIZE``; ``trial_from_env`` in every rank reads them, and only rank 0
reports and saves (see :class:`tuneyard.worker.trial.Trial`). A stopping worker signals
neither torchrun (which would give the ranks only its own 30 seconds) nor the ranks (a signal
in a collective's thread can abort one): it creates the file ``TUNEYARD_STOP_FILE`` names, and
rank 0 pauses at its next report and shares that decision. torchrun starts each rank in a
session of its own, so a kill reaches the ranks one by one besides torchrun's group.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import string
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tuneyard.worker.output import LogShipper
from tuneyard.worker.trial import REPLICATE_ENV, Trial, replicate_env

# Seconds a process gets to exit after SIGTERM before it is killed, unless the worker gives
# its own grace (``tuneyard worker --grace``).
TERM_GRACE = 10.0


class CommandError(RuntimeError):
    """The command could not be built or started."""


class CommandTimeout(RuntimeError):
    """The command ran past ``execution.timeout`` and was killed."""


def _fmt_number(v: Any) -> Any:
    if isinstance(v, float) and v.is_integer():
        return int(v)
    return v


def build_argv(template: Sequence[str], fields: Mapping[str, Any]) -> list[str]:
    """Fill ``{name}`` placeholders; an unknown name is an error that lists the known ones."""
    out = []
    fmt = string.Formatter()
    for arg in template:
        try:
            names = [f for _, f, _, _ in fmt.parse(arg) if f]
        except ValueError as exc:
            raise CommandError(f"execution.command: bad placeholder in {arg!r}: {exc}") from exc
        for name in names:
            if name.split(".")[0].split("[")[0] not in fields:
                known = ", ".join(sorted(fields))
                raise CommandError(
                    f"execution.command: {arg!r} names {{{name}}}, which is none of: {known}"
                )
        out.append(arg.format_map({k: _fmt_number(v) for k, v in fields.items()}))
    return out


def torchrun_argv(ranks: int, argv: Sequence[str]) -> list[str]:
    """``argv`` started once per GPU by torchrun with this worker's Python: single-node
    (``--standalone`` picks a free rendezvous port, so slots on one host never collide) and
    ``--no-python`` (each rank runs the command as written: ``python train.py`` stays that)."""
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    return [*launcher, f"--nproc-per-node={ranks}", "--no-python", *argv]


def trial_env(trial: Trial, api_url: str, token: str | None, attempt: int) -> dict[str, str]:
    """The ``TUNEYARD_*`` variables ``trial_from_env`` reads back; a replicate's fold, seed
    and the rest only when the trial has them, so a process can tell "no folds" by absence."""
    env = {
        "TUNEYARD_API_URL": api_url,
        "TUNEYARD_STUDY_ID": str(trial.study_id),
        "TUNEYARD_TRIAL_ID": str(trial.trial_id),
        "TUNEYARD_TRIAL_NUMBER": str(trial.number),
        "TUNEYARD_ATTEMPT": str(attempt),
        "TUNEYARD_PARAMS": json.dumps(trial.params),
        "TUNEYARD_RESOURCE_FROM": repr(trial.resource_from),
        "TUNEYARD_RESOURCE_TO": repr(trial.resource_to),
        "TUNEYARD_CHECKPOINT_DIR": str(trial.checkpoint_dir),
        "PYTHONUNBUFFERED": "1",
        **replicate_env(trial),
    }
    if token:
        env["TUNEYARD_TOKEN"] = token
    return env


class CommandObjective:
    """Runs the command for a trial; returns its exit code.

    ``interrupt`` (set when the worker stops) sends SIGTERM, which ``trial_from_env`` turns
    into a pause at the next report, and kills the process ``grace`` seconds later if it is
    still running (the worker's ``--grace``: an epoch of a real model, or torchrun's ranks
    finishing theirs together, can take longer than a toy's); ``timeout`` kills the process
    group and raises :class:`CommandTimeout`."""

    def __init__(
        self,
        template: Sequence[str],
        api_url: str,
        token: str | None = None,
        cwd: Path | None = None,
        ranks: int | None = None,
    ) -> None:
        self.template = list(template)
        self.api_url = api_url
        self.token = token
        self.cwd = cwd
        # Processes torchrun starts for one trial (``ExecutionSpec.ranks``); None: one, plainly.
        self.ranks = ranks

    def environment(self, trial: Trial) -> dict[str, str]:
        """Variables the process gets besides the trial's ``TUNEYARD_*`` ones."""
        return {}

    def outcome(self) -> tuple[str | None, Any]:
        """What the last process said of its end besides its exit code: an error to fail the
        trial with, and a value it returned (a plain command says neither)."""
        return None, None

    def run(
        self,
        trial: Trial,
        attempt: int,
        shipper: LogShipper,
        timeout: float | None,
        interrupt: threading.Event,
        echo: Any = None,
        grace: float = TERM_GRACE,
    ) -> int:
        fields: dict[str, Any] = dict(trial.params)
        fields.update(
            trial_id=trial.trial_id,
            trial_number=trial.number,
            study_id=trial.study_id,
            resource_from=trial.resource_from,
            resource_to=trial.resource_to,
            checkpoint_dir=str(trial.checkpoint_dir),
        )
        # Only those the trial has: a {fold} in a study without folds is an unknown name.
        for attr in REPLICATE_ENV.values():
            if (value := getattr(trial, attr)) is not None:
                fields[attr] = value
        argv = build_argv(self.template, fields)
        if self.ranks is not None:
            argv = torchrun_argv(self.ranks, argv)
        # A worker that itself runs under a replicate's variables (one started from a job)
        # must not pass them on to a job that has none.
        inherited = {k: v for k, v in os.environ.items() if k not in REPLICATE_ENV}
        env = {
            **inherited,
            **trial_env(trial, self.api_url, self.token, attempt),
            **self.environment(trial),
        }
        # Under torchrun a stopping worker creates this file instead of signalling the ranks
        # (see :meth:`_terminate`); rank 0 reads it at its next report.
        stop_file: Path | None = None
        if self.ranks is not None:
            stop_file = Path(tempfile.gettempdir()) / (
                f"tuneyard-stop-{os.getpid()}-{trial.trial_id}-{attempt}"
            )
            stop_file.unlink(missing_ok=True)
            env["TUNEYARD_STOP_FILE"] = str(stop_file)
        try:
            proc = subprocess.Popen(
                argv,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=self.cwd,
                start_new_session=True,
                text=True,
                errors="replace",
                bufsize=1,
            )
        except OSError as exc:
            raise CommandError(f"cannot start {argv[0]!r}: {exc}") from exc

        def pump() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                shipper.write(line)
                if echo is not None:
                    echo.write(line)

        reader = threading.Thread(target=pump, daemon=True, name=f"out-{trial.trial_id}")
        reader.start()
        deadline = None if timeout is None else time.monotonic() + timeout
        terminated_at: float | None = None
        try:
            while (code := proc.poll()) is None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=0.2)
                    continue  # exited: the loop condition reads its code
                now = time.monotonic()
                if deadline is not None and now > deadline:
                    _kill_group(proc, signal.SIGKILL)
                    proc.wait()
                    reader.join(timeout=5)
                    raise CommandTimeout(
                        f"timed out: the command ran past execution.timeout ({timeout:g} s) "
                        "and was killed"
                    )
                if interrupt.is_set():
                    if terminated_at is None:
                        terminated_at = now
                        self._terminate(proc, stop_file)
                    elif now - terminated_at > grace:
                        _kill_group(proc, signal.SIGKILL)
        except BaseException:
            if proc.poll() is None:
                _kill_group(proc, signal.SIGKILL)
                proc.wait()
            raise
        finally:
            if stop_file is not None:
                stop_file.unlink(missing_ok=True)
        reader.join(timeout=5)
        return code

    def _terminate(self, proc: subprocess.Popen[str], stop_file: Path | None) -> None:
        """Ask the process to pause at its next report: SIGTERM to its group, or under
        torchrun the stop file, which rank 0 reads at its next report and whose pause it
        shares with the other ranks; torchrun ends once they have. (A signal would reach
        the ranks' collective threads too, and gloo aborts a rank whose wait it interrupts.)"""
        if stop_file is None:
            _kill_group(proc, signal.SIGTERM)
        else:
            stop_file.touch()


def _child_groups(pid: int) -> list[int]:
    """The process groups that ``pid``'s children lead (torchrun's ranks, each started in a
    session of its own), read from /proc; empty where there is no /proc."""
    groups = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        with contextlib.suppress(OSError, ValueError):
            for child in task.read_text().split():
                with contextlib.suppress(OSError):
                    if os.getpgid(int(child)) == int(child):
                        groups.append(int(child))
    return groups


def _kill_group(proc: subprocess.Popen[str], sig: int) -> None:
    """Signal the process's group and, for a launcher such as torchrun, the groups its
    children lead, which would otherwise outlive a SIGKILL of the launcher."""
    for group in _child_groups(proc.pid):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(group, sig)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)

"""Workers as Slurm jobs: the batch script ``tuneyard slurm submit`` hands to ``sbatch``, and
which GPUs a worker started by it may use.

One array task is one ``tuneyard worker``, bound to the GPUs Slurm allocated to that task
(one slot per GPU) or to one CPU slot. The batch shell ``exec``s the worker, so the worker is
the batch step's main process: the SIGTERM Slurm sends ahead of the time limit
(``--signal=B:TERM@seconds``, to the batch shell) reaches it, and its running trials pause at
their next report and are handed back with a checkpoint, for another worker to resume.

The worker token is never written into the script: the script names the token file, which
the worker reads when it starts (and refuses when others may read it).
"""

from __future__ import annotations

import math
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

# Seconds between the stop signal and the time limit beyond the worker's grace: a slot still
# running ``grace`` + 30 s after the signal is killed by the pool, and the hand-back calls need
# the rest. Slurm may send the signal up to a minute early, never late.
SIGNAL_MARGIN = 60
# The name each array task's worker goes by, in the registry and on its trials' attempts.
TASK_NAME = "slurm-${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}"
# Slurm's value of CUDA_VISIBLE_DEVICES for a GPU resource that has no device files.
_NO_DEVICES = "NoDevFiles"
# Values of sbatch options written on ``#SBATCH`` lines, which sbatch splits at blanks.
_PLAIN = re.compile(r"[A-Za-z0-9_.:,+=@%/\-\[\]]+")
_TIME = re.compile(r"^(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?$")


@dataclass(frozen=True)
class SlurmGpu:
    """One GPU of this task's allocation: ``visible`` is the id CUDA_VISIBLE_DEVICES takes
    for it in this process, ``node_index`` its index on the node (SLURM_JOB_GPUS), when
    Slurm says."""

    visible: str
    node_index: str | None = None


def in_slurm_job(env: Mapping[str, str]) -> bool:
    return bool(env.get("SLURM_JOB_ID"))


def _ids(value: str | None) -> list[str]:
    if not value or value.strip() == _NO_DEVICES:
        return []
    return [v.strip() for v in value.split(",") if v.strip()]


def allocated_gpus(env: Mapping[str, str], gpus_on_node: int | None = None) -> list[SlurmGpu]:
    """The GPUs Slurm gave this job (step), in the ids this process must use for them.

    CUDA_VISIBLE_DEVICES, when Slurm set it, is authoritative: its entries are already the
    ids CUDA resolves in this process (on a node that confines jobs to their devices, Slurm
    renumbers them from 0, so the node's index of the first GPU may be 3 while CUDA calls it
    0). A slot is pinned by setting CUDA_VISIBLE_DEVICES to one of these entries, never to
    its position in the list nor to the node's index. Without it, SLURM_STEP_GPUS or
    SLURM_JOB_GPUS give the node's indices; if the node shows this process exactly that many
    GPUs (``gpus_on_node``, from nvidia-smi), the others are hidden from it and CUDA numbers
    the visible ones from 0."""
    node = _ids(env.get("SLURM_STEP_GPUS")) or _ids(env.get("SLURM_JOB_GPUS"))
    visible = _ids(env.get("CUDA_VISIBLE_DEVICES"))
    if not visible:
        if gpus_on_node is not None and gpus_on_node == len(node):
            visible = [str(i) for i in range(len(node))]
        else:
            visible = list(node)
    if node and len(node) != len(visible):
        node = []  # the two lists do not describe the same GPUs: trust CUDA's alone
    return [SlurmGpu(v, node[i] if node else None) for i, v in enumerate(visible)]


def parse_time(value: str) -> int | None:
    """Seconds of a Slurm time limit ("30", "90:00", "4:00:00", "1-12", "2-00:30:00");
    None for no limit ("infinite", "unlimited"). ValueError names what is wrong."""
    text = value.strip().lower()
    if text in ("infinite", "unlimited"):
        return None
    m = _TIME.match(text)
    if not m:
        raise ValueError(
            f"{value!r} is not a Slurm time: use minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM "
            "or D-HH:MM:SS"
        )
    days, a, b, c = m.groups()
    parts = [int(x) for x in (a, b, c) if x is not None]
    if days is not None:  # D-HH[:MM[:SS]]
        hours, minutes, seconds = [*parts, 0, 0][:3]
        return ((int(days) * 24 + hours) * 60 + minutes) * 60 + seconds
    if len(parts) == 1:  # minutes
        return parts[0] * 60
    if len(parts) == 2:  # minutes:seconds
        return parts[0] * 60 + parts[1]
    return (parts[0] * 60 + parts[1]) * 60 + parts[2]


@dataclass(frozen=True)
class WorkerJob:
    """What one ``sbatch`` array of workers runs; :meth:`script` checks it and writes it."""

    api: str
    token_file: str
    python: str
    tasks: int = 1
    gpus_per_task: int = 0
    # GPUs per trial slot of each task's worker (multi-GPU trials): a divisor of gpus_per_task.
    gpus_per_slot: int = 1
    queue: str = "default"
    partition: str | None = None
    time: str | None = None
    account: str | None = None
    cpus_per_task: int | None = None
    mem: str | None = None
    job_name: str = "tuneyard-worker"
    output: str | None = None
    redis: str | None = None
    data_dir: str | None = None
    grace: float = 60.0
    checkpoints: str | None = None
    allow: Sequence[str] = field(default_factory=tuple)
    allow_command: Sequence[str] = field(default_factory=tuple)
    accept_code: bool = False
    paths: Sequence[str] = field(default_factory=tuple)
    sbatch_options: Sequence[str] = field(default_factory=tuple)

    @property
    def signal_lead(self) -> int:
        """Seconds before the time limit the worker gets its SIGTERM."""
        return math.ceil(self.grace) + SIGNAL_MARGIN

    def check(self) -> None:
        """ValueError naming the option and why, for what sbatch or the worker would refuse
        later, or mis-read on an ``#SBATCH`` line."""
        if self.tasks < 1:
            raise ValueError(f"--tasks: {self.tasks} is not a number of array tasks (>= 1)")
        if self.gpus_per_task < 0:
            raise ValueError(f"--gpus-per-task: {self.gpus_per_task} is negative")
        if self.gpus_per_slot < 1:
            raise ValueError(f"--gpus-per-slot: {self.gpus_per_slot} is not >= 1")
        per_slot = self.gpus_per_slot
        if per_slot > 1 and (not self.gpus_per_task or self.gpus_per_task % per_slot):
            raise ValueError(
                f"--gpus-per-slot: {self.gpus_per_slot} does not divide --gpus-per-task "
                f"{self.gpus_per_task} into whole slots; each task's worker would refuse to start"
            )
        if self.cpus_per_task is not None and self.cpus_per_task < 1:
            raise ValueError(f"--cpus-per-task: {self.cpus_per_task} is not >= 1")
        if self.grace < 0 or not math.isfinite(self.grace):
            raise ValueError(f"--grace: {self.grace} is not a number of seconds >= 0")
        if self.signal_lead > 65535:
            raise ValueError(f"--grace: {self.grace} s is longer than Slurm's signal lead allows")
        for flag, value in (
            ("--partition", self.partition),
            ("--time", self.time),
            ("--account", self.account),
            ("--mem", self.mem),
            ("--job-name", self.job_name),
        ):
            if value is not None and not _PLAIN.fullmatch(value):
                raise ValueError(
                    f"{flag}: {value!r} has a blank, a quote or another character an #SBATCH "
                    "line cannot carry"
                )
        for option in self.sbatch_options:
            if not option.startswith("--") or not _PLAIN.fullmatch(option):
                raise ValueError(
                    f"--sbatch-option: {option!r} is not one '--name=value' word (no blanks "
                    "or quotes)"
                )
        if self.time is not None:
            seconds = parse_time(self.time)
            if seconds is not None and seconds <= self.signal_lead:
                raise ValueError(
                    f"--time: {self.time} is not longer than the stop signal's lead of "
                    f"{self.signal_lead} s (--grace {self.grace:g} s + {SIGNAL_MARGIN} s for the "
                    "hand-back): the workers would be told to stop as they start"
                )
        if not self.allow and not self.allow_command and not self.accept_code:
            raise ValueError(
                "--allow: the workers may run nothing, so they would refuse every job: name "
                "the entrypoints they run, e.g. --allow 'myproj.*' (see docs/security.md)"
            )
        if self.output is not None and any(c in self.output for c in '"\n\r'):
            raise ValueError(
                f"--output: {self.output!r} has a double quote or a line break, which an "
                "#SBATCH line cannot carry"
            )

    def script(self) -> str:
        """The batch script: ``#SBATCH`` lines, then the one worker process it ``exec``s."""
        self.check()
        q = shlex.quote
        lines = [
            "#!/bin/bash",
            "# Written by `tuneyard slurm submit`: each task of this array runs one tuneyard",
            "# worker, which hands its running trials back when Slurm signals it to stop.",
            f"#SBATCH --job-name={self.job_name}",
            f"#SBATCH --array=0-{self.tasks - 1}",
            "#SBATCH --ntasks=1",
        ]
        if self.gpus_per_task:
            lines.append(f"#SBATCH --gres=gpu:{self.gpus_per_task}")
        if self.cpus_per_task is not None:
            lines.append(f"#SBATCH --cpus-per-task={self.cpus_per_task}")
        for flag, value in (
            ("partition", self.partition),
            ("time", self.time),
            ("account", self.account),
            ("mem", self.mem),
        ):
            if value is not None:
                lines.append(f"#SBATCH --{flag}={value}")
        # B: the batch shell alone, which is the worker (exec below); not every process of
        # the job, which would also stop the objectives' own subprocesses mid-epoch.
        lines.append(f"#SBATCH --signal=B:TERM@{self.signal_lead}")
        if self.output is not None:
            # sbatch reads a double-quoted value whole, blanks included.
            lines.append(f'#SBATCH --output="{self.output}"')
        lines += [f"#SBATCH {o}" for o in self.sbatch_options]
        if self.data_dir:
            data_dir = f'{q(self.data_dir)}/"$name"'
        else:  # the node's scratch: checkpoints go to the API (or --checkpoints) anyway
            data_dir = '"${TMPDIR:-/tmp}/tuneyard-$name"'
        options = [
            f"--api {q(self.api)}",
            f"--token-file {q(self.token_file)}",
            f"--queue {q(self.queue)}",
            '--name "$name"',
            f"--grace {self.grace:g}",
            f"--data-dir {data_dir}",
            "--gpus slurm" if self.gpus_per_task else "--slots 1",
        ]
        if self.gpus_per_slot > 1:
            options.append(f"--gpus-per-slot {self.gpus_per_slot}")
        if self.checkpoints:
            options.append(f"--checkpoints {q(self.checkpoints)}")
        for flag, values in (
            ("--allow", self.allow),
            ("--allow-command", self.allow_command),
            ("--path", self.paths),
        ):
            options += [f"{flag} {q(v)}" for v in values]
        if self.accept_code:
            options.append("--accept-code")
        lines += [
            "set -euo pipefail",
            "# The worker reads its token from --token-file; it never gets the database.",
            "unset TUNEYARD_TOKEN TUNEYARD_DATABASE_URL",
        ]
        if self.redis:
            lines.append(f"export TUNEYARD_REDIS_URL={q(self.redis)}")
        lines += [
            f'name="{TASK_NAME}"',
            f"exec {q(self.python)} -m tuneyard.cli worker \\",
            *(f"    {o} \\" for o in options[:-1]),
            f"    {options[-1]}",
            "",
        ]
        return "\n".join(lines)

"""``tuneyard slurm submit``: workers as a Slurm array job, one ``tuneyard worker`` per task,
each on the GPUs Slurm gives that task (tuneyard/worker/slurm.py writes the script)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from tuneyard.cli import startup
from tuneyard.cli.common import ApiOpt, api_url, app, err
from tuneyard.cli.startup import StartupError

slurm_app = typer.Typer(help="Run workers on a Slurm cluster.", no_args_is_help=True)
app.add_typer(slurm_app, name="slurm")


@slurm_app.command("submit")
def submit(
    token_file: Annotated[
        Path,
        typer.Option(
            "--token-file",
            help="File holding a worker token (`tuneyard token create --scope worker > FILE`), "
            "mode 0600, on a file system the compute nodes share. The script names the "
            "file; each worker reads it when it starts.",
        ),
    ],
    api: ApiOpt = None,
    tasks: Annotated[int, typer.Option(min=1, help="Array tasks: one worker each.")] = 1,
    gpus_per_task: Annotated[
        int,
        typer.Option(
            min=0,
            help="GPUs per task (--gres=gpu:N), one trial slot each (or per --gpus-per-slot); "
            "0: one CPU slot.",
        ),
    ] = 1,
    gpus_per_slot: Annotated[
        int,
        typer.Option(
            min=1,
            help="GPUs per trial slot of each worker, for studies whose trials need several "
            "(execution.gpus); must divide --gpus-per-task.",
        ),
    ] = 1,
    queue: Annotated[str, typer.Option(help="Queue the workers take jobs from.")] = "default",
    partition: Annotated[str | None, typer.Option(help="Slurm partition.")] = None,
    time: Annotated[
        str | None,
        typer.Option(
            "--time",
            help="Time limit per task (Slurm's format: 90, 4:00:00, 1-12:00:00). The worker "
            "gets SIGTERM --grace + 60 s before it and hands its trials back.",
        ),
    ] = None,
    account: Annotated[str | None, typer.Option(help="Slurm account to charge.")] = None,
    cpus_per_task: Annotated[
        int | None, typer.Option(min=1, help="CPUs per task (data loaders).")
    ] = None,
    mem: Annotated[str | None, typer.Option(help="Memory per node, as sbatch's --mem.")] = None,
    job_name: Annotated[str, typer.Option(help="The array job's name.")] = "tuneyard-worker",
    redis_url: Annotated[
        str | None,
        typer.Option(
            "--redis",
            envvar="TUNEYARD_REDIS_URL",
            show_default=False,
            help="Redis URL the workers use (written into the script; else the job's "
            "environment must carry TUNEYARD_REDIS_URL).",
        ),
    ] = None,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            help="Parent of each task's work directory (default: the node's $TMPDIR or /tmp)."
        ),
    ] = None,
    grace: Annotated[
        float,
        typer.Option(min=0, help="Seconds a running trial gets to reach a report after SIGTERM."),
    ] = 60.0,
    checkpoints: Annotated[
        str | None,
        typer.Option(
            help="Where paused trials' checkpoints go: 'api' (the default) or a directory "
            "every node shares."
        ),
    ] = None,
    allow: Annotated[
        list[str] | None,
        typer.Option("--allow", help="Entrypoints the workers run (repeatable), as for a worker."),
    ] = None,
    allow_command: Annotated[
        list[str] | None,
        typer.Option("--allow-command", help="Executables the workers run (repeatable)."),
    ] = None,
    accept_code: Annotated[
        bool, typer.Option("--accept-code", help="The workers run the code studies ship.")
    ] = False,
    path: Annotated[
        list[str] | None, typer.Option(help="Extra import path for objectives (repeatable).")
    ] = None,
    python: Annotated[
        str | None,
        typer.Option(
            help="The Python (with tuneyard) the tasks run (default: this one; the nodes "
            "must see it at the same path)."
        ),
    ] = None,
    sbatch_option: Annotated[
        list[str] | None,
        typer.Option(
            "--sbatch-option",
            help="Another #SBATCH option, one '--name=value' word (repeatable), e.g. "
            "--sbatch-option=--qos=long.",
        ),
    ] = None,
    output: Annotated[
        str | None,
        typer.Option(help="Each task's log file (sbatch's patterns: %A job, %a task)."),
    ] = None,
    script: Annotated[
        Path | None,
        typer.Option(
            help="Where to write the batch script (default: tuneyard-workers-<time>.sbatch here)."
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the script; write and submit nothing.")
    ] = False,
) -> None:
    """Submit an sbatch array of workers: each task runs one `tuneyard worker` on its GPUs.

    Each worker is named slurm-<job>_<task> and gets SIGTERM --grace + 60 s before the time
    limit (sbatch --signal), on which it hands its running trials back with a checkpoint for
    another worker to resume; `scancel` does the same. The worker token stays in
    --token-file: the script names the file, never the token. Prints the job id."""
    from tuneyard.worker.slurm import WorkerJob

    try:
        token_path = token_file.expanduser().resolve()
        startup.read_token_file(token_path)  # the workers would refuse it: say so now
    except StartupError as exc:
        err.print(f"tuneyard slurm submit: {escape(str(exc))}", highlight=False)
        raise typer.Exit(2) from None
    job = WorkerJob(
        api=api_url(api),
        token_file=str(token_path),
        python=python or sys.executable,
        tasks=tasks,
        gpus_per_task=gpus_per_task,
        gpus_per_slot=gpus_per_slot,
        queue=queue,
        partition=partition,
        time=time,
        account=account,
        cpus_per_task=cpus_per_task,
        mem=mem,
        job_name=job_name,
        output=output or str(Path.cwd() / "tuneyard-worker-%A_%a.out"),
        redis=redis_url,
        data_dir=str(data_dir.expanduser().resolve()) if data_dir else None,
        grace=grace,
        checkpoints=checkpoints,
        allow=tuple(allow or ()),
        allow_command=tuple(allow_command or ()),
        accept_code=accept_code,
        paths=tuple(str(Path(p).expanduser().resolve()) for p in path or ()),
        sbatch_options=tuple(sbatch_option or ()),
    )
    try:
        text = job.script()
    except ValueError as exc:
        err.print(f"tuneyard slurm submit: {escape(str(exc))}", highlight=False)
        raise typer.Exit(2) from None
    if dry_run:
        sys.stdout.write(text)
        return
    sbatch = shutil.which("sbatch")
    if sbatch is None:
        err.print(
            "tuneyard slurm submit: sbatch is not on the PATH: run this where Slurm's client "
            "commands are installed (a login node), or see the script with --dry-run",
            highlight=False,
        )
        raise typer.Exit(2)
    where = (script or Path(f"tuneyard-workers-{datetime.now(UTC):%Y%m%d-%H%M%S}.sbatch")).resolve()
    _write_script(where, text)
    err.print(f"wrote {escape(str(where))}", highlight=False)
    done = subprocess.run([sbatch, "--parsable", str(where)], capture_output=True, text=True)
    if done.returncode != 0:
        why = (done.stderr or done.stdout).strip() or f"exit code {done.returncode}"
        err.print(f"tuneyard slurm submit: sbatch refused the job: {escape(why)}", highlight=False)
        raise typer.Exit(1)
    # --parsable prints "jobid" or "jobid;cluster".
    job_id = done.stdout.strip().split(";")[0]
    err.print(
        f"submitted array job {job_id}: {tasks} workers named slurm-{job_id}_<task> on queue "
        f"{escape(queue)!r}",
        highlight=False,
    )
    sys.stdout.write(job_id + "\n")


def _write_script(where: Path, text: str) -> None:
    """Readable by this user only: the script names the token file and may hold the Redis
    URL, with its password."""
    where.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(where, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o700)
    with os.fdopen(fd, "w") as f:
        os.fchmod(f.fileno(), 0o700)
        f.write(text)

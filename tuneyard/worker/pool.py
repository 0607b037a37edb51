"""``tuneyard worker``: one RQ worker process per GPU (or per CPU slot) on this machine."""

from __future__ import annotations

import logging
import multiprocessing
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

log = logging.getLogger("tuneyard.worker")


def detect_gpus() -> list[str]:
    """GPU indices from nvidia-smi; empty when there is none."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return []
    try:
        out = subprocess.run(
            [exe, "--query-gpu=index", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.splitlines() if line.strip()]


def plan_slots(gpus: str | None, slots: int | None) -> list[str | None]:
    """One entry per worker process: the GPU it is pinned to, or None for a CPU slot."""
    if gpus in (None, "", "none"):
        return [None] * (slots or 1)
    ids = detect_gpus() if gpus == "auto" else [g.strip() for g in gpus.split(",") if g.strip()]
    if not ids:
        if gpus == "auto":
            return [None] * (slots or 1)
        raise ValueError("--gpus names no GPU")
    return list(ids)


def _slot_main(
    redis_url: str, queue: str, gpu: str | None, index: int, env: dict[str, str], paths: list[str]
) -> None:
    from redis import Redis
    from rq import SimpleWorker

    os.environ.update(env)
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu
    slot = f"gpu-{gpu}" if gpu is not None else f"slot-{index}"
    os.environ["TUNEYARD_WORKER_NAME"] = f"{socket.gethostname()}/{slot}"
    for p in reversed([os.getcwd(), *paths]):
        if p not in sys.path:
            sys.path.insert(0, p)
    logging.basicConfig(level=logging.WARNING)
    # Jobs run in this process rather than in a fork per job (RQ's default): the objective's
    # imports (torch, sklearn), its cached data and an initialised CUDA context carry over to
    # the next trial, which would otherwise pay seconds per job before its first epoch. A
    # process that dies with its trial is caught by the trial's lease, as any lost worker is.
    worker = SimpleWorker([queue], connection=Redis.from_url(redis_url))
    worker.work(logging_level="WARNING")


def run_pool(
    api_url: str,
    redis_url: str,
    queue: str,
    slots: list[str | None],
    data_dir: Path,
    paths: list[str] | None = None,
    poll: float = 1.0,
) -> int:
    """Run the worker processes until SIGTERM/SIGINT; returns the worst exit code of the last
    generation of processes (the ones stopped by the signal).

    A slot process that dies on its own (an objective that crashed the interpreter, an
    out-of-memory kill) is started again; its trial's lease runs out and the service deals
    with the trial."""
    env = {"TUNEYARD_API_URL": api_url, "TUNEYARD_DATA_DIR": str(data_dir)}
    ctx = multiprocessing.get_context("spawn")
    stopping = False

    def start(i: int, gpu: str | None) -> multiprocessing.process.BaseProcess:
        p = ctx.Process(
            target=_slot_main,
            args=(redis_url, queue, gpu, i, env, list(paths or [])),
            name=f"tuneyard-worker-{i}",
        )
        p.start()
        return p

    procs = [start(i, gpu) for i, gpu in enumerate(slots)]

    def forward(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for p in procs:
            if p.pid is not None and p.is_alive():
                os.kill(p.pid, signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    worst = 0
    while any(p.is_alive() for p in procs) or not stopping:
        for i, p in enumerate(procs):
            if p.is_alive():
                continue
            p.join()
            if not stopping:
                log.error("%s exited with %s; starting it again", p.name, p.exitcode)
                procs[i] = start(i, slots[i])
        if stopping and not any(p.is_alive() for p in procs):
            break
        time.sleep(poll)
    for p in procs:
        p.join()
        worst = max(worst, abs(p.exitcode or 0))
    return worst

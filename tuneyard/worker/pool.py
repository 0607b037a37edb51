"""``tuneyard worker``: one RQ worker process per GPU (or per CPU slot) on this machine."""

from __future__ import annotations

import contextlib
import json
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from tuneyard.worker.allow import ENV_VAR as ALLOW_ENV
from tuneyard.worker.allow import Allowlist

log = logging.getLogger("tuneyard.worker")


@dataclass(frozen=True)
class Gpu:
    index: str
    name: str | None = None
    memory_mib: int | None = None
    uuid: str | None = None


def detect_gpus() -> list[Gpu]:
    """The GPUs nvidia-smi sees (index, model, memory); empty when there is none."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return []
    try:
        out = subprocess.run(
            [exe, "--query-gpu=index,name,memory.total,uuid", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    gpus = []
    for line in out.splitlines():
        cols = [c.strip() for c in line.split(",")]
        if not cols or not cols[0]:
            continue
        mem = cols[2] if len(cols) > 2 else ""
        gpus.append(
            Gpu(
                index=cols[0],
                name=cols[1] if len(cols) > 1 else None,
                memory_mib=int(mem) if mem.isdigit() else None,
                uuid=cols[3] if len(cols) > 3 else None,
            )
        )
    return gpus


def plan_slots(gpus: str | None, slots: int | None) -> list[Gpu | None]:
    """One entry per worker process: the GPU it is pinned to, or None for a CPU slot."""
    if gpus in (None, "", "none"):
        return [None] * (slots or 1)
    found = detect_gpus()
    if gpus == "auto":
        return list(found) if found else [None] * (slots or 1)
    known = {g.index: g for g in found}
    ids = [g.strip() for g in gpus.split(",") if g.strip()]
    if not ids:
        raise ValueError("--gpus names no GPU")
    return [known.get(i, Gpu(index=i)) for i in ids]


class _Registration:
    """Registers this slot with the API, beats every ``every`` seconds with the trial it
    runs, and says goodbye at the end. Keeps trying while the API is unreachable; registers
    again if the API forgot it."""

    def __init__(self, api_url: str, info: dict[str, Any], every: float = 5.0) -> None:
        self.api_url, self.info, self.every = api_url, info, every
        self.worker_id: int | None = None
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True, name="registration")

    def _run(self) -> None:
        from tuneyard.client import Client, NotFound
        from tuneyard.worker.jobs import CONTROL

        with Client(self.api_url, retries=1, timeout=10) as client:
            while True:
                try:
                    if self.worker_id is None:
                        self.worker_id = client.register_worker(self.info).id
                    else:
                        trial = CONTROL.current_trial_id()
                        client.worker_heartbeat(self.worker_id, trial)
                except NotFound:
                    self.worker_id = None
                except Exception as exc:
                    log.debug("worker registration/heartbeat failed: %s", exc)
                if self.done.wait(self.every):
                    break
            if self.worker_id is not None:
                with contextlib.suppress(Exception):
                    client.stop_worker(self.worker_id)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.done.set()
        self.thread.join(timeout=15)


def _slot_main(
    redis_url: str,
    queue: str,
    gpu: Gpu | None,
    index: int,
    env: dict[str, str],
    paths: list[str],
    prefix: str | None = None,
) -> None:
    from redis import Redis
    from rq import SimpleWorker

    from tuneyard.worker.jobs import CONTROL, GPUS_ENV

    class SlotWorker(SimpleWorker):
        """On SIGTERM/SIGINT, the running trial pauses at its next report and is handed
        back with its checkpoint (RQ's warm shutdown then waits for that job to end)."""

        def request_stop(self, signum: Any, frame: Any) -> None:
            CONTROL.stop("the worker is stopping")
            super().request_stop(signum, frame)

    os.environ.update(env)
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu.index
    # The slot's jobs name its GPU when they ask for work: the attempt records it.
    os.environ[GPUS_ENV] = json.dumps([] if gpu is None else [_gpu_ref(gpu)])
    slot = f"gpu-{gpu.index}" if gpu is not None else f"slot-{index}"
    host = socket.gethostname()
    name = f"{prefix or host}/{slot}"
    os.environ["TUNEYARD_WORKER_NAME"] = name
    for p in reversed([os.getcwd(), *paths]):
        if p not in sys.path:
            sys.path.insert(0, p)
    logging.basicConfig(level=logging.WARNING)
    registration = _Registration(
        env["TUNEYARD_API_URL"],
        {
            "name": name,
            "host": host,
            "pid": os.getpid(),
            "queue": queue,
            "slots": 1,
            "gpus": [] if gpu is None else [asdict(gpu)],
        },
    )
    registration.start()
    # Jobs run in this process rather than in a fork per job (RQ's default): the objective's
    # imports (torch, sklearn), its cached data and an initialised CUDA context carry over to
    # the next trial, which would otherwise pay seconds per job before its first epoch. A
    # process that dies with its trial is caught by the trial's lease, as any lost worker is.
    worker = SlotWorker([queue], connection=Redis.from_url(redis_url), name=_rq_name(name))
    try:
        worker.work(logging_level="WARNING")
    finally:
        registration.stop()


def _gpu_ref(gpu: Gpu) -> dict[str, str]:
    """What an attempt records of its GPU: index, model and UUID when known."""
    return {k: v for k, v in (("index", gpu.index), ("name", gpu.name), ("uuid", gpu.uuid)) if v}


def _rq_name(name: str) -> str:
    """RQ worker names must be unique in Redis: a restarted slot gets a fresh suffix."""
    return f"{name.replace('/', '.')}.{os.getpid()}"


def run_pool(
    api_url: str,
    redis_url: str,
    queue: str,
    slots: list[Gpu | None],
    data_dir: Path,
    paths: list[str] | None = None,
    poll: float = 1.0,
    checkpoints: str = "api",
    grace: float = 60.0,
    name: str | None = None,
    allow: Allowlist | None = None,
) -> int:
    """Run the worker processes until SIGTERM/SIGINT; returns the worst exit code of the last
    generation of processes (the ones stopped by the signal).

    A slot process that dies on its own (an objective that crashed the interpreter, an
    out-of-memory kill, a stuck objective it ended itself) is started again; its trial's
    lease runs out and the service deals with the trial.

    On SIGTERM or SIGINT each slot hands its running trial back (paused at the next report
    with a checkpoint, or as it started after ``grace`` seconds) and exits; a slot still
    alive ``grace`` + 30 seconds later is killed.

    ``allow`` is what the slots may run; without it they refuse every job."""
    env = {
        "TUNEYARD_API_URL": api_url,
        "TUNEYARD_DATA_DIR": str(data_dir),
        "TUNEYARD_CHECKPOINT_STORE": checkpoints,
        "TUNEYARD_STOP_GRACE": str(grace),
        ALLOW_ENV: (allow or Allowlist()).to_env(),
    }
    ctx = multiprocessing.get_context("spawn")
    stopping = False

    def start(i: int, gpu: Gpu | None) -> multiprocessing.process.BaseProcess:
        p = ctx.Process(
            target=_slot_main,
            args=(redis_url, queue, gpu, i, env, list(paths or []), name),
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
    stop_deadline: float | None = None
    while any(p.is_alive() for p in procs) or not stopping:
        if stopping and stop_deadline is None:
            stop_deadline = time.monotonic() + grace + 30
        if stop_deadline is not None and time.monotonic() > stop_deadline:
            for p in procs:
                if p.is_alive() and p.pid is not None:
                    log.error("%s did not stop within %.0f s; killing it", p.name, grace + 30)
                    os.kill(p.pid, signal.SIGKILL)
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

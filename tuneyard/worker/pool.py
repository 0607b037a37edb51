"""``tuneyard worker``: one RQ worker process per GPU (or per CPU slot) on this machine.

With ``--gpus-per-slot N`` a process serves N GPUs at once (``group_slots``): its trials see
them all in ``CUDA_VISIBLE_DEVICES`` and it takes the jobs of studies whose trials ask for up
to N GPUs (``execution.gpus``), running a command objective under torchrun, one rank per GPU."""

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
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from tuneyard.worker.allow import ENV_VAR as ALLOW_ENV
from tuneyard.worker.allow import Allowlist
from tuneyard.worker.code import ACCEPT_ENV as ACCEPT_CODE_ENV
from tuneyard.worker.code import CACHE_ENV as CODE_CACHE_ENV
from tuneyard.worker.slots import SlotState, die_with_parent, watch_redis
from tuneyard.worker.slurm import allocated_gpus, in_slurm_job

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


# What one slot process runs its jobs on: a GPU, several GPUs (``--gpus-per-slot``), or
# None for a CPU slot.
Slot = Gpu | tuple[Gpu, ...] | None


def slot_gpus(slot: Slot) -> tuple[Gpu, ...]:
    """A slot's GPUs, none for a CPU slot."""
    if slot is None:
        return ()
    return slot if isinstance(slot, tuple) else (slot,)


def group_slots(plan: list[Gpu | None], per_slot: int) -> list[Slot]:
    """``plan``'s GPUs in slots of ``per_slot`` each, in the order given (``0,1`` and
    ``2,3`` for ``--gpus 0,1,2,3 --gpus-per-slot 2``), so that one process runs each trial on
    all of its slot's GPUs. GPUs that would be left over, or CPU slots, are an error: a
    slot short of GPUs would take jobs it cannot run."""
    if per_slot < 1:
        raise ValueError(f"must be at least 1, got {per_slot}")
    if per_slot == 1:
        return list(plan)
    gpus = [g for g in plan if g is not None]
    if not gpus:
        raise ValueError(
            f"no GPUs to make slots of {per_slot} from: give --gpus (ids, or 'auto' on a "
            "machine with GPUs)"
        )
    if len(gpus) % per_slot:
        ids = ",".join(g.index for g in gpus)
        raise ValueError(
            f"the {len(gpus)} GPUs ({ids}) do not make whole slots of {per_slot}; name "
            f"{len(gpus) - len(gpus) % per_slot} of them with --gpus"
        )
    return [tuple(gpus[i : i + per_slot]) for i in range(0, len(gpus), per_slot)]


def plan_slots(
    gpus: str | None, slots: int | None, env: Mapping[str, str] | None = None
) -> list[Gpu | None]:
    """One entry per worker process: the GPU it is pinned to, or None for a CPU slot.

    ``slurm`` (and ``auto`` inside a Slurm job, ``env``: os.environ) is the GPUs Slurm
    allocated to this job, never the other GPUs of its node, which other jobs hold."""
    env = os.environ if env is None else env
    if gpus in (None, "", "none"):
        return [None] * (slots or 1)
    if gpus == "slurm" or (gpus == "auto" and in_slurm_job(env)):
        return _slurm_slots(gpus, slots, env)
    found = detect_gpus()
    if gpus == "auto":
        return list(found) if found else [None] * (slots or 1)
    known = {g.index: g for g in found}
    ids = [g.strip() for g in gpus.split(",") if g.strip()]
    if not ids:
        raise ValueError("--gpus names no GPU")
    return [known.get(i, Gpu(index=i)) for i in ids]


def _slurm_slots(gpus: str, slots: int | None, env: Mapping[str, str]) -> list[Gpu | None]:
    if not in_slurm_job(env):
        raise ValueError("'slurm' is for a worker inside a Slurm job, and SLURM_JOB_ID is not set")
    found = detect_gpus()
    allocated = allocated_gpus(env, len(found) if found else None)
    if not allocated:
        if gpus == "auto":
            return [None] * (slots or 1)
        raise ValueError(
            f"Slurm job {env['SLURM_JOB_ID']} has no GPUs (CUDA_VISIBLE_DEVICES, SLURM_STEP_GPUS "
            "and SLURM_JOB_GPUS are unset): submit it with --gres=gpu:N, or run CPU slots "
            "with --slots"
        )
    by_uuid = {g.uuid: g for g in found if g.uuid}
    by_index = {g.index: g for g in found}
    plan: list[Gpu | None] = []
    for i, a in enumerate(allocated):
        # nvidia-smi's model and memory for it: by UUID when Slurm names GPUs so, else by
        # the node's index; on a node that shows the job only its own GPUs, by position;
        # on one that shows it all, CUDA's ids are the node's indices.
        known = by_uuid.get(a.visible) or by_index.get(a.node_index or "")
        if known is None:
            known = found[i] if len(found) == len(allocated) else by_index.get(a.visible)
        plan.append(
            Gpu(
                index=a.visible,
                name=known.name if known else None,
                memory_mib=known.memory_mib if known else None,
                uuid=known.uuid if known else None,
            )
        )
    return plan


class _Registration:
    """Registers this slot with the API, beats every ``every`` seconds with the trial it
    runs, and says goodbye at the end. Keeps trying while the API is unreachable; registers
    again if the API forgot it.

    The API may answer with another name than the one asked for (``host/slot-0-2``: a live
    worker holds the name); the slot then goes by that name. ``state`` learns the worker's
    id, so that the pool can sign off for a slot that died."""

    def __init__(
        self, api_url: str, info: dict[str, Any], state: SlotState, every: float = 5.0
    ) -> None:
        self.api_url, self.info, self.state, self.every = api_url, info, state, every
        self.worker_id: int | None = None
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True, name="registration")

    def register(self, client: Any) -> None:
        out = client.register_worker(self.info)
        self.worker_id = out.id
        self.state.set_worker(out.id)
        if out.name != self.info["name"]:
            log.warning(
                "worker name %r is taken by a live worker; this one is %r",
                self.info["name"],
                out.name,
            )
        os.environ["TUNEYARD_WORKER_NAME"] = out.name

    def first(self) -> None:
        """Register before the first job, so that its trials carry the name the registry
        shows; the thread tries again if the API does not answer now."""
        from tuneyard.client import Client

        with contextlib.suppress(Exception), Client(self.api_url, retries=2, timeout=10) as c:
            self.register(c)

    def _run(self) -> None:
        from tuneyard.client import Client, NotFound
        from tuneyard.worker.jobs import CONTROL

        with Client(self.api_url, retries=1, timeout=10) as client:
            while not self.done.wait(self.every):
                try:
                    if self.worker_id is None:
                        self.register(client)
                    else:
                        trial = CONTROL.current_trial_id()
                        client.worker_heartbeat(self.worker_id, trial)
                except NotFound:
                    self.worker_id = None
                except Exception as exc:
                    log.debug("worker registration/heartbeat failed: %s", exc)
            if self.worker_id is not None:
                with contextlib.suppress(Exception):
                    client.stop_worker(self.worker_id)
                self.state.set_worker(None)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.done.set()
        self.thread.join(timeout=15)


def _slot_main(
    redis_url: str,
    queue: str,
    slot: Slot,
    index: int,
    env: dict[str, str],
    paths: list[str],
    prefix: str | None = None,
    state: SlotState | None = None,
    parent: int | None = None,
) -> None:
    from redis import Redis
    from rq import SimpleWorker

    from tuneyard.worker.jobs import CONTROL, GPUS_ENV

    # First of all: this process must not outlive the worker that started it. In a process
    # group of its own: a terminal's Ctrl-C reaches the pool, which forwards it once, and the
    # group is what the pool kills of a slot at the end (processes its objective started).
    die_with_parent(parent)
    with contextlib.suppress(OSError):
        os.setpgid(0, 0)
    state = state or SlotState()

    class SlotWorker(SimpleWorker):
        """On SIGTERM/SIGINT, the running trial pauses at its next report and is handed
        back with its checkpoint (RQ's warm shutdown then waits for that job to end)."""

        stop_signalled = False

        def request_stop(self, signum: Any, frame: Any) -> None:
            # Once only. A Slurm job's processes all get scancel's SIGTERM, and the pool
            # forwards its own copy a moment later: a second handler that ran inside the
            # first one (Python runs them nested) would wait on a lock the first one holds.
            if self.stop_signalled:
                return
            self.stop_signalled = True
            CONTROL.stop("the worker is stopping")
            super().request_stop(signum, frame)

        def subscribe(self) -> None:
            """RQ's command listener, polling every second rather than RQ's 60 s. RQ's
            teardown stops the listener thread, and redis-py 8 waits for that thread to
            finish its current poll: with 60 s, a slot asked to stop would hand its trial
            back at once and then take up to a minute to exit."""
            self.pubsub = self.connection.pubsub()
            self.pubsub.subscribe(**{self.pubsub_channel_name: self.handle_payload})
            self.pubsub_thread = self.pubsub.run_in_thread(  # type: ignore[assignment]
                sleep_time=1.0, daemon=True, exception_handler=self._pubsub_exception_handler
            )  # (RQ declares the attribute as None)

    os.environ.update(env)
    gpus = slot_gpus(slot)
    if gpus:
        os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(g.index for g in gpus)
    # The slot's jobs name its GPUs when they ask for work: the attempt records them, and a
    # job whose study needs more GPUs than these leaves them to another worker.
    os.environ[GPUS_ENV] = json.dumps([_gpu_ref(g) for g in gpus])
    label = "gpu-" + "+".join(g.index for g in gpus) if gpus else f"slot-{index}"
    host = socket.gethostname()
    name = f"{prefix or host}/{label}"
    os.environ["TUNEYARD_WORKER_NAME"] = name
    for p in reversed([os.getcwd(), *paths]):
        if p not in sys.path:
            sys.path.insert(0, p)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("tuneyard").setLevel(logging.INFO)
    CONTROL.on_attach = state.set_trial
    registration = _Registration(
        env["TUNEYARD_API_URL"],
        {
            "name": name,
            "host": host,
            "pid": os.getpid(),
            "queue": queue,
            "slots": 1,
            "gpus": [asdict(g) for g in gpus],
        },
        state,
    )
    registration.first()
    registration.start()
    connection = Redis.from_url(redis_url)
    redis_up = watch_redis(connection, CONTROL.stopping)
    # Jobs run in this process rather than in a fork per job (RQ's default): the objective's
    # imports (torch, sklearn), its cached data and an initialised CUDA context carry over to
    # the next trial, which would otherwise pay seconds per job before its first epoch. A
    # process that dies with its trial is caught by the pool, which hands the trial back.
    generation = 0
    try:
        while not CONTROL.stopping.is_set():
            # RQ gives up on a Redis that went away; the watch says when it is back.
            if not redis_up.wait(1.0):
                continue
            generation += 1
            rq_name = _rq_name(os.environ["TUNEYARD_WORKER_NAME"], generation)
            worker = SlotWorker([queue], connection=connection, name=rq_name)
            try:
                worker.work(logging_level="WARNING")
            except Exception as exc:  # Redis lost between the watch's pings
                log.debug("the RQ worker stopped: %s", exc)
            CONTROL.stopping.wait(1.0)  # RQ's loop ended without a stop: Redis went away
    finally:
        registration.stop()


def _gpu_ref(gpu: Gpu) -> dict[str, str]:
    """What an attempt records of its GPU: index, model and UUID when known."""
    return {k: v for k, v in (("index", gpu.index), ("name", gpu.name), ("uuid", gpu.uuid)) if v}


def _rq_name(name: str, generation: int = 1) -> str:
    """RQ worker names must be unique in Redis: a restarted slot, and an RQ worker started
    again after Redis came back, get a fresh suffix."""
    suffix = f".{generation}" if generation > 1 else ""
    return f"{name.replace('/', '.')}.{os.getpid()}{suffix}"


def run_pool(
    api_url: str,
    redis_url: str,
    queue: str,
    slots: Sequence[Slot],
    data_dir: Path,
    paths: list[str] | None = None,
    poll: float = 1.0,
    checkpoints: str = "api",
    grace: float = 60.0,
    name: str | None = None,
    allow: Allowlist | None = None,
    accept_code: bool = False,
    code_cache: Path | None = None,
) -> int:
    """Run the worker processes until SIGTERM/SIGINT; returns the worst exit code of the last
    generation of processes (the ones stopped by the signal).

    A slot process that dies on its own (an objective that crashed the interpreter, an
    out-of-memory kill, a stuck objective it ended itself) is started again, and the trial it
    was running is handed back at once (failed with the reason, so it runs again while its
    retries allow) rather than when its lease runs out.

    Each slot runs in a process group of its own and is killed by the kernel if this process
    dies (SIGKILL included): no slot outlives its worker. On SIGTERM or SIGINT each slot hands
    its running trial back (paused at the next report with a checkpoint, or as it started
    after ``grace`` seconds) and exits; a slot still alive ``grace`` + 30 seconds later is
    killed, and what is left of each slot's process group with it.

    ``allow`` is what the slots may run; without it they refuse every job. With
    ``accept_code`` they also run the code studies ship (``execution.code``) on ``queue``,
    cached in ``code_cache`` (default: ``data_dir/code``)."""
    # The slots work (and objectives may write) under it from their first job on.
    data_dir.mkdir(parents=True, exist_ok=True)
    env = {
        "TUNEYARD_API_URL": api_url,
        "TUNEYARD_DATA_DIR": str(data_dir),
        "TUNEYARD_CHECKPOINT_STORE": checkpoints,
        "TUNEYARD_STOP_GRACE": str(grace),
        ALLOW_ENV: (allow or Allowlist()).to_env(),
        ACCEPT_CODE_ENV: json.dumps([queue] if accept_code else []),
        CODE_CACHE_ENV: str(code_cache or data_dir / "code"),
        # What the slots of this pool share in Redis (the studies they refused) is keyed by it.
        "TUNEYARD_POOL_ID": f"{socket.gethostname()}:{os.getpid()}:{time.time_ns()}",
    }
    ctx = multiprocessing.get_context("spawn")
    stopping = False
    states = [SlotState(ctx) for _ in slots]

    def start(i: int, slot: Slot) -> multiprocessing.process.BaseProcess:
        states[i].set_trial(None)
        states[i].set_worker(None)
        p = ctx.Process(
            target=_slot_main,
            args=(redis_url, queue, slot, i, env, list(paths or []), name, states[i], os.getpid()),
            name=f"tuneyard-worker-{i}",
        )
        p.start()
        return p

    procs = [start(i, slot) for i, slot in enumerate(slots)]

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
    try:
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
                    _hand_back(api_url, p, states[i])
                    procs[i] = start(i, slots[i])
            if stopping and not any(p.is_alive() for p in procs):
                break
            time.sleep(poll)
    finally:
        for p in procs:
            if p.pid is not None and p.is_alive():
                os.kill(p.pid, signal.SIGKILL)
            p.join()
            worst = max(worst, abs(p.exitcode or 0))
            _kill_group(p.pid)
    return worst


def _died(p: multiprocessing.process.BaseProcess) -> str:
    code = p.exitcode
    if code is not None and code < 0:
        with contextlib.suppress(ValueError):
            return f"was killed by {signal.Signals(-code).name}"
        return f"was killed by signal {-code}"
    return f"exited with code {code}"


def _hand_back(api_url: str, p: multiprocessing.process.BaseProcess, state: SlotState) -> None:
    """A slot died on its own: fail the attempt it was running, with the reason, so that the
    trial runs again now (while its retries allow) instead of after its lease; and sign the
    slot off the worker registry, so that the slot started in its place takes its name back.
    A call the API refuses (the slot had ended the attempt itself, the trial moved on) or
    cannot take (the API is down: the lease then does it) changes nothing."""
    from tuneyard.client import ApiError, Client

    how = _died(p)
    job = state.trial()
    worker_id = state.worker()
    if job is None:
        log.error("%s (pid %s) %s; starting it again", p.name, p.pid, how)
    else:
        log.error(
            "%s (pid %s) %s while running trial %s (attempt %s); starting it again, and "
            "the trial runs again now",
            p.name,
            p.pid,
            how,
            *job,
        )
    if job is None and worker_id is None:
        return
    with Client(api_url, retries=2, timeout=10) as client:
        if job is not None:
            trial_id, attempt = job
            try:
                client.fail(trial_id, f"the worker process running it {how}", attempt=attempt)
            except ApiError as exc:
                log.info("trial %s: not handed back: %s", trial_id, exc)
        if worker_id is not None:
            with contextlib.suppress(ApiError):
                client.stop_worker(worker_id)
    state.set_trial(None)
    state.set_worker(None)


def _kill_group(pid: int | None) -> None:
    """SIGKILL what is left of a slot's process group (processes its objective started)."""
    if pid is None:
        return
    with contextlib.suppress(OSError):
        os.killpg(pid, signal.SIGKILL)

"""The worker side of the API: registration, trial logs, checkpoints and handing trials back."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import FileResponse, PlainTextResponse
from starlette.concurrency import run_in_threadpool

from tuneyard.api.auth import READ, WORKER, CallerDep, check_worker_registration
from tuneyard.api.deps import Id, KitDep, TrialsDep
from tuneyard.api.routes import E404, E409, E422, _summary
from tuneyard.api.schemas import (
    MAX_INT32,
    CheckpointOut,
    LogChunkIn,
    LogChunkOut,
    ReleaseIn,
    TrialSummary,
    WorkerBeatIn,
    WorkerIn,
    WorkerOut,
)
from tuneyard.service.artifacts import CheckpointFiles, LogService
from tuneyard.service.trials import TrialService
from tuneyard.service.workers import WorkerInfo, WorkerService
from tuneyard.store.models import Worker

router = APIRouter(prefix="/api/v1")


def _worker_out(w: Worker) -> WorkerOut:
    return WorkerOut.model_validate(w, from_attributes=True)


# -- workers ---------------------------------------------------------------------------------
@router.post(
    "/workers", status_code=201, response_model=WorkerOut, responses=E422, dependencies=[WORKER]
)
def register_worker(body: WorkerIn, kit: KitDep, who: CallerDep) -> WorkerOut:
    """A worker process announces itself (again after a restart: ``name`` is the key). A
    worker token limited to queues registers workers on its queues only."""
    check_worker_registration(kit, who, body.name, body.queue)
    info = WorkerInfo(
        name=body.name,
        host=body.host,
        pid=body.pid,
        queue=body.queue,
        slots=body.slots,
        gpus=tuple(g.model_dump() for g in body.gpus),
    )
    return _worker_out(WorkerService(kit).register(info))


@router.post(
    "/workers/{worker_id}/heartbeat",
    response_model=WorkerOut,
    responses=E404,
    dependencies=[WORKER],
)
def worker_heartbeat(worker_id: Id, kit: KitDep, body: WorkerBeatIn | None = None) -> WorkerOut:
    """The worker is alive, running ``trial_id`` (or idle)."""
    return _worker_out(WorkerService(kit).beat(worker_id, body.trial_id if body else None))


@router.delete(
    "/workers/{worker_id}", response_model=WorkerOut, responses=E404, dependencies=[WORKER]
)
def stop_worker(worker_id: Id, kit: KitDep) -> WorkerOut:
    """The worker stopped cleanly; it stays listed with ``include_stopped``."""
    return _worker_out(WorkerService(kit).stop(worker_id))


@router.get("/workers", response_model=list[WorkerOut], dependencies=[READ])
def list_workers(
    kit: KitDep,
    include_stopped: bool = False,
    limit: Annotated[int, Query(ge=1, le=5000)] = 500,
) -> list[WorkerOut]:
    """Attached workers with their hardware; one silent for longer than a lease is ``lost``."""
    return [_worker_out(w) for w in WorkerService(kit).list(include_stopped, limit)]


# -- handing a trial back ----------------------------------------------------------------------
@router.post(
    "/trials/{trial_id}/release",
    response_model=TrialSummary,
    responses={**E404, **E409, **E422},
    dependencies=[WORKER],
)
def release(trial_id: Id, body: ReleaseIn, trials: TrialsDep) -> TrialSummary:
    """Hand a running trial back unfinished (its worker is stopping): it runs again on another
    worker, from ``checkpoint`` (saved at ``step``) when given. Uses none of its retries."""
    return _summary(
        trials.release(trial_id, body.reason, body.checkpoint, body.step, attempt=body.attempt)
    )


# -- logs --------------------------------------------------------------------------------------
@router.post(
    "/trials/{trial_id}/log",
    response_model=LogChunkOut,
    responses={**E404, **E422},
    dependencies=[WORKER],
)
def append_log(trial_id: Id, body: LogChunkIn, kit: KitDep) -> LogChunkOut:
    """A chunk of an attempt's output (idempotent on attempt and offset)."""
    size = LogService(kit).append(trial_id, body.attempt, body.offset, body.text)
    return LogChunkOut(log_bytes=size)


@router.get(
    "/trials/{trial_id}/log",
    response_class=PlainTextResponse,
    responses={200: {"content": {"text/plain": {}}}, **E404},
    dependencies=[READ],
)
def read_log(
    trial_id: Id, kit: KitDep, attempt: Annotated[int | None, Query(ge=1)] = None
) -> PlainTextResponse:
    """The objective's whole standard output and error, every attempt (or one)."""
    return PlainTextResponse(LogService(kit).read(trial_id, attempt))


# -- checkpoints -------------------------------------------------------------------------------
@router.put(
    "/trials/{trial_id}/checkpoint",
    status_code=201,
    response_model=CheckpointOut,
    responses={**E404, **E409, **E422},
    dependencies=[WORKER],
)
async def upload_checkpoint(
    trial_id: Id, attempt: Annotated[int, Query(ge=1, le=MAX_INT32)], request: Request, kit: KitDep
) -> CheckpointOut:
    """Store a checkpoint archive (``tar.gz`` body) of the live ``attempt`` of a running
    trial; the answer's location goes with /pause. A promoted trial's next worker downloads
    it from here. Another attempt's upload is refused (409) before its body is read."""
    await run_in_threadpool(TrialService(kit).check_live, trial_id, attempt)
    files = CheckpointFiles(kit)
    location = await files.put(trial_id, request.stream(), kit.settings.max_checkpoint_bytes)
    return CheckpointOut(location=location)


@router.get(
    "/trials/{trial_id}/checkpoint/{digest}",
    response_class=FileResponse,
    responses={200: {"content": {"application/gzip": {}}}, **E404, **E422},
    dependencies=[WORKER],
)
def download_checkpoint(trial_id: Id, digest: str, kit: KitDep) -> Response:
    """A checkpoint archive uploaded earlier, by the digest in its location."""
    path = CheckpointFiles(kit).path(trial_id, digest)
    return FileResponse(path, media_type="application/gzip", filename=f"trial-{trial_id}.tar.gz")

"""Checkpoints worth keeping: a running trial's latest checkpoint (``checkpoint_every``), from
which a retry resumes, and a completed trial's model."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import FileResponse
from starlette.background import BackgroundTask

from tuneyard.api.auth import READ, WORKER
from tuneyard.api.deps import Id, KitDep, TrialsDep
from tuneyard.api.routes import E404, E409, E422, _summary
from tuneyard.api.schemas import CheckpointIn, TrialSummary
from tuneyard.service.artifacts import ModelFiles

router = APIRouter(prefix="/api/v1")


@router.post(
    "/trials/{trial_id}/checkpoint",
    response_model=TrialSummary,
    responses={**E404, **E409, **E422},
    dependencies=[WORKER],
)
def record_checkpoint(trial_id: Id, body: CheckpointIn, trials: TrialsDep) -> TrialSummary:
    """The live attempt saved the trial's state at ``step`` (a step it reported) and stored
    it at ``checkpoint`` (uploaded with PUT, or a shared directory): should the attempt end
    unfinished, the trial runs again from there. Idempotent."""
    t = trials.checkpointed(trial_id, body.checkpoint, body.step, attempt=body.attempt)
    return _summary(t)


@router.get(
    "/trials/{trial_id}/model",
    response_class=FileResponse,
    responses={
        200: {"content": {"application/gzip": {}}, "description": "the model, a tar.gz"},
        404: E404[404] | {"description": "no such trial, or it has no model (the detail says why)"},
    },
    dependencies=[READ],
)
def download_model(trial_id: Id, kit: KitDep) -> FileResponse:
    """A completed trial's model: its final checkpoint, what its objective last saved with
    ``trial.save()``, as a ``tar.gz``. Kept for the best ``limits.keep_models`` completed
    trials of a study; a 404 says why a trial has none."""
    path, temporary = ModelFiles(kit).archive(trial_id)
    return FileResponse(
        path,
        media_type="application/gzip",
        filename=f"trial-{trial_id}-model.tar.gz",
        background=BackgroundTask(path.unlink, missing_ok=True) if temporary else None,
    )

"""Trials run elsewhere, brought into a study as its history (``tuneyard import optuna``)."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from tuneyard.api.auth import WRITE
from tuneyard.api.deps import Id, KitDep
from tuneyard.api.routes import E404, E409, E422
from tuneyard.protocol import ImportIn, ImportOut
from tuneyard.service.imports import ImportService

router = APIRouter(prefix="/api/v1")


@router.post(
    "/studies/{study_id}/trials/import",
    status_code=201,
    response_model=ImportOut,
    responses={**E404, **E409, **E422},
    dependencies=[WRITE],
)
async def import_trials(study_id: Id, body: ImportIn, kit: KitDep) -> ImportOut:
    """Store trials that ran elsewhere (completed or pruned, with their intermediate values)
    as the study's next trials: its model-based sampler learns from them, and they count
    towards ``max_trials``. A bad trial refuses the batch with a 422 naming ``trials[i]``."""
    numbers = await run_in_threadpool(ImportService(kit).import_trials, study_id, body.trials)
    return ImportOut(imported=len(numbers), numbers=numbers)

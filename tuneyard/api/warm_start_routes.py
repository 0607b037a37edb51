"""A warm-started study's priors: the earlier studies' observations its sampler was given."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from tuneyard.api.auth import READ
from tuneyard.api.deps import Id, KitDep
from tuneyard.api.routes import E404, E422
from tuneyard.protocol import PriorsOut
from tuneyard.service.warm_start import WarmStartView

router = APIRouter(prefix="/api/v1")


@router.get(
    "/studies/{study_id}/priors",
    response_model=PriorsOut,
    responses={**E404, **E422},
    dependencies=[READ],
)
def get_priors(
    study_id: Id,
    kit: KitDep,
    limit: Annotated[
        int, Query(ge=1, le=10_000, description="most observations to list (the best)")
    ] = 2000,
) -> PriorsOut:
    """The observations of the studies named in ``warm_start`` that this study's sampler was
    given, with their sources; they are priors, not counted in its trials or budget. A study
    without ``warm_start`` has none."""
    return WarmStartView(kit).priors(study_id, limit)

"""A pbt or pb2 study's population: members' lineages, the exploits, the best schedule."""

from __future__ import annotations

from fastapi import APIRouter

from tuneyard.api.auth import READ
from tuneyard.api.deps import Id, KitDep
from tuneyard.api.routes import E404, E409
from tuneyard.protocol import LineageOut, PopulationOut
from tuneyard.service.population_results import PopulationResults

router = APIRouter(prefix="/api/v1")


@router.get(
    "/trials/{trial_id}/lineage",
    response_model=LineageOut,
    responses={**E404, **E409},
    dependencies=[READ],
)
def get_lineage(trial_id: Id, kit: KitDep) -> LineageOut:
    """A member of a pbt or pb2 study: its step at every interval boundary (kept, or cloned
    a donor and explored, with why) and its replayable schedule."""
    return PopulationResults(kit).lineage(trial_id)


@router.get(
    "/studies/{study_id}/population",
    response_model=PopulationOut,
    responses={**E404, **E409},
    dependencies=[READ],
)
def get_population(study_id: Id, kit: KitDep) -> PopulationOut:
    """A pbt or pb2 study's exploits (each member's jump to its donor's curve) and its best
    member's lineage."""
    return PopulationResults(kit).population(study_id)


@router.get(
    "/studies/{study_id}/schedule",
    response_model=LineageOut,
    responses={**E404, **E409},
    dependencies=[READ],
)
def get_schedule(study_id: Id, kit: KitDep) -> LineageOut:
    """The best member's lineage; its ``schedule`` (a list of resource and parameters)
    replays its training from scratch."""
    return PopulationResults(kit).schedule(study_id)

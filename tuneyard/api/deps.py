"""Dependencies shared by the routes, as ``Annotated`` aliases."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Request

from tuneyard.api.schemas import MAX_ID
from tuneyard.service.context import Toolkit
from tuneyard.service.studies import StudyService
from tuneyard.service.trials import TrialService
from tuneyard.settings import Settings


# Coroutines, though they never wait: FastAPI runs a plain function dependency in its thread
# pool, a hand-off that costs more than building these objects.
async def _kit(request: Request) -> Toolkit:
    kit: Toolkit = request.app.state.kit
    return kit


async def _studies(request: Request) -> StudyService:
    return StudyService(request.app.state.kit)


async def _trials(request: Request) -> TrialService:
    return TrialService(request.app.state.kit)


async def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.kit.settings
    return settings


KitDep = Annotated[Toolkit, Depends(_kit)]
StudiesDep = Annotated[StudyService, Depends(_studies)]
TrialsDep = Annotated[TrialService, Depends(_trials)]
SettingsDep = Annotated[Settings, Depends(_settings)]

# Ids are 64-bit integers in both databases: a larger number is invalid input (422).
Id = Annotated[int, Path(ge=-MAX_ID, le=MAX_ID)]

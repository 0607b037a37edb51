"""Dependencies shared by the routes, as ``Annotated`` aliases."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from tuneyard.service.context import Toolkit
from tuneyard.service.studies import StudyService
from tuneyard.service.trials import TrialService
from tuneyard.settings import Settings


def _kit(request: Request) -> Toolkit:
    kit: Toolkit = request.app.state.kit
    return kit


def _studies(request: Request) -> StudyService:
    return StudyService(_kit(request))


def _trials(request: Request) -> TrialService:
    return TrialService(_kit(request))


def _settings(request: Request) -> Settings:
    return _kit(request).settings


KitDep = Annotated[Toolkit, Depends(_kit)]
StudiesDep = Annotated[StudyService, Depends(_studies)]
TrialsDep = Annotated[TrialService, Depends(_trials)]
SettingsDep = Annotated[Settings, Depends(_settings)]

"""Dependencies shared by the routes, as ``Annotated`` aliases."""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import Depends, Path, Request
from pydantic import BeforeValidator

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

# An id in a path is written one way only: decimal digits, no sign but a minus, no leading
# zero, no spaces. A lax reading ("2.0", "+2", " 2", "02" all as 2) would let the same id be
# spelled many ways, and whatever else looks at the raw path (the queue check of worker
# tokens, logs, proxies) would have to read them all the same way; this one reading is
# shared by the route and that check (tuneyard.api.auth).
_CANONICAL_ID = re.compile(r"0|-?[1-9][0-9]{0,18}")


def parse_id(value: object) -> int:
    """An id as a path spells it; ValueError for any other spelling (a 422 naming the field).

    ``re.fullmatch`` on ASCII digits: ``int()`` would also take "٢", "2_0", " 2" and "+2"."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and _CANONICAL_ID.fullmatch(value):
        return int(value)
    raise ValueError(
        "an id is an integer written in decimal digits, without sign, spaces, decimal point, "
        "exponent or leading zeros"
    )


# Ids are 64-bit integers in both databases: a larger number is invalid input (422).
Id = Annotated[int, BeforeValidator(parse_id), Path(ge=-MAX_ID, le=MAX_ID)]

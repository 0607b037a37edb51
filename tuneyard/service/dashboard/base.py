"""What the dashboard's parts share: the per-process caches, a study's version stamp and card,
and the helpers every part's queries use.

Caches here are per process and only caches: each entry is keyed by what it was computed from,
as read from the database, so several API processes serving one database stay correct.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from weakref import WeakKeyDictionary

from sqlalchemy import BigInteger, Text, any_, bindparam, func, select
from sqlalchemy import cast as sa_cast
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session

from tuneyard.errors import NotFound
from tuneyard.lru import LRU
from tuneyard.service.budget import Usage
from tuneyard.service.context import Toolkit
from tuneyard.states import FINAL_TRIAL_STATES
from tuneyard.store.models import Study, Trial

FINAL = tuple(sorted(FINAL_TRIAL_STATES))
# Rendered history, curves and params kept per process (about 0.5 MB for a study's params).
VIEW_CACHE_BYTES = 64 * 1024**2


@dataclass(frozen=True)
class Aggregates:
    version: str
    counts: dict[str, int]
    budget_used: float


@dataclass(frozen=True)
class CachedImportance:
    basis: tuple[Any, ...]
    computed: float  # time.monotonic()
    result: dict[str, Any]


def _body_size(view: tuple[str, bytes]) -> int:
    return len(view[1])


@dataclass
class Caches:
    # Keyed by (study id, creation time): SQLite may give a deleted study's id to a new one.
    aggregates: LRU[tuple[int, float], Aggregates] = field(default_factory=lambda: LRU(1024))
    importance: LRU[tuple[int, float], CachedImportance] = field(default_factory=lambda: LRU(256))
    importance_lock: threading.Lock = field(default_factory=threading.Lock)
    # (version, JSON body), bounded by the bodies' bytes.
    views: LRU[Hashable, tuple[str, bytes]] = field(
        default_factory=lambda: LRU(VIEW_CACHE_BYTES, weigh=_body_size)
    )


_CACHES: WeakKeyDictionary[Toolkit, Caches] = WeakKeyDictionary()
_CACHES_LOCK = threading.Lock()


def caches_for(kit: Toolkit) -> Caches:
    with _CACHES_LOCK:
        c = _CACHES.get(kit)
        if c is None:
            c = _CACHES[kit] = Caches()
        return c


def study_key(study: Study) -> tuple[int, float]:
    return (study.id, study.created_at.timestamp())


@dataclass(frozen=True)
class Version:
    study_id: int
    state: str
    token: str


@dataclass(frozen=True)
class Card:
    study: Study
    counts: dict[str, int]
    budget_used: float
    best: dict[str, Any] | None
    version: str
    age_s: float
    # Its budgets (trials, GPU-hours, wall time) and, while it waits for workers and no live
    # one serves its queue, a warning.
    usage: Usage
    queue_warning: str | None = None
    tags: list[str] = field(default_factory=list)


def version_token(
    state: str,
    trials_started: int,
    study_updated: datetime | None,
    trials_updated: datetime | None,
) -> str:
    """An opaque stamp that changes whenever the study or any of its trials does (a job
    that starts or ends changes its trial's row, so the slot count needs no part of it)."""
    parts = (
        state,
        trials_started,
        study_updated.timestamp() if study_updated else 0.0,
        trials_updated.timestamp() if trials_updated else 0.0,
    )
    return hashlib.blake2b(repr(parts).encode(), digest_size=8).hexdigest()


def one_of(s: Session, column: Any, values: Sequence[Any], kind: Any = BigInteger) -> Any:
    """``column IN values``: on PostgreSQL one array parameter, sent as the text of an array
    literal (a list of thousands of bound parameters, or an array adapted element by element,
    costs more to build than the lookup itself; ``repr`` of a float reads back exactly), a
    plain IN elsewhere."""
    if s.get_bind().dialect.name == "postgresql":
        literal = "{" + ",".join(map(repr, values)) + "}"
        return column == any_(sa_cast(bindparam(None, literal, type_=Text), ARRAY(kind)))
    return column.in_(list(values))


class DashboardBase:
    """The toolkit, this process's caches and the lookups every part of the service uses."""

    def __init__(self, kit: Toolkit) -> None:
        self.kit = kit
        self.caches = caches_for(kit)

    def _study(self, s: Session, study_id: int) -> Study:
        study = s.get(Study, study_id)
        if study is None:
            raise NotFound(f"study {study_id} does not exist")
        return study

    def _better(self, study: Study) -> Callable[[Any], Any]:
        return (lambda c: c.asc()) if study.direction == "minimize" else (lambda c: c.desc())

    def _latest_change(self, s: Session, study_ids: Sequence[int]) -> dict[int, datetime | None]:
        """max(updated_at) of each study's trials: one index probe per study."""
        latest = (
            select(func.max(Trial.updated_at))
            .where(Trial.study_id == Study.id)
            .correlate(Study)
            .scalar_subquery()
        )
        rows = s.execute(select(Study.id, latest).where(Study.id.in_(study_ids))).all()
        return {int(i): t for i, t in rows}

    def _token(self, study: Study, latest: datetime | None) -> str:
        return version_token(study.state, study.trials_started, study.updated_at, latest)

"""Study cards and lists: trials by state, resource used and best trial per study (cached per
version), and a study's version stamp in one query."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from tuneyard.errors import NotFound
from tuneyard.service.budget import read_usage
from tuneyard.service.dashboard.base import (
    Aggregates,
    Card,
    DashboardBase,
    Version,
    study_key,
    version_token,
)
from tuneyard.service.dashboard.notes import clean_tags, study_tags, tagged
from tuneyard.service.studies import (
    KEY,
    RungBest,
    decode_cursor,
    encode_cursor,
    rung_bests,
)
from tuneyard.service.workers import queue_warnings
from tuneyard.states import TrialState
from tuneyard.store import counters
from tuneyard.store.models import Study, Trial


class StudyCards(DashboardBase):
    def _aggregates(self, s: Session, studies: Sequence[Study]) -> dict[int, Aggregates]:
        """Trials by state and the resource trained, per study; recomputed only for the studies
        whose version moved since this process last computed them."""
        if not studies:
            return {}
        latest = self._latest_change(s, [st.id for st in studies])
        out: dict[int, Aggregates] = {}
        stale: dict[int, str] = {}
        for st in studies:
            token = self._token(st, latest.get(st.id))
            hit = self.caches.aggregates.get(study_key(st))
            if hit is not None and hit.version == token:
                out[st.id] = hit
            else:
                stale[st.id] = token
        if stale:
            counts: dict[int, dict[str, int]] = {
                i: {state.value: 0 for state in TrialState} for i in stale
            }
            used: dict[int, float] = dict.fromkeys(stale, 0.0)
            rows = s.execute(
                select(
                    Trial.study_id,
                    Trial.state,
                    func.count(),
                    func.coalesce(func.sum(Trial.resource), 0.0),
                )
                .where(Trial.study_id.in_(list(stale)))
                .group_by(Trial.study_id, Trial.state)
            )
            for sid, state, n, r in rows:
                counts[sid][state] = int(n)
                used[sid] += float(r or 0.0)
            by_id = {st.id: st for st in studies}
            for sid, token in stale.items():
                agg = Aggregates(token, counts[sid], used[sid])
                self.caches.aggregates.put(study_key(by_id[sid]), agg)
                out[sid] = agg
        return out

    def _bests(self, s: Session, studies: Sequence[Study]) -> dict[int, dict[str, Any]]:
        """Each study's best completed trial: one probe of (study, state, value) per study,
        in two queries whatever the number of studies."""

        def first(order: Any) -> Any:
            return (
                select(Trial.id)
                .where(
                    Trial.study_id == Study.id,
                    Trial.parent_id.is_(None),
                    Trial.state == TrialState.COMPLETED,
                    Trial.value.is_not(None),
                )
                .order_by(order, Trial.id)
                .limit(1)
                .correlate(Study)
                .scalar_subquery()
            )

        best = case(
            (Study.direction == "minimize", first(Trial.value.asc())),
            else_=first(Trial.value.desc()),
        )
        ids = [
            i
            for (i,) in s.execute(select(best).where(Study.id.in_([st.id for st in studies])))
            if i is not None
        ]
        rows = s.execute(
            select(Trial.id, Trial.study_id, Trial.number, Trial.value).where(Trial.id.in_(ids))
        )
        return {
            int(sid): {"trial_id": int(tid), "number": int(n), "value": float(v or 0.0)}
            for tid, sid, n, v in rows
        }

    def _cards(self, s: Session, studies: Sequence[Study]) -> list[Card]:
        aggs = self._aggregates(s, studies)
        bests = self._bests(s, studies) if studies else {}
        tags = study_tags(s, [st.id for st in studies])
        spent = counters.read_many(s, [st.id for st in studies])
        warnings = queue_warnings(s, self.kit, studies, spent)
        now = self.kit.clock()
        return [
            Card(
                study=st,
                counts=aggs[st.id].counts,
                budget_used=aggs[st.id].budget_used,
                best=bests.get(st.id),
                version=aggs[st.id].version,
                age_s=max(0.0, (now - st.created_at).total_seconds()),
                tags=tags[st.id],
                usage=read_usage(self.kit, st, spent[st.id], now),
                queue_warning=warnings.get(st.id),
            )
            for st in studies
        ]

    # -- studies -----------------------------------------------------------------------------
    def studies(
        self, limit: int, cursor: str | None, tags: Sequence[str] = ()
    ) -> tuple[list[Card], str | None]:
        """Study cards, newest first, of the studies that carry every one of ``tags``."""
        wanted = clean_tags(tags, field="tag")
        q = select(Study).where(*tagged(wanted)).order_by(Study.id.desc()).limit(limit + 1)
        if cursor:
            (last_id,) = decode_cursor(cursor, KEY)
            q = q.where(Study.id < last_id)
        with self.kit.transaction() as s:
            rows = list(s.scalars(q))
            nxt = encode_cursor([rows[limit - 1].id]) if len(rows) > limit else None
            return self._cards(s, rows[:limit]), nxt

    def study(self, study_id: int) -> tuple[Card, list[float], list[RungBest]]:
        """A study's card, the resource of each rung and the best value seen at each."""
        with self.kit.transaction() as s:
            study = self._study(s, study_id)
            (card,) = self._cards(s, [study])
            resources = list(self.kit.context(study).scheduler.resources)
            return card, resources, rung_bests(s, study)

    def version(self, study_id: int) -> Version:
        """One query: the study's row and the latest change to any of its trials."""
        latest = (
            select(func.max(Trial.updated_at)).where(Trial.study_id == study_id).scalar_subquery()
        )
        with self.kit.transaction() as s:
            row = s.execute(
                select(
                    Study.state,
                    Study.trials_started,
                    Study.updated_at,
                    latest,
                ).where(Study.id == study_id)
            ).first()
            if row is None:
                raise NotFound(f"study {study_id} does not exist")
            state, started, updated, trials_updated = row
            return Version(study_id, state, version_token(state, started, updated, trials_updated))

    def counts(self, study_id: int) -> tuple[Version, dict[str, int]]:
        """The version and the trials by state (cached per version)."""
        with self.kit.transaction() as s:
            study = self._study(s, study_id)
            agg = self._aggregates(s, [study])[study.id]
            return Version(study.id, study.state, agg.version), agg.counts

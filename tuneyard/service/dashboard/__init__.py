"""What the dashboard reads: study cards, optimization history, learning curves, a sample of
configurations, parameter importance, a trial's attempts, workers and a study's version.

Every answer comes from bounded, indexed queries, so a study of 100,000 trials with 27 reports
each costs about what a small one does beyond the aggregation done in SQL (each part's module
says how): study cards and the version stamp (:mod:`.studies`), history, curves and
configurations (:mod:`.views`), importance (:mod:`.importance`, its statistics in
:mod:`tuneyard.scheduler.importance`), a trial's page (:mod:`.trial`), the workers
(:mod:`.workers`), their attempts over time (:mod:`.timeline`) and the best value against
GPU-hours (:mod:`.budget`). The user's notes and tags are :mod:`.notes`. The version stamp
of a study is one query: its row and max(updated_at) of its trials.

Caches here are per process and only caches: each entry is keyed by what it was computed from,
as read from the database, so several API processes serving one database stay correct.
"""

from __future__ import annotations

from tuneyard.service.dashboard.base import Card, Version, version_token
from tuneyard.service.dashboard.budget import BudgetViews
from tuneyard.service.dashboard.importance import Importance
from tuneyard.service.dashboard.studies import StudyCards
from tuneyard.service.dashboard.timeline import Timeline
from tuneyard.service.dashboard.trial import TrialPage
from tuneyard.service.dashboard.views import StudyViews, space_items
from tuneyard.service.dashboard.workers import Workers

__all__ = ["Card", "DashboardService", "Version", "space_items", "version_token"]


class DashboardService(
    StudyCards, StudyViews, Importance, TrialPage, Workers, Timeline, BudgetViews
):
    """The dashboard's reads, one part per module; all share the toolkit and this process's
    caches (:class:`~tuneyard.service.dashboard.base.DashboardBase`)."""

"""The SQL board keeps each rung's cut-off exactly where the in-memory board computes it."""

from __future__ import annotations

import numpy as np
import pytest

from tuneyard.scheduler.board import MemoryBoard
from tuneyard.service.context import Toolkit
from tuneyard.settings import Settings
from tuneyard.store.board import SqlBoard
from tuneyard.store.db import make_engine, make_sessionmaker
from tuneyard.store.models import Study, Trial

RANKS = {
    "asha-promotion": lambda n: n // 3 - 1,
    "asha-stopping": lambda n: -(-n // 3) - 1,
    "median": lambda n: (n - 1) // 2,
}


@pytest.mark.parametrize("rank", sorted(RANKS))
def test_cutoff_matches_memory_board(settings: Settings, rank: str) -> None:
    engine = make_engine(settings.resolved_database_url())
    kit = Toolkit(make_sessionmaker(engine), settings)
    rng = np.random.default_rng(4)
    fn = RANKS[rank]
    memory = MemoryBoard(fn)
    with kit.transaction() as s:
        study = Study(name="b", spec={}, direction="minimize", metric="m", seed=1)
        s.add(study)
        s.flush()
        board = SqlBoard(s, study.id, [1.0, 3.0], fn)
        for i in range(120):
            t = Trial(study_id=study.id, number=i, state="running", params={}, resource_to=1.0)
            s.add(t)
            s.flush()
            # Few distinct values, so ties are common and order falls back on arrival.
            score = float(rng.integers(0, 8))
            board.record(0, 0, t.id, score)
            memory.record(0, 0, t.id, score)
            got, want = board.cutoff(0, 0), memory.cutoff(0, 0)
            assert (got is None) == (want is None), i
            if got is not None and want is not None:
                assert (got.trial_id, got.score) == (want.trial_id, want.score), i
    engine.dispose()

"""The plain report reads its trial into a plain object, positionally: its fields must be the
columns it reads, in their order."""

from __future__ import annotations

import dataclasses

from tuneyard.service.trials.reports import _PLAIN_TRIAL_COLUMNS, _TrialRow


def test_the_row_has_the_columns_read_in_their_order() -> None:
    fields = [f.name for f in dataclasses.fields(_TrialRow)]
    assert fields == [c.key for c in _PLAIN_TRIAL_COLUMNS]

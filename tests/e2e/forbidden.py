"""An objective no test worker is allowed to run: importing it leaves a mark."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

Path(os.environ.get("TUNEYARD_DATA_DIR", "."), "forbidden-imported").touch()


def run(trial: Any) -> None:
    trial.report(1, loss=0.0)

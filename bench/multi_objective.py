"""Multi-objective search quality, tuneyard against Optuna:
``python bench/multi_objective.py [--quick]``.

The code lives in the ``bench/multi_objective/`` package; the results and how to read them
are in ``bench/README.md`` (section "Multi-objective search quality").
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

# One BLAS thread per process: the benchmark runs one process per core.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.multi_objective.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())

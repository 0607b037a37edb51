"""Search-quality benchmark, tuneyard against Optuna: ``python bench/quality.py [--quick]``.

The code lives in the ``bench/quality/`` package; see ``bench/quality/README.md``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

# One BLAS thread per process: the benchmark runs one process per core.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.quality.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())

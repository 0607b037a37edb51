"""Cost of a population-based training study's paths as the population grows.

    python bench/population_paths.py [--database-url URL] [--sizes 8,64,512] [--intervals 6]

Runs a pbt study of N members in-process (interval 1), every member's job in turn, as the
service sees them: ``next`` (a resume: one lookup of the lowest rung with a waiting member),
a report that reaches the boundary (the pause), and the pause itself, which stores the
checkpoint and takes the exploit-or-keep step (the member's row, each other member's latest
row at or before the boundary, and on an exploit the donor's archive copied and its lineage
read). Checkpoints are real archives in the server's store, so exploits clone.

Reported per N: p50/p95 milliseconds and the SQL statements of each call. The step reads the
population at the boundary (O(N) rows, by design: it ranks the member against them); next and
the report must not grow with N.
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.hot_paths import QueryCounter  # noqa: E402
from tuneyard.errors import StudyFinished  # noqa: E402
from tuneyard.service.checkpoint_locations import uploaded_folder  # noqa: E402
from tuneyard.service.context import Toolkit  # noqa: E402
from tuneyard.service.studies import StudyService  # noqa: E402
from tuneyard.service.trials import TrialService  # noqa: E402
from tuneyard.settings import Settings  # noqa: E402
from tuneyard.spec import StudySpec  # noqa: E402
from tuneyard.store.db import make_engine, make_sessionmaker  # noqa: E402
from tuneyard.store.models import Base, PopulationStep  # noqa: E402


def spec(n: int, intervals: int) -> dict[str, Any]:
    return {
        "name": "bench-population",
        "metric": "loss",
        "space": {
            "lr": {"type": "float", "low": 1e-4, "high": 1.0, "log": True},
            "momentum": {"type": "float", "low": 0.0, "high": 0.99},
        },
        "sampler": {"type": "random", "seed": 1},
        "scheduler": {"type": "pbt", "population": n, "interval": 1, "max_resource": intervals},
        "limits": {"max_concurrent": 10_000},
    }


def save(settings: Settings, study_id: int, trial_id: int, content: bytes) -> str:
    """A checkpoint archive stored as the API server stores an upload; its location."""
    from tests.helpers import archive

    data = archive(content)
    digest = hashlib.sha256(data).hexdigest()
    folder = uploaded_folder(settings, study_id, trial_id)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{digest}.tar.gz").write_bytes(data)
    return f"api:{trial_id}/{digest}"


def measure(url: str, n: int, intervals: int, data_dir: str) -> dict[str, Any]:
    engine = make_engine(url)
    Base.metadata.drop_all(engine)
    Base.metadata.create_all(engine)
    settings = Settings(database_url=url, data_dir=data_dir)
    kit = Toolkit(make_sessionmaker(engine), settings)
    sid = StudyService(kit).create(StudySpec.model_validate(spec(n, intervals))).study.id
    trials = TrialService(kit)
    counter = QueryCounter(engine, kit)
    rng = np.random.default_rng(0)
    quality: dict[int, float] = {}
    t: dict[str, list[float]] = {"next": [], "report": [], "pause": []}
    q: dict[str, list[int]] = {"next": [], "report": [], "pause": []}

    def timed(kind: str, fn: Any) -> Any:
        c0, a = counter.n, time.perf_counter()
        out = fn()
        t[kind].append(time.perf_counter() - a)
        q[kind].append(counter.n - c0)
        return out

    while True:
        try:
            job = timed("next", lambda: trials.next_job(sid, "bench"))
        except StudyFinished:
            break
        assert job is not None  # one job at a time: a member is always paused or new
        tr = job.trial
        lr = float(tr.params["lr"])
        quality.setdefault(tr.id, float(rng.uniform(0.5, 1.5)))
        loss = quality[tr.id] * abs(np.log10(lr) + 1.5) / tr.resource_to + 0.01 * rng.random()
        d = timed(
            "report",
            lambda tr=tr, loss=loss: trials.report(
                tr.id, tr.resource_to, float(loss), {}, attempt=tr.attempts
            ),
        )
        if d.decision == "pause":
            where = save(settings, sid, tr.id, f"{tr.id}@{tr.resource_to}".encode())
            timed(
                "pause", lambda tr=tr, where=where: trials.pause(tr.id, where, attempt=tr.attempts)
            )
        elif d.decision != "complete":
            raise AssertionError(d.decision)
    with kit.reading() as s:
        exploits = s.query(PopulationStep).filter_by(study_id=sid, decision="exploit").count()
    engine.dispose()

    def ms(xs: list[float], p: float) -> float:
        return 1000 * float(np.quantile(xs, p))

    out: dict[str, Any] = {"n": n, "exploits": exploits, "steps": len(q["pause"])}
    for kind in t:
        out[f"{kind}_p50"] = ms(t[kind], 0.5)
        out[f"{kind}_p95"] = ms(t[kind], 0.95)
        out[f"{kind}_q"] = statistics.median(q[kind])
        out[f"{kind}_qmax"] = max(q[kind])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--database-url", default="")
    ap.add_argument("--sizes", default="8,64,512")
    ap.add_argument("--intervals", type=int, default=6)
    args = ap.parse_args()
    url = args.database_url or f"sqlite:///{tempfile.mkdtemp()}/bench.db"
    print(f"database: {url.split('@')[-1]}")
    print(
        f"{'members':>8} {'next p50/p95 ms':>16} {'report p50/p95':>15} {'pause+step p50/p95':>19}"
        f" {'SQL next/report/pause (max)':>28} {'exploits/steps':>15}"
    )
    for n in [int(x) for x in args.sizes.split(",")]:
        r = measure(url, n, args.intervals, tempfile.mkdtemp())
        print(
            f"{r['n']:>8} {r['next_p50']:>7.2f}/{r['next_p95']:<7.2f}"
            f" {r['report_p50']:>6.2f}/{r['report_p95']:<7.2f}"
            f" {r['pause_p50']:>8.2f}/{r['pause_p95']:<9.2f}"
            f" {r['next_q']:>8.0f}({r['next_qmax']})/{r['report_q']:.0f}({r['report_qmax']})"
            f"/{r['pause_q']:.0f}({r['pause_qmax']})"
            f" {r['exploits']:>8}/{r['steps']}"
        )


if __name__ == "__main__":
    main()

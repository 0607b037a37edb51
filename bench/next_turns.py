"""Cost of ``next`` per call when the calls that queued are served in one transaction.

    python bench/next_turns.py [--postgres URL] [--calls 12] [--rounds 5] [--trials 20]

On a study of TPE and ASHA (stopping mode, 4 brackets) on PostgreSQL, with ``--trials``
trials running, makes ``--calls`` suggestions ahead as the API does, then serves those calls
either one transaction each (as one call at a time is served) or all in one
(``TrialService.next_jobs``), alternating, and prints the CPU time, the wall time and the SQL
statements per call, in-process (no HTTP, nothing else running on the study)."""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from sqlalchemy import event

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import benchlib  # noqa: E402

from tests.helpers import study_spec  # noqa: E402
from tuneyard.service.context import Toolkit  # noqa: E402
from tuneyard.service.studies import StudyService  # noqa: E402
from tuneyard.service.trials import TrialService  # noqa: E402
from tuneyard.service.trials.assignment import NextCall  # noqa: E402
from tuneyard.settings import Settings  # noqa: E402
from tuneyard.spec import StudySpec  # noqa: E402
from tuneyard.store.db import make_engine, make_sessionmaker  # noqa: E402
from tuneyard.store.migrate import upgrade  # noqa: E402

DB = "tuneyard_bench_next_turns"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--postgres", default=benchlib.DEFAULT_POSTGRES)
    ap.add_argument("--calls", type=int, default=12)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--trials", type=int, default=20)
    args = ap.parse_args()
    admin = benchlib.PgAdmin(args.postgres)
    url = admin.recreate(DB)
    try:
        upgrade(url)
        engine = make_engine(url)
        statements = [0]

        @event.listens_for(engine, "before_cursor_execute")
        def count(*_: object) -> None:
            statements[0] += 1

        kit = Toolkit(
            make_sessionmaker(engine),
            Settings(database_url=url, data_dir=Path(tempfile.mkdtemp())),
        )
        spec = study_spec(
            sampler={"type": "tpe", "seed": 1, "n_startup": 3},
            scheduler={"mode": "stopping", "brackets": 4, "max_resource": 27},
            limits={"max_trials": 1_000_000, "max_concurrent": 10_000},
        )
        trials = TrialService(kit)
        sid = StudyService(kit).create(StudySpec.model_validate(spec)).study.id
        for _ in range(args.trials):
            trials.next_job(sid, "w")
        figures: dict[str, list[tuple[float, float, float]]] = {"one by one": [], "together": []}
        for _ in range(args.rounds):
            for how in figures:
                calls = []
                for i in range(args.calls):
                    early = trials.presuggest(sid)
                    if early is not None:
                        kit.ahead.hold(sid, early)
                    calls.append(NextCall(f"w{i}", early))
                statements[0] = 0
                cpu, wall = time.process_time(), time.perf_counter()
                if how == "together":
                    trials.next_jobs(sid, calls)
                else:
                    for call in calls:
                        trials.next_jobs(sid, [call])
                n = args.calls
                figures[how].append(
                    (
                        (time.process_time() - cpu) * 1000 / n,
                        (time.perf_counter() - wall) * 1000 / n,
                        statements[0] / n,
                    )
                )
        engine.dispose()
    finally:
        admin.drop(DB)
        admin.close()
    print(f"{args.calls} calls per round, {args.rounds} rounds, medians per call:")
    print("| served | CPU ms | wall ms | statements |")
    print("|---|---|---|---|")
    for how, rows in figures.items():
        cpu_ms, wall_ms, stmts = (statistics.median(col) for col in zip(*rows, strict=True))
        print(f"| {how} | {cpu_ms:.2f} | {wall_ms:.2f} | {stmts:.1f} |")


if __name__ == "__main__":
    main()

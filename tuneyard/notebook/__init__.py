"""tuneyard from Python: :func:`connect` to a service or start one with :func:`local`, then
create, run and read studies through :class:`Study`. See docs/python.md."""

from __future__ import annotations

from tuneyard.notebook.connection import Connection, Local, connect, local
from tuneyard.notebook.study import Study
from tuneyard.notebook.workers import Job

__all__ = ["Connection", "Job", "Local", "Study", "connect", "local"]

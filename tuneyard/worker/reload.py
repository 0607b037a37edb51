"""Installed entrypoints follow their source: a slot process re-imports the user's modules
when one of their files changed since it imported them.

A slot process keeps what its objectives imported, so torch, the data and a CUDA context are
paid once per process, not once per job. The user's own modules are the exception: before each
job the worker compares the size and modification time of every module file it imported that
is not part of Python, of an installed distribution (site-packages) or of tuneyard, and when
one changed it drops all of those modules from ``sys.modules``, so the objective is imported
afresh. Libraries stay imported; a change to them (a new package version) needs a restart of
the worker, as does a change to a compiled extension of the user's, which Python cannot load
twice in one process.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import logging
import os
import site
import sys
import sysconfig
from types import ModuleType

log = logging.getLogger("tuneyard.worker")

Signature = tuple[int, int] | None


def _system_roots() -> tuple[str, ...]:
    """Directories whose modules are libraries, not the user's code."""
    roots: set[str] = set()
    for key in ("stdlib", "platstdlib", "purelib", "platlib"):
        path = sysconfig.get_paths().get(key)
        if path:
            roots.add(path)
    for path in (*site.getsitepackages(), site.getusersitepackages()):
        roots.add(path)
    # Only the library directories, not the prefixes: a project under /usr/local/src is the
    # user's even where Python lives in /usr/local.
    return tuple(sorted({os.path.realpath(r) for r in roots if r}))


class UserModules:
    """The user's modules this process imported, with the size and mtime of their files as
    they were when noted."""

    def __init__(self, roots: tuple[str, ...] | None = None) -> None:
        self.roots = _system_roots() if roots is None else roots
        self.seen: dict[str, tuple[str, Signature]] = {}

    def source(self, name: str, module: ModuleType | None) -> str | None:
        """The file of a user's module; None for a library, tuneyard, a built-in."""
        if module is None or name == "__main__" or name.split(".")[0] == "tuneyard":
            return None
        file = getattr(module, "__file__", None)
        if not isinstance(file, str) or not file:
            return None
        path = os.path.realpath(file)
        if any(path.startswith(root + os.sep) for root in self.roots):
            return None
        return path

    @staticmethod
    def _signature(path: str) -> Signature:
        try:
            st = os.stat(path)
        except OSError:
            return None  # removed: counts as a change
        return st.st_mtime_ns, st.st_size

    def note(self) -> None:
        """Remember the files of user modules imported since the last call (call it right after
        an import and after each job: a module imported by the objective counts too)."""
        for name, module in list(sys.modules.items()):
            if name in self.seen:
                continue
            path = self.source(name, module)
            if path is not None:
                self.seen[name] = (path, self._signature(path))

    def changed(self) -> list[str]:
        """The noted modules whose file changed (or is gone) since noted."""
        return [
            name
            for name, (path, sig) in self.seen.items()
            if name in sys.modules and self._signature(path) != sig
        ]

    def refresh(self) -> list[str]:
        """When a noted file changed, forget every user module, so the next import reads the
        files again; returns the names of the changed ones (empty: nothing was forgotten)."""
        changed = self.changed()
        if not changed:
            return []
        for name in changed:
            # A bytecode file written in the same second as an edit of the same size would
            # be taken as current (.pyc files record whole seconds): drop it.
            cached = _cached(self.seen[name][0])
            if cached:
                with contextlib.suppress(OSError):
                    os.unlink(cached)
        for name, module in list(sys.modules.items()):
            if self.source(name, module) is not None:
                del sys.modules[name]
        self.seen.clear()
        importlib.invalidate_caches()
        log.warning("re-importing the objective: %s changed on disk", ", ".join(sorted(changed)))
        return changed


def _cached(path: str) -> str | None:
    if not path.endswith(".py"):
        return None
    try:
        return importlib.util.cache_from_source(path)
    except (NotImplementedError, ValueError):
        return None


# The slot process's own record.
MODULES = UserModules()

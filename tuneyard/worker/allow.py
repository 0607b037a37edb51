"""What a worker agrees to run: its allowlist of entrypoints and executables.

Whoever can create a study names the code its workers execute, so a worker runs only what its
operator allowed (``tuneyard worker --allow 'examples.*' --allow 'myproj.train:*'
--allow-command python3``). A job outside the list fails its trial with the reason, before
anything is imported or started, and the worker goes on serving.

Entrypoint patterns are shell-style (``fnmatch``) and match the whole ``module:function``
string: ``examples.*`` allows every function of every module under ``examples``,
``myproj.train:fit`` exactly one function. Command patterns match the executable, the first
word of ``execution.command``: a pattern without a ``/`` matches an executable named without
one (looked up on the PATH), a pattern with a ``/`` matches the executable's absolute path,
and ``*`` alone matches any executable.
An executable given as a placeholder (``{tool}``) is never allowed: a parameter must not choose
the program.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase

from tuneyard.spec import ExecutionSpec

# How a pool hands its allowlist to its slot processes.
ENV_VAR = "TUNEYARD_WORKER_ALLOWLIST"


class NotAllowed(ValueError):
    """The job names code this worker was not allowed to run."""


@dataclass(frozen=True)
class Allowlist:
    entrypoints: tuple[str, ...] = ()
    commands: tuple[str, ...] = ()

    @classmethod
    def of(cls, entrypoints: Iterable[str] = (), commands: Iterable[str] = ()) -> Allowlist:
        def clean(items: Iterable[str]) -> tuple[str, ...]:
            return tuple(dict.fromkeys(p.strip() for p in items if p and p.strip()))

        return cls(clean(entrypoints), clean(commands))

    def __bool__(self) -> bool:
        return bool(self.entrypoints or self.commands)

    def merge(self, other: Allowlist) -> Allowlist:
        return Allowlist.of(
            (*self.entrypoints, *other.entrypoints), (*self.commands, *other.commands)
        )

    # -- passing it to the slot processes ----------------------------------------------------
    def to_env(self) -> str:
        return json.dumps({"entrypoints": self.entrypoints, "commands": self.commands})

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Allowlist:
        """The allowlist a pool gave this process; empty (nothing allowed) when there is none
        or it cannot be read."""
        raw = (os.environ if environ is None else environ).get(ENV_VAR, "")
        try:
            data = json.loads(raw) if raw else {}
        except ValueError:
            return cls()
        if not isinstance(data, dict):
            return cls()
        entry = data.get("entrypoints") or []
        cmds = data.get("commands") or []
        if not isinstance(entry, list) or not isinstance(cmds, list):
            return cls()
        return cls.of([str(p) for p in entry], [str(p) for p in cmds])

    # -- checking a job ----------------------------------------------------------------------
    def check(self, execution: ExecutionSpec | None, path: str | None = None) -> None:
        """Raise :class:`NotAllowed`, naming the reason, unless this worker may run it.

        ``path`` is the PATH a command would be looked up on (default: this process's)."""
        if execution is None:
            return  # nothing to run; make_objective says so
        if execution.command:
            self._check_command(execution.command[0], path)
        elif execution.entrypoint:
            self._check_entrypoint(execution.entrypoint)

    def _check_entrypoint(self, entrypoint: str) -> None:
        if any(fnmatchcase(entrypoint, p) for p in self.entrypoints):
            return
        raise NotAllowed(
            f"this worker does not run entrypoint {entrypoint!r}: it matches none of its "
            f"--allow patterns ({_listed(self.entrypoints)}); start the worker with "
            f"--allow {entrypoint.partition(':')[0]!r}:* (or a pattern that covers it)"
        )

    def _check_command(self, exe: str, path: str | None) -> None:
        if "{" in exe or "}" in exe:
            raise NotAllowed(
                f"this worker does not run a command whose executable is a placeholder ({exe!r})"
            )
        paths = _resolve(exe, path)
        for p in self.commands:
            if p == "*":
                return
            if "/" in p:
                if any(fnmatchcase(full, p) for full in paths):
                    return
            elif "/" not in exe and fnmatchcase(exe, p):
                return
        where = f" ({paths[0]})" if paths and paths[0] != exe else ""
        raise NotAllowed(
            f"this worker does not run the executable {exe!r}{where}: it matches none of its "
            f"--allow-command patterns ({_listed(self.commands)})"
        )


def _listed(patterns: tuple[str, ...]) -> str:
    return ", ".join(repr(p) for p in patterns) if patterns else "none given"


def _resolve(exe: str, path: str | None) -> list[str]:
    """The absolute paths the executable would run from: as found, and with symbolic links
    resolved (empty when it cannot be found)."""
    found = os.path.abspath(exe) if "/" in exe else shutil.which(exe, path=path)
    if not found:
        return []
    return list(dict.fromkeys((os.path.abspath(found), os.path.realpath(found))))

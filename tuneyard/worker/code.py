"""Code that travels with its study (``execution.code``): fetched once per digest, cached,
and run in a fresh process per job, so a new upload reaches every worker with no restart.

A worker runs shipped code only for the queues it was started to accept it on
(``tuneyard worker --accept-code``): whoever can create a study on such a queue runs any
program there. Without it, a job of a study with code is handed back untouched (no trial is
taken, none fails) for a worker that accepts it, and the worker says so once.

The archive is downloaded from the API into the cache directory (``--code-cache``, by default
``<data dir>/code``), its SHA-256 checked against the digest the study names, unpacked by
:func:`tuneyard.code_archive.extract_code` (only files and directories, no absolute or '..'
names, no links, no device files) into ``<cache>/<sha256>`` and made read-only: the jobs of
that digest share it. Each job runs ``python -m tuneyard.worker.shipped ENTRYPOINT`` (or the
study's command) in that directory, the directory first on ``sys.path``; the process reports
through the same ``trial`` handle as an installed objective.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import tuneyard
from tuneyard.code_archive import BadArchive, extract_code, file_digest, remove_tree
from tuneyard.spec import ExecutionSpec
from tuneyard.worker.command import CommandObjective
from tuneyard.worker.objective import Objective, make_objective
from tuneyard.worker.reload import MODULES
from tuneyard.worker.trial import Trial

log = logging.getLogger("tuneyard.worker")

# How a pool tells its slot processes which queues they accept code on (a JSON list), and
# where they cache it.
ACCEPT_ENV = "TUNEYARD_WORKER_ACCEPT_CODE"
CACHE_ENV = "TUNEYARD_CODE_CACHE"
PREFIX = "sha256:"
# What a shipped entrypoint's process leaves for its worker: its error or returned value.
RESULT_ENV = "TUNEYARD_RESULT_FILE"
CODE_DIR_ENV = "TUNEYARD_CODE_DIR"


class CodeUnavailable(RuntimeError):
    """The study's code could not be fetched, checked or unpacked."""


class CodeApi(Protocol):
    def download_code(self, digest: str, dest: Path) -> None: ...


def accepted_queues(environ: Mapping[str, str] | None = None) -> frozenset[str]:
    """The queues this process runs shipped code for (none when unset or unreadable)."""
    raw = (os.environ if environ is None else environ).get(ACCEPT_ENV, "")
    try:
        data = json.loads(raw) if raw else []
    except ValueError:
        return frozenset()
    if not isinstance(data, list):
        return frozenset()
    return frozenset(str(q) for q in data)


def accepts(execution: ExecutionSpec | None, environ: Mapping[str, str] | None = None) -> bool:
    """Whether this worker may run the study's execution: True unless it ships code on a
    queue this worker does not accept code for."""
    if execution is None or not execution.code:
        return True
    return execution.queue in accepted_queues(environ)


def refusal(study_id: int, execution: ExecutionSpec | None) -> str:
    code = (execution.code if execution else None) or ""
    queue = execution.queue if execution else "default"
    return (
        f"study {study_id} ships its code ({code[:19]}…) and this worker was "
        f"not started with --accept-code for queue {queue!r}: its jobs are left to "
        "workers that accept code (nothing of it is fetched or run here)"
    )


class CodeCache:
    """Archives unpacked under ``root/<sha256>``, fetched from the API once per digest."""

    def __init__(self, client: CodeApi, root: Path | str) -> None:
        self.client = client
        self.root = Path(root).absolute()

    def get(self, code: str) -> Path:
        """The directory holding the code ``sha256:<hex>``, fetched and unpacked if needed."""
        digest = code.removeprefix(PREFIX)
        if len(digest) != 64 or not all(c in "0123456789abcdef" for c in digest):
            raise CodeUnavailable(f"execution.code {code!r} is not sha256:<64 hex digits>")
        final = self.root / digest
        if final.is_dir():
            return final
        self.root.mkdir(parents=True, exist_ok=True)
        stage = self.root / f".fetch-{digest[:12]}-{uuid.uuid4().hex[:8]}"
        stage.mkdir(mode=0o700)
        try:
            archive = stage / "code.tar.gz"
            try:
                self.client.download_code(digest, archive)
            except Exception as exc:
                raise CodeUnavailable(f"cannot download the code {code}: {exc}") from exc
            got = file_digest(archive)
            if got != digest:
                raise CodeUnavailable(
                    f"the archive downloaded for {code} has SHA-256 {got}: refused"
                )
            try:
                extract_code(archive, stage / "tree")
            except BadArchive as exc:
                raise CodeUnavailable(f"the code archive {code} is refused: {exc}") from exc
            try:
                os.rename(stage / "tree", final)
            except OSError:
                if not final.is_dir():  # not another slot's copy that got there first
                    raise
            log.info("fetched code %s into %s", code, final)
        finally:
            remove_tree(stage)
        return final


def _python_path(code_dir: Path) -> str:
    """The code first, then what this process's environment had, then tuneyard itself (for a
    worker run from a source tree rather than an installed package)."""
    here = str(Path(tuneyard.__file__).resolve().parent.parent)
    parts = [str(code_dir), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return os.pathsep.join(dict.fromkeys([*parts, here]))


class ShippedObjective(CommandObjective):
    """A study's shipped code, run in a fresh process for each job."""

    def __init__(
        self, execution: ExecutionSpec, code_dir: Path, api_url: str, token: str | None
    ) -> None:
        self.entrypoint = None if execution.command else execution.entrypoint
        template = (
            list(execution.command)
            if execution.command
            else [sys.executable, "-m", "tuneyard.worker.shipped", execution.entrypoint or ""]
        )
        super().__init__(template, api_url, token, cwd=code_dir, ranks=execution.ranks)
        self.code_dir = code_dir
        self._ended: dict[str, Any] = {}

    def environment(self, trial: Trial) -> dict[str, str]:
        env = {CODE_DIR_ENV: str(self.code_dir), "PYTHONPATH": _python_path(self.code_dir)}
        if self.entrypoint is not None:
            env[RESULT_ENV] = str(_result_file(trial))
        return env

    def run(self, trial: Trial, *args: Any, **kwargs: Any) -> int:
        result = _result_file(trial)
        result.unlink(missing_ok=True)
        self._ended = {}
        try:
            return super().run(trial, *args, **kwargs)
        finally:
            if self.entrypoint is not None and result.is_file():
                try:
                    self._ended = json.loads(result.read_text(encoding="utf-8"))
                except ValueError:
                    self._ended = {}
            result.unlink(missing_ok=True)

    def outcome(self) -> tuple[str | None, Any]:
        error = self._ended.get("error")
        return (error if isinstance(error, str) else None), self._ended.get("value")


def _result_file(trial: Trial) -> Path:
    return trial.checkpoint_dir.with_name(f"{trial.checkpoint_dir.name}.result.json")


def cache_dir(data_dir: Path) -> Path:
    return Path(os.environ.get(CACHE_ENV) or data_dir / "code")


def prepare_objective(
    execution: ExecutionSpec | None,
    api_url: str,
    token: str | None,
    client: CodeApi,
    data_dir: Path,
) -> Objective | CommandObjective:
    """What a job runs: the study's shipped code (fetched into the cache the first time), or
    the installed entrypoint, imported again when the user's module files changed."""
    if execution is not None and execution.code:
        code_dir = CodeCache(client, cache_dir(data_dir)).get(execution.code)
        return ShippedObjective(execution, code_dir, api_url, token)
    MODULES.refresh()
    try:
        return make_objective(execution, api_url, token)
    finally:
        MODULES.note()

"""Where a notebook's studies live: a remote service (:func:`connect`) or the embedded stack
started in this process (:func:`local`), behind one :class:`Connection`.

The connection opened last is the default one, so that ``Study.get(12)`` needs no argument
in a notebook that opened a single connection."""

from __future__ import annotations

import atexit
import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from tuneyard.client import Client

if TYPE_CHECKING:
    from tuneyard.embedded.stack import Stack
    from tuneyard.notebook.study import Study

_current: list[Connection] = []


def current() -> Connection:
    """The connection opened last and not closed yet."""
    if not _current:
        raise RuntimeError(
            "no tuneyard connection is open: call tuneyard.connect(url, token) or "
            "tuneyard.local() first, or pass connection="
        )
    return _current[-1]


class Connection:
    """A tuneyard service as the holder of ``token``: its studies, and a directory on this
    machine (``data_dir``) where :meth:`Study.optimize`'s local workers keep their work and
    checkpoints."""

    def __init__(self, client: Client, data_dir: Path, token: str | None = None) -> None:
        self.client = client
        self.data_dir = data_dir
        self.token = token
        _current.append(self)

    @property
    def url(self) -> str:
        return self.client.base_url

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.client.shown_url!r})"

    def create_study(self, definition: Mapping[str, Any] | str | os.PathLike[str]) -> Study:
        """A new study from a definition: a mapping, or the path of a YAML or JSON file."""
        from tuneyard.notebook.study import Study

        return Study.create(definition, self)

    def study(self, study_id: int) -> Study:
        """The study with this id (:class:`tuneyard.errors.NotFound` if there is none)."""
        from tuneyard.notebook.study import Study

        return Study.get(study_id, self)

    def studies(self) -> Iterator[Study]:
        """Every study of the service, newest first."""
        from tuneyard.notebook.study import Study

        for out in self.client.iter_studies():
            yield Study(out.id, out.name, self)

    def close(self) -> None:
        """Close the connection (and stop what it started); closing twice is harmless."""
        self.client.close()
        if self in _current:
            _current.remove(self)

    def __enter__(self) -> Connection:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def connect(url: str, token: str | None = None, data_dir: str | Path | None = None) -> Connection:
    """The service at ``url``, called with ``token`` (default: TUNEYARD_TOKEN; a server with
    auth off needs none). ``data_dir`` is where local workers started by ``optimize`` work
    (default: a temporary directory removed on close)."""
    client = Client(url, token=token)
    if data_dir is not None:
        return Connection(client, Path(data_dir).resolve(), token)
    tmp = tempfile.TemporaryDirectory(prefix="tuneyard-")
    conn = _TemporaryDirConnection(client, Path(tmp.name), token)
    conn.tmp = tmp
    return conn


class _TemporaryDirConnection(Connection):
    tmp: tempfile.TemporaryDirectory[str] | None = None

    def close(self) -> None:
        super().close()
        if self.tmp is not None:
            self.tmp.cleanup()
            self.tmp = None


class Local(Connection):
    """The embedded stack of ``tuneyard up``, started by this process: Redis, the API server,
    the dispatcher and a worker pool, each a child process. :meth:`close` (or leaving the
    ``with`` block, also on an exception) stops every one of them; the database and the
    logs stay in ``data_dir``."""

    def __init__(self, stack: Stack, exits: ExitStack) -> None:
        super().__init__(
            Client(stack.api_url, token=stack.token or ""), stack.data_dir, stack.token
        )
        self.stack = stack
        self._exits = exits

    def __enter__(self) -> Local:
        return self

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._exits.close()


def local(
    data_dir: str | Path | None = None,
    workers: int = 0,
    allow: Sequence[str] = (),
    auth: bool = True,
    database_url: str | None = None,
) -> Local:
    """Start the embedded stack in this process and connect to it as its admin.

    The database is SQLite in ``data_dir`` (default: a new directory under tuneyard's data
    directory, as ``tuneyard up`` makes) unless ``database_url`` names another. The stack's
    worker pool has ``workers`` slots (at least one, as ``tuneyard up`` starts): they run the
    studies whose ``execution.entrypoint`` the shipped examples or an ``allow`` pattern
    (``"mypkg.train:*"``) cover, imported from the current directory. ``optimize`` needs none
    of them: it starts workers of its own. With ``auth`` the connection holds the run's admin
    token (``.token``); without it the API, on the loopback interface, asks for none."""
    from tuneyard.embedded.stack import EXAMPLES, run_data_dir, stack
    from tuneyard.worker.allow import Allowlist

    where = run_data_dir(Path(data_dir) if data_dir is not None else None, "local")
    exits = ExitStack()
    try:
        st = exits.enter_context(
            stack(
                where,
                max(1, workers),
                paths=[os.getcwd()],
                database_url=database_url or f"sqlite:///{where / 'tuneyard.db'}",
                allow=EXAMPLES.merge(Allowlist.of(list(allow))),
                auth=auth,
            )
        )
        conn = Local(st, exits)
    except BaseException:
        exits.close()
        raise
    # A notebook whose kernel exits with the stack still open: its processes go with it.
    atexit.register(conn.close)
    exits.callback(atexit.unregister, conn.close)
    return conn

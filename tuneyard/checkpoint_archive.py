"""Checkpoint archives (``tar.gz``) read without trusting them.

A checkpoint archive comes from whatever ran on the worker that saved it, and the worker that
restores it may serve another user's trials next, so an archive is checked member by member
before anything of it is written, and its files are written by this module, never by
``tarfile``'s extraction. ``extractall(filter="data")`` is not enough on the interpreters the
package allows: Python up to 3.11.12 / 3.12.10 / 3.13.3 lets a chain of symbolic links in an
archive point outside the destination and a later member be written through it
(CVE-2025-4517, with the related CVE-2024-12718, CVE-2025-4138, CVE-2025-4330, CVE-2025-4435).
Here links are refused outright, so none can exist to be followed.

What an archive may hold: regular files and directories, under relative names without ``..``,
each named once, without setuid, setgid or sticky bits, at most ``ArchiveLimits.members``
members and ``ArchiveLimits.total_bytes`` of content. Reading is bounded too: ``tarfile``
would read an extended (pax) header of any declared size into memory, so no single read of
the decompressed stream may exceed ``_MAX_READ`` bytes and the whole stream is capped.

Standard library only: both the API server (checking an upload) and the workers (restoring)
use it.
"""

from __future__ import annotations

import gzip
import os
import shutil
import tarfile
import uuid
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

# The largest single read of the decompressed stream while a member's content is copied.
_MAX_READ = 64 * 1024
# Extended headers (pax records, GNU long names) that tarfile reads whole into memory, and on
# Python before 3.11.10 / 3.12.6 parses in time quadratic in their size (CVE-2024-6232): one
# may hold 8 KiB (a name of PATH_MAX fits), all of an archive's together 512 KiB.
_MAX_HEADER = 8 * 1024
_MAX_HEADERS = 512 * 1024
_FILE_TYPES = (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.CONTTYPE)


@dataclass(frozen=True)
class ArchiveLimits:
    members: int = 10_000
    file_bytes: int = 64 * 1024**3
    total_bytes: int = 64 * 1024**3


DEFAULT_LIMITS = ArchiveLimits()


class BadArchive(ValueError):
    """A checkpoint archive that is refused: unreadable, or holding what a checkpoint may not."""


class _BoundedStream:
    """The decompressed stream ``tarfile`` reads, with each read and the whole stream bounded,
    and errors of a damaged stream turned into :class:`BadArchive`."""

    def __init__(self, raw: gzip.GzipFile, cap: int) -> None:
        self.raw = raw
        self.cap = cap
        self.in_member = False  # set while this module copies a member's content
        self.header_bytes = 0

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            raise BadArchive("an unbounded read of the archive")
        if self.in_member:
            if size > _MAX_READ:
                raise BadArchive(f"a read of {size} bytes is over the limit of {_MAX_READ}")
        elif size > tarfile.BLOCKSIZE:
            # Outside a member's content, tarfile reads more than one block only for an
            # extended header, which it keeps in memory and parses whole.
            self.header_bytes += size
            if size > _MAX_HEADER:
                raise BadArchive(
                    f"an extended header of {size} bytes is over the limit of {_MAX_HEADER}"
                )
            if self.header_bytes > _MAX_HEADERS:
                raise BadArchive(f"the extended headers add up to more than {_MAX_HEADERS} bytes")
        if self.raw.tell() + size > self.cap:
            raise BadArchive(f"the archive unpacks to more than {self.cap} bytes")
        try:
            return self.raw.read(size)
        except (OSError, EOFError, zlib.error) as exc:
            raise BadArchive(f"not a readable tar.gz archive: {exc}") from None

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        target = offset if whence == os.SEEK_SET else self.raw.tell() + offset
        if whence not in (os.SEEK_SET, os.SEEK_CUR) or target > self.cap:
            raise BadArchive(f"the archive unpacks to more than {self.cap} bytes")
        try:
            return self.raw.seek(target)
        except (OSError, EOFError, zlib.error) as exc:
            raise BadArchive(f"not a readable tar.gz archive: {exc}") from None

    def tell(self) -> int:
        return self.raw.tell()


class _Checker:
    """Checks members one by one, in archive order; keeps what it needs to see duplicates."""

    def __init__(self, limits: ArchiveLimits) -> None:
        self.limits = limits
        self.count = 0
        self.total = 0
        self.kinds: dict[tuple[str, ...], str] = {}

    def check(self, member: tarfile.TarInfo) -> tuple[str, ...]:
        """The member's path inside the destination, as parts; :class:`BadArchive` if refused."""
        self.count += 1
        if self.count > self.limits.members:
            raise BadArchive(f"the archive holds more than {self.limits.members} members")
        name = member.name
        shown = repr(name)
        if "\x00" in name:
            raise BadArchive(f"member {shown}: its name holds a NUL character")
        if name.startswith("/"):
            raise BadArchive(f"member {shown}: an absolute path")
        raw_parts = name.split("/")
        if ".." in raw_parts:
            raise BadArchive(f"member {shown}: a '..' component would climb out of the checkpoint")
        parts = tuple(p for p in raw_parts if p not in ("", "."))
        if not parts:
            raise BadArchive(f"member {shown}: names no file inside the checkpoint")
        if member.issym():
            raise BadArchive(
                f"member {shown}: a symbolic link (to {member.linkname!r}); "
                "a checkpoint holds only files and directories"
            )
        if member.islnk():
            raise BadArchive(
                f"member {shown}: a hard link (to {member.linkname!r}); "
                "a checkpoint holds only files and directories"
            )
        if member.ischr() or member.isblk():
            raise BadArchive(f"member {shown}: a device node")
        if member.isfifo():
            raise BadArchive(f"member {shown}: a FIFO")
        is_file = member.type in _FILE_TYPES
        if not is_file and not member.isdir():
            raise BadArchive(
                f"member {shown}: a special member (type {member.type!r}); "
                "a checkpoint holds only files and directories"
            )
        if member.mode & ~0o777:
            raise BadArchive(
                f"member {shown}: mode {member.mode:#o} has setuid, setgid or sticky bits"
            )
        if is_file:
            if member.size > self.limits.file_bytes:
                raise BadArchive(
                    f"member {shown}: {member.size} bytes, over the limit of "
                    f"{self.limits.file_bytes} per file"
                )
            self.total += member.size
            if self.total > self.limits.total_bytes:
                raise BadArchive(
                    f"the archive's files add up to more than {self.limits.total_bytes} bytes"
                )
        if parts in self.kinds:
            raise BadArchive(f"member {shown}: {'/'.join(parts)!r} appears twice")
        for i in range(1, len(parts)):
            if self.kinds.get(parts[:i]) == "file":
                raise BadArchive(f"member {shown}: lies under the file {'/'.join(parts[:i])!r}")
        self.kinds[parts] = "file" if is_file else "dir"
        return parts


@contextmanager
def _open(archive: Path, limits: ArchiveLimits) -> Iterator[tuple[tarfile.TarFile, _BoundedStream]]:
    # Headers, padding and content all count against the cap; 1 KiB per member is far more
    # than the headers of any archive Python or GNU tar writes.
    cap = limits.total_bytes + 1024 * (limits.members + 2)
    with gzip.GzipFile(archive, "rb") as raw:
        stream = _BoundedStream(raw, cap)
        try:
            tar = tarfile.TarFile(fileobj=stream, mode="r")  # type: ignore[arg-type]
        except tarfile.TarError as exc:
            raise BadArchive(f"not a readable tar.gz archive: {exc}") from None
        with tar:
            yield tar, stream


def _members(
    tar: tarfile.TarFile, checker: _Checker
) -> Iterator[tuple[tarfile.TarInfo, tuple[str, ...]]]:
    """Members in archive order, read lazily (never the whole list up front)."""
    while True:
        try:
            member = tar.next()
        except tarfile.TarError as exc:
            raise BadArchive(f"not a readable tar.gz archive: {exc}") from None
        if member is None:
            return
        yield member, checker.check(member)


def check_archive(archive: Path | str, limits: ArchiveLimits = DEFAULT_LIMITS) -> int:
    """Read every header of ``archive`` and check its members; returns how many there are.

    Raises :class:`BadArchive`, naming the member and the reason, on the first refused one."""
    checker = _Checker(limits)
    with _open(Path(archive), limits) as (tar, _):
        for _ in _members(tar, checker):
            pass
    return checker.count


def extract_archive(
    archive: Path | str, dest: Path | str, limits: ArchiveLimits = DEFAULT_LIMITS
) -> None:
    """Fill ``dest`` (replacing what is there) with the files of ``archive``.

    Every member is checked before it is written; files are written by this function, each
    to a path built from the member's checked name and verified to lie inside the
    destination. The archive is unpacked into a fresh sibling of ``dest`` that takes its
    place only once everything is written, so a refused archive (:class:`BadArchive`) leaves
    ``dest`` as it was and nothing of the archive anywhere."""
    dest = Path(dest).absolute()
    dest.parent.mkdir(parents=True, exist_ok=True)
    stage = dest.parent / f".unpack-{dest.name}-{uuid.uuid4().hex[:8]}"
    stage.mkdir(mode=0o700)
    try:
        _unpack(Path(archive), stage, limits)
        if dest.is_symlink() or dest.is_file():
            dest.unlink()
        elif dest.exists():
            shutil.rmtree(dest)
        os.replace(stage, dest)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _unpack(archive: Path, stage: Path, limits: ArchiveLimits) -> None:
    root = Path(os.path.realpath(stage))
    checker = _Checker(limits)
    with _open(archive, limits) as (tar, stream):
        for member, parts in _members(tar, checker):
            target = root.joinpath(*parts)
            # Belt and braces: the checked name cannot leave the stage, and the stage holds no
            # links (none is ever written), so its real path must lie inside.
            if not Path(os.path.realpath(target)).is_relative_to(root):
                raise BadArchive(f"member {member.name!r}: would be written outside the checkpoint")
            if member.isdir():
                target.mkdir(parents=True, exist_ok=True)
                target.chmod((member.mode & 0o755) | 0o700)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            source = tar.extractfile(member)
            if source is None:  # pragma: no cover - regular members always have content
                raise BadArchive(f"member {member.name!r}: has no content")
            stream.in_member = True
            try:
                with source:
                    _write(source, target, member.size, (member.mode & 0o755) | 0o600)
            finally:
                stream.in_member = False


def _write(source: IO[bytes], target: Path, size: int, mode: int) -> None:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(target, flags, 0o600)
    with os.fdopen(fd, "wb") as out:
        left = size
        while left > 0:
            try:
                chunk = source.read(min(_MAX_READ, left))
            except tarfile.TarError as exc:
                raise BadArchive(f"not a readable tar.gz archive: {exc}") from None
            if not chunk:
                raise BadArchive(f"member {target.name!r}: the archive ends inside it")
            out.write(chunk)
            left -= len(chunk)
        os.fchmod(out.fileno(), mode)

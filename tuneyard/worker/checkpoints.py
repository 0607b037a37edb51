"""Where paused trials' checkpoints live, so a promoted trial can resume on another machine.

A worker restores only from a location it has reason to trust: ``api:<trial>/<sha256>`` (an
archive the API server stored, unpacked by :mod:`tuneyard.checkpoint_archive`, which checks
every member first) or a directory under one of its checkpoint roots (its own
``--checkpoints`` directory, and those ``TUNEYARD_CHECKPOINT_ROOTS`` names). The API server
checks the same when a worker hands a location in (service/checkpoint_locations.py); this is
the second line, for a server that was misconfigured or is not ours.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tarfile
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Protocol

from tuneyard.checkpoint_archive import extract_archive
from tuneyard.settings import Settings


class CheckpointStore(Protocol):
    def save(self, study_id: int, trial_id: int, src_dir: Path, attempt: int = 1) -> str:
        """Copy a trial's checkpoint directory into the store; returns its location."""
        ...

    def restore(self, location: str, dest_dir: Path) -> None:
        """Fill ``dest_dir`` (replacing what is there) with the checkpoint at ``location``."""
        ...


class FilesystemCheckpointStore:
    """Checkpoints under a root directory: local, or a shared filesystem (NFS, a bucket mount).

    One checkpoint per trial, at ``root/study-<id>/trial-<id>``. A save copies into a fresh
    sibling directory and renames it into place, so a reader never sees a half written
    checkpoint and the previous one is replaced only once the new one is complete. Locations
    are absolute paths (symlinks not resolved, so a mount point stays as the workers name it).
    """

    def __init__(self, root: Path | str, also: Iterable[Path | str] = ()) -> None:
        self.root = Path(root).absolute()
        # Other roots this store restores from (shared directories other workers save to).
        self.roots = [self.root, *(Path(r).absolute() for r in also)]

    def location(self, study_id: int, trial_id: int) -> Path:
        return self.root / f"study-{study_id}" / f"trial-{trial_id}"

    def save(self, study_id: int, trial_id: int, src_dir: Path, attempt: int = 1) -> str:
        final = self.location(study_id, trial_id)
        final.parent.mkdir(parents=True, exist_ok=True)
        tag = uuid.uuid4().hex[:8]
        tmp = final.parent / f".tmp-{trial_id}-{tag}"
        old = final.parent / f".old-{trial_id}-{tag}"
        try:
            shutil.copytree(src_dir, tmp)
            # rename() cannot replace a non-empty directory: move the old one aside first.
            if final.exists():
                os.replace(final, old)
            try:
                os.replace(tmp, final)
            except BaseException:
                if old.exists() and not final.exists():
                    os.replace(old, final)
                raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.rmtree(old, ignore_errors=True)
        return str(final)

    def restore(self, location: str, dest_dir: Path) -> None:
        src = path_under_roots(location, self.roots)
        if not src.is_dir():
            raise FileNotFoundError(
                f"checkpoint {location} does not exist on this machine "
                f"(is the checkpoint root {self.root} shared between the workers?)"
            )
        dest = Path(dest_dir)
        if dest.exists():
            shutil.rmtree(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(src, dest)


class CheckpointApi(Protocol):
    def upload_checkpoint(self, trial_id: int, archive: Path, *, attempt: int) -> str: ...

    def download_checkpoint(self, trial_id: int, digest: str, dest: Path) -> None: ...


class HttpCheckpointStore:
    """Checkpoints uploaded to the API server as ``tar.gz`` archives: no shared filesystem
    needed, so a trial paused on one machine resumes on any other.

    The archives this worker saved or fetched stay in a local cache (the newest ``keep``),
    so a trial resumed by the worker that paused it is restored without a download."""

    def __init__(self, client: CheckpointApi, cache_dir: Path | str, keep: int = 16) -> None:
        self.client = client
        self.cache = Path(cache_dir).absolute()
        self.keep = keep

    def save(self, study_id: int, trial_id: int, src_dir: Path, attempt: int = 1) -> str:
        self.cache.mkdir(parents=True, exist_ok=True)
        tmp = self.cache / f".pack-{trial_id}-{uuid.uuid4().hex[:8]}.tar.gz"
        try:
            with tarfile.open(tmp, "w:gz", compresslevel=1) as tar:
                _pack(tar, Path(src_dir), "")
            location = self.client.upload_checkpoint(trial_id, tmp, attempt=attempt)
            os.replace(tmp, self._cached(parse_api_location(location)[1]))
        finally:
            tmp.unlink(missing_ok=True)
        self._prune()
        return location

    def restore(self, location: str, dest_dir: Path) -> None:
        trial_id, digest = parse_api_location(location)
        cached = self._cached(digest)
        if not cached.is_file() or _sha256(cached) != digest:
            self.cache.mkdir(parents=True, exist_ok=True)
            tmp = self.cache / f".fetch-{uuid.uuid4().hex[:8]}"
            try:
                self.client.download_checkpoint(trial_id, digest, tmp)
                got = _sha256(tmp)
                if got != digest:
                    raise OSError(f"checkpoint {location} arrived damaged (sha256 {got})")
                os.replace(tmp, cached)
            finally:
                tmp.unlink(missing_ok=True)
        cached.touch()
        try:
            extract_archive(cached, dest_dir)
        except ValueError:
            cached.unlink(missing_ok=True)  # refused: not worth keeping
            raise
        self._prune()

    def _cached(self, digest: str) -> Path:
        return self.cache / f"{digest}.tar.gz"

    def _prune(self) -> None:
        """Keep the newest ``keep`` cached archives. Only archives named by their digest are
        counted: a ``.pack``/``.fetch`` file is another thread's work in progress (worker
        slots and notebook threads share the cache), and one may vanish while we look."""
        archives: list[tuple[float, Path]] = []
        for path in self.cache.iterdir():
            if not _CACHED.fullmatch(path.name):
                continue
            try:
                archives.append((path.stat().st_mtime, path))
            except FileNotFoundError:
                continue  # pruned by another thread meanwhile
        archives.sort()
        for _, old in archives[: max(0, len(archives) - self.keep)]:
            old.unlink(missing_ok=True)


class RoutingCheckpointStore:
    """Saves to one store; restores from whichever kind a location names (``api:`` for the
    API server, a directory under one of ``roots`` for a filesystem), so workers configured
    differently interoperate."""

    def __init__(
        self, save_to: CheckpointStore, http: HttpCheckpointStore, roots: Sequence[Path] = ()
    ) -> None:
        self.save_to = save_to
        self.http = http
        self.roots = [Path(r).absolute() for r in roots]
        if isinstance(save_to, FilesystemCheckpointStore):
            self.roots = [*save_to.roots, *self.roots]

    def save(self, study_id: int, trial_id: int, src_dir: Path, attempt: int = 1) -> str:
        return self.save_to.save(study_id, trial_id, src_dir, attempt)

    def restore(self, location: str, dest_dir: Path) -> None:
        if location.startswith(API_PREFIX):
            self.http.restore(location, dest_dir)
        elif not self.roots:
            raise LocationRefused(
                f"checkpoint {location!r}: this worker restores only from the API server "
                "(api: locations); set TUNEYARD_CHECKPOINT_ROOTS to the shared directories "
                "it may restore from"
            )
        else:
            src = path_under_roots(location, self.roots)
            FilesystemCheckpointStore(src.parent.parent, self.roots).restore(str(src), dest_dir)


API_PREFIX = "api:"
_API_LOCATION = re.compile(r"api:([1-9][0-9]{0,18})/([0-9a-f]{64})")
_CACHED = re.compile(r"[0-9a-f]{64}\.tar\.gz")
_TRIAL_DIR = re.compile(r"/study-[0-9]+/trial-[0-9]+$")


class LocationRefused(ValueError):
    """A checkpoint location this worker will not restore from."""


def parse_api_location(location: str) -> tuple[int, str]:
    """``api:<trial id>/<sha256>`` → (trial id, digest); the digest is lowercase hex, so it
    names a file of the cache and nothing else."""
    match = _API_LOCATION.fullmatch(location)
    if match is None:
        raise LocationRefused(f"not an API checkpoint location: {location!r}")
    return int(match[1]), match[2]


def path_under_roots(location: str, roots: Iterable[Path]) -> Path:
    """The directory a filesystem location names, once it is checked to be an absolute path
    without ``..`` that lies, symbolic links resolved, under one of ``roots``."""
    roots = list(roots)
    if "\x00" in location or not location.startswith("/"):
        raise LocationRefused(f"checkpoint {location!r}: not an absolute path")
    if ".." in location.split("/"):
        raise LocationRefused(f"checkpoint {location!r}: a '..' component")
    if not _TRIAL_DIR.search(os.path.normpath(location)):
        raise LocationRefused(
            f"checkpoint {location!r}: not a trial's checkpoint directory (…/study-N/trial-N)"
        )
    real = Path(os.path.realpath(location))
    if not any(real.is_relative_to(os.path.realpath(root)) for root in roots):
        where = ", ".join(str(r) for r in roots) or "none"
        raise LocationRefused(
            f"checkpoint {location!r} lies under none of this worker's checkpoint roots "
            f"({where}; --checkpoints and TUNEYARD_CHECKPOINT_ROOTS name them)"
        )
    return real


def _pack(tar: tarfile.TarFile, folder: Path, prefix: str) -> None:
    """Add a checkpoint directory's files and directories, in name order. A symbolic link to
    a file is stored as that file (what ``trial.load`` reads through it); anything else that
    is neither a file nor a directory is refused, as the restoring side would refuse it."""
    for entry in sorted(folder.iterdir()):
        arcname = f"{prefix}{entry.name}"
        if entry.is_symlink() and entry.is_file():
            info = tar.gettarinfo(str(entry.resolve()), arcname=arcname)
        elif entry.is_symlink() or not (entry.is_file() or entry.is_dir()):
            raise ValueError(
                f"{entry}: a checkpoint holds only files and directories "
                "(and symbolic links to files)"
            )
        else:
            info = tar.gettarinfo(str(entry), arcname=arcname)
        info.mode &= 0o755
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        if info.isdir():
            tar.addfile(info)
            _pack(tar, entry, f"{arcname}/")
        else:
            with open(entry, "rb") as f:
                tar.addfile(info, f)


def store_from_env(client: CheckpointApi, data_dir: Path) -> RoutingCheckpointStore:
    """The store ``TUNEYARD_CHECKPOINT_STORE`` names: ``api`` (the default: upload to the
    API server) or a directory shared by the workers (local disk, NFS, a bucket mount).

    It restores from the API server, from that directory, and from the directories
    ``TUNEYARD_CHECKPOINT_ROOTS`` lists (as the API server's setting of that name)."""
    http = HttpCheckpointStore(client, Path(data_dir) / "checkpoint-cache")
    roots = [Path(r) for r in Settings().checkpoint_roots]
    where = os.environ.get("TUNEYARD_CHECKPOINT_STORE", "api").strip() or "api"
    if where == "api":
        return RoutingCheckpointStore(http, http, roots)
    return RoutingCheckpointStore(FilesystemCheckpointStore(where), http, roots)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()

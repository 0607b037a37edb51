"""Where paused trials' checkpoints live, so a promoted trial can resume on another machine."""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import uuid
from pathlib import Path
from typing import Protocol


class CheckpointStore(Protocol):
    def save(self, study_id: int, trial_id: int, src_dir: Path) -> str:
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

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root).absolute()

    def location(self, study_id: int, trial_id: int) -> Path:
        return self.root / f"study-{study_id}" / f"trial-{trial_id}"

    def save(self, study_id: int, trial_id: int, src_dir: Path) -> str:
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
        src = Path(location)
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
    def upload_checkpoint(self, trial_id: int, archive: Path) -> str: ...

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

    def save(self, study_id: int, trial_id: int, src_dir: Path) -> str:
        self.cache.mkdir(parents=True, exist_ok=True)
        tmp = self.cache / f".pack-{trial_id}-{uuid.uuid4().hex[:8]}.tar.gz"
        try:
            with tarfile.open(tmp, "w:gz", compresslevel=1) as tar:
                for entry in sorted(Path(src_dir).iterdir()):
                    tar.add(entry, arcname=entry.name)
            location = self.client.upload_checkpoint(trial_id, tmp)
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
        dest = Path(dest_dir)
        if dest.exists():
            shutil.rmtree(dest)
        dest.mkdir(parents=True)
        with tarfile.open(cached, "r:gz") as tar:
            tar.extractall(dest, filter="data")
        self._prune()

    def _cached(self, digest: str) -> Path:
        return self.cache / f"{digest}.tar.gz"

    def _prune(self) -> None:
        archives = sorted(self.cache.glob("*.tar.gz"), key=lambda p: p.stat().st_mtime)
        for old in archives[: max(0, len(archives) - self.keep)]:
            old.unlink(missing_ok=True)


class RoutingCheckpointStore:
    """Saves to one store; restores from whichever kind a location names (``api:`` for the
    API server, a path for a filesystem), so workers configured differently interoperate."""

    def __init__(self, save_to: CheckpointStore, http: HttpCheckpointStore) -> None:
        self.save_to = save_to
        self.http = http

    def save(self, study_id: int, trial_id: int, src_dir: Path) -> str:
        return self.save_to.save(study_id, trial_id, src_dir)

    def restore(self, location: str, dest_dir: Path) -> None:
        if location.startswith(API_PREFIX):
            self.http.restore(location, dest_dir)
        else:
            FilesystemCheckpointStore(Path(location).parent.parent).restore(location, dest_dir)


API_PREFIX = "api:"


def parse_api_location(location: str) -> tuple[int, str]:
    """``api:<trial id>/<sha256>`` → (trial id, digest)."""
    body = location.removeprefix(API_PREFIX)
    trial, _, digest = body.partition("/")
    if not location.startswith(API_PREFIX) or not trial.isdigit() or len(digest) != 64:
        raise ValueError(f"not an API checkpoint location: {location!r}")
    return int(trial), digest


def store_from_env(client: CheckpointApi, data_dir: Path) -> RoutingCheckpointStore:
    """The store ``TUNEYARD_CHECKPOINT_STORE`` names: ``api`` (the default: upload to the
    API server) or a directory shared by the workers (local disk, NFS, a bucket mount)."""
    http = HttpCheckpointStore(client, Path(data_dir) / "checkpoint-cache")
    where = os.environ.get("TUNEYARD_CHECKPOINT_STORE", "api").strip() or "api"
    if where == "api":
        return RoutingCheckpointStore(http, http)
    return RoutingCheckpointStore(FilesystemCheckpointStore(where), http)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()

"""Where paused trials' checkpoints live, so a promoted trial can resume on another machine."""

from __future__ import annotations

import os
import shutil
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

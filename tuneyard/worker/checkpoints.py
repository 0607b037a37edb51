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
        """Fill ``dest_dir`` with the checkpoint saved at ``location``."""
        ...


class FilesystemCheckpointStore:
    """Checkpoints under a root directory: local, or a shared filesystem (NFS, a bucket mount).

    A save writes a fresh directory and renames it into place, so a reader never sees a half
    written checkpoint, and an older one is replaced only once the new one is complete.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def save(self, study_id: int, trial_id: int, src_dir: Path) -> str:
        final = self.root / f"study-{study_id}" / f"trial-{trial_id}"
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.parent / f".tmp-{trial_id}-{uuid.uuid4().hex[:8]}"
        shutil.copytree(src_dir, tmp)
        old = final.parent / f".old-{trial_id}-{uuid.uuid4().hex[:8]}"
        if final.exists():
            os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
        return str(final)

    def restore(self, location: str, dest_dir: Path) -> None:
        src = Path(location)
        if not src.is_dir():
            raise FileNotFoundError(f"checkpoint {location} does not exist on this machine")
        if dest_dir.exists():
            shutil.rmtree(dest_dir)
        shutil.copytree(src, dest_dir)

"""What trials leave behind besides numbers: their output logs and uploaded checkpoints.

Logs live in the database, in the chunks workers ship while the objective runs, so any API
server can serve them and a worker that dies mid-trial leaves what it printed until then.
Checkpoints uploaded over HTTP live under the server's data dir (shared between API servers
when there are several), one content-addressed file per save.
"""

from __future__ import annotations

import hashlib
import os
import re
import tarfile
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
from sqlalchemy import select

from tuneyard.checkpoint_archive import BadArchive, check_archive
from tuneyard.errors import Conflict, InvalidRequest, NotFound, StaleAttempt
from tuneyard.service.checkpoint_locations import own_directory, uploaded_folder
from tuneyard.service.context import Toolkit
from tuneyard.service.retention import prune_folder
from tuneyard.states import TrialState
from tuneyard.store.models import Trial, TrialLog

# Output kept per trial, all attempts together; beyond it a marker says what was dropped.
LOG_LIMIT = 16 * 1024 * 1024
# Characters of output shown on the trial itself.
TAIL_CHARS = 4000
# What a NUL character of an objective's output is stored as: PostgreSQL's text can't hold
# NUL, and U+FFFD (the replacement character) is one character for one, so the offsets a
# worker counts in characters of the output as it sent it stay those of the stored text.
NUL_STORED_AS = "\ufffd"
CHECKPOINT_PREFIX = "api:"
_DIGEST = re.compile(r"^[0-9a-f]{64}$")


class LogService:
    def __init__(self, kit: Toolkit) -> None:
        self.kit = kit

    def append(self, trial_id: int, attempt: int, offset: int, text: str) -> int:
        """Store one chunk of an attempt's output; returns the bytes the trial's log holds.

        Idempotent: a chunk already stored at (attempt, offset) is not stored again. A NUL
        character is stored as U+FFFD (``NUL_STORED_AS``), on every database alike."""
        text = text.replace("\x00", NUL_STORED_AS)
        with self.kit.transaction() as s:
            trial = s.get(Trial, trial_id, with_for_update=True, populate_existing=True)
            if trial is None:
                raise NotFound(f"trial {trial_id} does not exist")
            if 1 <= attempt < trial.attempts:
                # Output of a superseded attempt (a worker woken after the trial ran again).
                raise StaleAttempt(trial_id, attempt, trial.attempts)
            if not 1 <= attempt <= trial.attempts:
                raise InvalidRequest(
                    f"attempt: trial {trial_id} has attempts 1..{trial.attempts}, not {attempt}",
                    field="attempt",
                )
            seen = s.scalar(
                select(TrialLog.id).where(
                    TrialLog.trial_id == trial_id,
                    TrialLog.attempt == attempt,
                    TrialLog.offset == offset,
                )
            )
            if seen is not None or not text:
                return trial.log_bytes
            size = len(text.encode())
            if trial.log_bytes >= LOG_LIMIT:
                return trial.log_bytes  # the truncation marker is already stored
            if trial.log_bytes + size > LOG_LIMIT:
                keep = text.encode()[: LOG_LIMIT - trial.log_bytes].decode(errors="ignore")
                text = f"{keep}\n[output truncated: the log of a trial keeps at most "
                text += f"{LOG_LIMIT // 2**20} MiB]\n"
                size = LOG_LIMIT - trial.log_bytes
            s.add(
                TrialLog(
                    trial_id=trial_id,
                    attempt=attempt,
                    offset=offset,
                    text=text,
                    created_at=self.kit.clock(),
                )
            )
            trial.log_bytes += size
            trial.log_tail = ((trial.log_tail or "") + text)[-TAIL_CHARS:]
            return trial.log_bytes

    def read(self, trial_id: int, attempt: int | None = None) -> str:
        """The trial's whole output (or one attempt's), attempts headed by a separator line."""
        with self.kit.transaction() as s:
            trial = s.get(Trial, trial_id)
            if trial is None:
                raise NotFound(f"trial {trial_id} does not exist")
            q = select(TrialLog.attempt, TrialLog.text).where(TrialLog.trial_id == trial_id)
            if attempt is not None:
                q = q.where(TrialLog.attempt == attempt)
            rows = s.execute(q.order_by(TrialLog.attempt, TrialLog.offset)).all()
        parts: list[str] = []
        current = None
        for att, text in rows:
            if att != current and attempt is None:
                if parts and not parts[-1].endswith("\n"):
                    parts.append("\n")
                parts.append(f"----- attempt {att} -----\n")
                current = att
            parts.append(text)
        return "".join(parts)


class CheckpointFiles:
    """Checkpoint archives uploaded by workers, under ``<data_dir>/checkpoints-api``.

    A location is ``api:<trial id>/<sha256>``: the content names the file, so an upload
    repeated after a lost answer lands on the same file. Older archives of a trial are
    removed once a newer one is stored, except the one the trial currently refers to.
    An upload is checked as the restoring worker will check it (tuneyard/checkpoint_archive.py:
    only files and directories, relative names without '..', bounded sizes), so a bad
    archive is a 422 here rather than a failed resume later."""

    def __init__(self, kit: Toolkit) -> None:
        self.kit = kit
        self.root = Path(kit.settings.data_dir) / "checkpoints-api"

    def _trial(self, trial_id: int) -> Trial:
        with self.kit.transaction() as s:
            trial = s.get(Trial, trial_id)
            if trial is None:
                raise NotFound(f"trial {trial_id} does not exist")
            s.expunge(trial)
            return trial

    def _dir(self, trial: Trial) -> Path:
        return uploaded_folder(self.kit.settings, trial.study_id, trial.id)

    async def put(self, trial_id: int, body: AsyncIterator[bytes], limit: int) -> str:
        trial = self._trial(trial_id)
        if trial.state not in (TrialState.RUNNING, TrialState.COMPLETED):
            raise Conflict(
                f"trial {trial_id} is {trial.state}; a running trial uploads its checkpoints, "
                "a completed one its model"
            )
        folder = self._dir(trial)
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".upload-{uuid.uuid4().hex}"
        digest = hashlib.sha256()
        size = 0
        try:
            with open(tmp, "wb") as f:
                async for chunk in body:
                    size += len(chunk)
                    if size > limit:
                        raise InvalidRequest(
                            f"body: the checkpoint exceeds the server's limit of {limit} bytes",
                            field="body",
                        )
                    digest.update(chunk)
                    f.write(chunk)
                f.flush()
                os.fsync(f.fileno())
            if size == 0:
                raise InvalidRequest("body: the checkpoint archive is empty", field="body")
            try:
                await anyio.to_thread.run_sync(check_archive, tmp)
            except BadArchive as exc:
                raise InvalidRequest(
                    f"body: the checkpoint archive is refused: {exc}", field="body"
                ) from None
            name = digest.hexdigest()
            os.replace(tmp, folder / f"{name}.tar.gz")
        finally:
            tmp.unlink(missing_ok=True)
        # Archives this one supersedes go once the retention period has passed (the sweep
        # deletes those still there later; service/retention.py).
        current = (trial.checkpoint or "").rsplit("/", 1)[-1] or None
        await anyio.to_thread.run_sync(
            lambda: prune_folder(
                folder, {current, name}, self.kit.clock(), self.kit.settings.checkpoint_retention
            )
        )
        return f"{CHECKPOINT_PREFIX}{trial_id}/{name}"

    def path(self, trial_id: int, digest: str) -> Path:
        if not _DIGEST.match(digest):
            raise InvalidRequest("digest: not a sha256 hex digest", field="digest")
        trial = self._trial(trial_id)
        path = self._dir(trial) / f"{digest}.tar.gz"
        if not path.is_file():
            raise NotFound(f"trial {trial_id} has no checkpoint {digest}")
        return path


class ModelFiles:
    """A completed trial's model: its final checkpoint, kept while the trial ranks among its
    study's best ``limits.keep_models`` (service/retention.py)."""

    def __init__(self, kit: Toolkit) -> None:
        self.kit = kit

    def archive(self, trial_id: int) -> tuple[Path, bool]:
        """The model as a ``tar.gz`` file, and whether that file was made for this call (the
        caller removes it once sent); :class:`NotFound` saying why when there is none."""
        with self.kit.transaction() as s:
            trial = s.get(Trial, trial_id)
            if trial is None:
                raise NotFound(f"trial {trial_id} does not exist")
            state, location, study_id = trial.state, trial.checkpoint, trial.study_id
        if state != TrialState.COMPLETED:
            raise NotFound(
                f"trial {trial_id} has no model: it is {state}; a trial's final checkpoint "
                "is kept as its model once it completes"
            )
        if location is None:
            raise NotFound(
                f"trial {trial_id} has no model: its objective saved none (trial.save), or "
                "the model was deleted because the trial is not among the best of its study "
                "(limits.keep_models)"
            )
        if location.startswith(CHECKPOINT_PREFIX):
            digest = location.rsplit("/", 1)[-1]
            path = uploaded_folder(self.kit.settings, study_id, trial_id) / f"{digest}.tar.gz"
            if not path.is_file():
                raise NotFound(f"trial {trial_id} has no model: its archive {digest} is gone")
            return path, False
        folder = own_directory(self.kit.settings, study_id, trial_id, location)
        if folder is None or not folder.is_dir():
            raise NotFound(
                f"trial {trial_id} has no model this server can read: it lies in {location}, "
                "a directory the server does not see (TUNEYARD_CHECKPOINT_ROOTS)"
            )
        tmp_dir = Path(self.kit.settings.data_dir) / "tmp"
        tmp_dir.mkdir(parents=True, exist_ok=True)
        out = tmp_dir / f"model-{trial_id}-{uuid.uuid4().hex}.tar.gz"
        try:
            pack_directory(folder, out)
        except BaseException:
            out.unlink(missing_ok=True)
            raise
        return out, True


def pack_directory(folder: Path, dest: Path) -> None:
    """Write ``folder``'s files and directories, in name order, as a ``tar.gz`` at ``dest``.
    What a worker left there is not trusted: links and special files are left out, never
    followed, so nothing outside the folder is read."""

    def add(tar: tarfile.TarFile, where: Path, prefix: str) -> None:
        for entry in sorted(where.iterdir()):
            if entry.is_symlink() or not (entry.is_file() or entry.is_dir()):
                continue
            info = tar.gettarinfo(str(entry), arcname=f"{prefix}{entry.name}")
            info.mode &= 0o755
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            if info.isdir():
                tar.addfile(info)
                add(tar, entry, f"{info.name}/")
            elif info.isfile():
                with open(entry, "rb") as f:
                    tar.addfile(info, f)

    with tarfile.open(dest, "w:gz", compresslevel=1) as tar:
        add(tar, folder, "")

"""Which checkpoint locations a worker may hand in with ``/pause`` or ``/release``.

A location is stored on the trial and handed to the worker that resumes it, which then copies
what it names into the trial. So a location is accepted only when it names this trial's own
checkpoint: an archive this server stored for this trial (``api:<trial>/<sha256>``, the file
still there), or a directory ``…/study-<study>/trial-<trial>`` under one of the shared
checkpoint roots (``Settings.checkpoint_roots``, and the local workers' ``<data_dir>/checkpoints``)
where ``tuneyard worker --checkpoints DIR`` saves it. Anything else (another trial's archive,
``/etc``, a relative path, a URL) is refused with a 422 naming the field ``checkpoint``.
"""

from __future__ import annotations

import os
import posixpath
import re
from pathlib import Path

from tuneyard.errors import InvalidRequest
from tuneyard.settings import Settings

API_PREFIX = "api:"
_API_LOCATION = re.compile(r"api:([0-9]+)/(.*)", re.DOTALL)
_DIGEST = re.compile(r"[0-9a-f]{64}")


def study_folder(settings: Settings, study_id: int) -> Path:
    """Where the archives uploaded for a study's trials are kept."""
    return Path(settings.data_dir) / "checkpoints-api" / f"study-{study_id}"


def uploaded_folder(settings: Settings, study_id: int, trial_id: int) -> Path:
    """Where the archives uploaded for a trial are kept (service/artifacts.py's CheckpointFiles
    stores them there, one ``<sha256>.tar.gz`` each)."""
    return study_folder(settings, study_id) / f"trial-{trial_id}"


def _refuse(reason: str) -> InvalidRequest:
    return InvalidRequest(f"checkpoint: {reason}", field="checkpoint")


def check_location(settings: Settings, study_id: int, trial_id: int, location: str) -> str:
    """``location`` in its normal form when trial ``trial_id`` (of study ``study_id``) may be
    resumed from it; else :class:`InvalidRequest` (422) naming the field and the reason."""
    if not location:
        raise _refuse("empty; leave it out when there is no checkpoint")
    if "\x00" in location:
        raise _refuse("holds a NUL character")
    if location.startswith(API_PREFIX):
        return _check_api(settings, study_id, trial_id, location)
    return _check_path(settings, study_id, trial_id, location)


def _check_api(settings: Settings, study_id: int, trial_id: int, location: str) -> str:
    match = _API_LOCATION.fullmatch(location)
    if match is None or not _DIGEST.fullmatch(match[2]):
        raise _refuse(
            f"{location!r} is not a location this server issues "
            "(api:<trial id>/<sha256 of the archive, 64 lowercase hex digits>)"
        )
    if match[1] != str(trial_id):
        raise _refuse(f"{location!r} is a checkpoint of trial {match[1]}, not of trial {trial_id}")
    digest = match[2]
    if not (uploaded_folder(settings, study_id, trial_id) / f"{digest}.tar.gz").is_file():
        raise _refuse(
            f"trial {trial_id} has no uploaded checkpoint {digest} "
            "(upload it first with PUT /trials/{trial_id}/checkpoint)"
        )
    return f"{API_PREFIX}{trial_id}/{digest}"


def own_directory(settings: Settings, study_id: int, trial_id: int, location: str) -> Path | None:
    """The directory ``location`` names when it is still one a worker may hand in for this
    trial (its own ``…/study-<study>/trial-<trial>`` under one of the server's roots), else
    None: what the server may delete, or pack as the trial's model."""
    try:
        normal = _check_path(settings, study_id, trial_id, location)
    except InvalidRequest:
        return None
    real = Path(os.path.realpath(normal))
    # Not a link to another trial's directory.
    return real if real.as_posix().endswith(f"/study-{study_id}/trial-{trial_id}") else None


def _check_path(settings: Settings, study_id: int, trial_id: int, location: str) -> str:
    if "://" in location or not location.startswith("/"):
        raise _refuse(
            f"{location!r} is neither an api: location nor an absolute path "
            "(URLs and relative paths are not accepted)"
        )
    if ".." in location.split("/"):
        raise _refuse(f"{location!r} holds a '..' component")
    normal = posixpath.normpath(location)
    if normal.startswith("//"):  # POSIX keeps a leading '//': one slash is the same path
        normal = "/" + normal.lstrip("/")
    own = f"/study-{study_id}/trial-{trial_id}"
    if not normal.endswith(own):
        raise _refuse(
            f"{location!r} is not the directory of trial {trial_id} "
            f"(a checkpoint root's …/study-{study_id}/trial-{trial_id})"
        )
    real = Path(os.path.realpath(normal))
    roots = settings.checkpoint_root_paths()
    if not any(real.is_relative_to(os.path.realpath(root)) for root in roots):
        raise _refuse(
            f"{location!r} lies under none of the server's checkpoint roots "
            f"({', '.join(str(r) for r in roots)}; TUNEYARD_CHECKPOINT_ROOTS adds shared ones)"
        )
    return normal

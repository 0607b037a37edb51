"""A checkpoint location is accepted only when it names the trial's own checkpoint: an archive
the server stored for that trial, or the trial's directory under a shared checkpoint root. The
server checks it when it is handed in (check_location); a worker checks it again before it
restores (RoutingCheckpointStore)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from tuneyard.errors import InvalidRequest
from tuneyard.service.checkpoint_locations import check_location, uploaded_folder
from tuneyard.settings import Settings
from tuneyard.worker.checkpoints import (
    FilesystemCheckpointStore,
    HttpCheckpointStore,
    LocationRefused,
    RoutingCheckpointStore,
)

STUDY, TRIAL = 3, 7
DIGEST = hashlib.sha256(b"an archive").hexdigest()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    s = Settings(data_dir=tmp_path / "data", checkpoint_roots=[str(tmp_path / "shared")])
    folder = uploaded_folder(s, STUDY, TRIAL)
    folder.mkdir(parents=True)
    (folder / f"{DIGEST}.tar.gz").write_bytes(b"an archive")
    return s


def _refused(settings: Settings, location: str, *words: str) -> None:
    with pytest.raises(InvalidRequest) as exc:
        check_location(settings, STUDY, TRIAL, location)
    assert exc.value.status == 422 and exc.value.extra["field"] == "checkpoint"
    assert exc.value.detail.startswith("checkpoint: ")
    for w in words:
        assert w in exc.value.detail, exc.value.detail


def test_an_archive_this_server_stored_for_the_trial_is_accepted(settings: Settings) -> None:
    assert (
        check_location(settings, STUDY, TRIAL, f"api:{TRIAL}/{DIGEST}") == f"api:{TRIAL}/{DIGEST}"
    )


def test_the_trial_s_directory_under_a_root_is_accepted_in_normal_form(
    settings: Settings, tmp_path: Path
) -> None:
    own = tmp_path / "shared" / "team-a" / f"study-{STUDY}" / f"trial-{TRIAL}"
    assert check_location(settings, STUDY, TRIAL, str(own)) == str(own)
    assert check_location(settings, STUDY, TRIAL, f"/{own}/./") == str(own)
    # The local workers' directory under the server's data dir is a root without saying so.
    local = Path(settings.data_dir) / "checkpoints" / f"study-{STUDY}" / f"trial-{TRIAL}"
    assert check_location(settings, STUDY, TRIAL, str(local)) == str(local)


@pytest.mark.parametrize(
    ("location", "words"),
    [
        (f"api:{TRIAL + 1}/{DIGEST}", ("of trial 8, not of trial 7",)),
        (f"api:0{TRIAL}/{DIGEST}", ("not of trial 7",)),
        (f"api:{TRIAL}/{'0' * 64}", ("has no uploaded checkpoint",)),
        (f"api:{TRIAL}/{DIGEST.upper()}", ("not a location this server issues",)),
        (f"api:{TRIAL}/../../../etc/passwd", ("not a location this server issues",)),
        (f"api:{TRIAL}/{DIGEST}/x", ("not a location this server issues",)),
        ("api:", ("not a location this server issues",)),
        ("/etc", ("is not the directory of trial 7",)),
        (f"/etc/study-{STUDY}/trial-{TRIAL}", ("none of the server's checkpoint roots",)),
        ("relative/path", ("neither an api: location nor an absolute path",)),
        (f"study-{STUDY}/trial-{TRIAL}", ("absolute path",)),
        ("file:///etc/passwd", ("URLs",)),
        ("s3://bucket/ckpt", ("URLs",)),
        ("", ("empty",)),
        ("/shared/\x00", ("NUL",)),
    ],
)
def test_other_locations_are_refused(settings: Settings, location: str, words: tuple[str]) -> None:
    _refused(settings, location, *words)


def test_a_path_that_climbs_out_of_a_root_is_refused(settings: Settings, tmp_path: Path) -> None:
    root = tmp_path / "shared"
    _refused(settings, f"{root}/../../etc/study-{STUDY}/trial-{TRIAL}", "'..'")
    _refused(settings, f"{root}/x/../study-{STUDY}/trial-{TRIAL}", "'..'")
    # Another trial's directory under the root is not this trial's.
    _refused(settings, f"{root}/study-{STUDY}/trial-{TRIAL + 1}", "not the directory of trial 7")
    _refused(settings, f"{root}/study-{STUDY + 1}/trial-{TRIAL}", "not the directory of trial 7")


def test_a_symlink_under_a_root_that_points_out_of_it_is_refused(
    settings: Settings, tmp_path: Path
) -> None:
    (tmp_path / "elsewhere" / f"study-{STUDY}" / f"trial-{TRIAL}").mkdir(parents=True)
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "link").symlink_to(tmp_path / "elsewhere")
    _refused(
        settings,
        f"{tmp_path}/shared/link/study-{STUDY}/trial-{TRIAL}",
        "none of the server's checkpoint roots",
    )


def test_roots_come_from_the_environment_as_a_path_list_or_json(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TUNEYARD_CHECKPOINT_ROOTS", os.pathsep.join(["/mnt/a", "/mnt/b"]))
    assert Settings().checkpoint_roots == ["/mnt/a", "/mnt/b"]
    monkeypatch.setenv("TUNEYARD_CHECKPOINT_ROOTS", '["/mnt/c"]')
    assert Settings().checkpoint_roots == ["/mnt/c"]
    monkeypatch.setenv("TUNEYARD_CHECKPOINT_ROOTS", "relative")
    with pytest.raises(ValueError, match="not an absolute path"):
        Settings()


# -- the worker's own check ----------------------------------------------------------------------
class _NoApi:
    def upload_checkpoint(self, trial_id: int, archive: Path, *, attempt: int = 1) -> str:
        raise AssertionError("not used")

    def download_checkpoint(self, trial_id: int, digest: str, dest: Path) -> None:
        raise AssertionError(f"no download for a refused location ({digest!r})")


@pytest.mark.parametrize(
    "location",
    [
        "/etc",
        "relative/dir",
        "file:///etc",
        "{tmp}/shared/../secrets",
        "{tmp}/secrets",
        "{tmp}/secrets/study-1/trial-2",
        "{tmp}/shared",
        "{tmp}/shared/study-1",
        "api:1/../../../../etc/passwd/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        "api:1/" + "A" * 64,
    ],
)
def test_a_worker_restores_from_nothing_outside_its_roots(tmp_path: Path, location: str) -> None:
    (tmp_path / "shared").mkdir()
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "id_rsa").write_text("private")
    http = HttpCheckpointStore(_NoApi(), tmp_path / "cache")
    store = RoutingCheckpointStore(FilesystemCheckpointStore(tmp_path / "shared"), http)
    dest = tmp_path / "work" / "ckpt"
    with pytest.raises(LocationRefused):
        store.restore(location.format(tmp=tmp_path), dest)
    assert not dest.exists()
    # A worker that saves to the API server restores no directory unless given roots.
    with pytest.raises(LocationRefused, match="TUNEYARD_CHECKPOINT_ROOTS"):
        RoutingCheckpointStore(http, http).restore(str(tmp_path / "secrets"), dest)
    assert not dest.exists()


def test_a_worker_restores_from_a_root_it_was_given(tmp_path: Path) -> None:
    shared = FilesystemCheckpointStore(tmp_path / "shared")
    src = tmp_path / "src"
    src.mkdir()
    (src / "state.pkl").write_bytes(b"s")
    location = shared.save(1, 2, src)
    http = HttpCheckpointStore(_NoApi(), tmp_path / "cache")
    RoutingCheckpointStore(http, http, [tmp_path / "shared"]).restore(location, tmp_path / "a")
    assert (tmp_path / "a" / "state.pkl").read_bytes() == b"s"
    with pytest.raises(LocationRefused, match="none of this worker's checkpoint roots"):
        FilesystemCheckpointStore(tmp_path / "other").restore(location, tmp_path / "b")

"""Over HTTP, on SQLite and PostgreSQL: /pause and /release take only a checkpoint location
this server issued for the trial (``api:<trial>/<sha256>``, uploaded) or the trial's directory
under a configured shared root; anything else is a 422 naming ``checkpoint``, and the trial
is left as it was. Uploaded archives are checked as the restoring worker checks them."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.helpers import API, study_spec
from tuneyard.api.app import create_app
from tuneyard.settings import Settings


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "shared-checkpoints"


@pytest.fixture
def http(settings: Settings, root: Path) -> Iterator[TestClient]:
    configured = settings.model_copy(update={"checkpoint_roots": [str(root)]})
    with TestClient(create_app(configured)) as c:
        yield c


def _archive(*members: tuple[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _running(http: TestClient, scheduler: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    spec = study_spec(
        limits={"max_trials": 4, "max_concurrent": 2},
        scheduler=scheduler,
        execution={"entrypoint": "x.y:z"},
    )
    sid = http.post(f"{API}/studies", json=spec).json()["id"]
    job = http.post(f"{API}/studies/{sid}/next", json={"worker": "w1"}).json()
    return sid, job


def _told_to_pause(http: TestClient) -> tuple[int, dict[str, Any]]:
    """A running trial that has been told to pause (alone at ASHA's first rung)."""
    sid, job = _running(http, {"type": "asha", "max_resource": 9, "reduction_factor": 3})
    r = http.post(
        f"{API}/trials/{job['trial_id']}/reports",
        json={"attempt": job["attempt"], "step": 1, "value": 0.5},
    )
    assert r.status_code == 200 and r.json()["decision"] == "pause", r.text
    return sid, job


def _upload(http: TestClient, job: dict[str, Any], content: bytes) -> str:
    r = http.put(
        f"{API}/trials/{job['trial_id']}/checkpoint",
        params={"attempt": job["attempt"]},
        content=content,
    )
    assert r.status_code == 201, r.text
    location: str = r.json()["location"]
    return location


def _bad_locations(http: TestClient, sid: int, tid: int, root: Path) -> list[str]:
    # Another running trial's archive, uploaded for it.
    other = http.post(f"{API}/studies/{sid}/next", json={"worker": "w2"}).json()
    assert other["trial_id"] != tid
    elsewhere = _upload(http, other, _archive(("state.pkl", b"other")))
    return [
        elsewhere,
        f"api:{tid}/{'0' * 64}",  # a digest never uploaded for this trial
        f"api:{tid}/../../etc",
        "/etc",
        f"/etc/study-{sid}/trial-{tid}",
        "relative/path",
        "file:///etc/passwd",
        f"{root}/../escape/study-{sid}/trial-{tid}",
        f"{root}/study-{sid}/trial-{other['trial_id']}",
    ]


def _view(http: TestClient, tid: int) -> dict[str, Any]:
    t = http.get(f"{API}/trials/{tid}").json()
    keep = ("state", "pending", "checkpoint", "resource_from", "attempts", "reason")
    return {k: t.get(k) for k in keep} | {"log": t["attempt_log"], "decisions": t["decisions"]}


def _refused(r: Any) -> None:
    assert r.status_code == 422, r.text
    (error,) = r.json()["errors"]
    assert error["field"] == "checkpoint" and error["message"], r.json()


def test_pause_takes_only_this_trial_s_own_checkpoint(http: TestClient, root: Path) -> None:
    sid, job = _told_to_pause(http)
    tid = job["trial_id"]
    before = _view(http, tid)
    for location in _bad_locations(http, sid, tid, root):
        r = http.post(
            f"{API}/trials/{tid}/pause", json={"attempt": job["attempt"], "checkpoint": location}
        )
        _refused(r)
        assert _view(http, tid) == before, location

    own = _upload(http, job, _archive(("state.pkl", b"mine")))
    r = http.post(f"{API}/trials/{tid}/pause", json={"attempt": job["attempt"], "checkpoint": own})
    assert r.status_code == 200, r.text
    assert http.get(f"{API}/trials/{tid}").json()["checkpoint"] == own


def test_release_takes_only_this_trial_s_own_checkpoint(http: TestClient, root: Path) -> None:
    sid, job = _running(http, {"type": "fifo", "max_resource": 5})
    tid = job["trial_id"]
    for step in (1, 2):
        r = http.post(
            f"{API}/trials/{tid}/reports",
            json={"attempt": job["attempt"], "step": step, "value": 1.0 / step},
        )
        assert r.status_code == 200, r.text
    before = _view(http, tid)
    for location in _bad_locations(http, sid, tid, root):
        r = http.post(
            f"{API}/trials/{tid}/release",
            json={
                "attempt": job["attempt"],
                "reason": "stopping",
                "checkpoint": location,
                "step": 2,
            },
        )
        _refused(r)
        assert _view(http, tid) == before, location

    # The trial's directory under the configured root is accepted, in its normal form.
    own = root / f"study-{sid}" / f"trial-{tid}"
    r = http.post(
        f"{API}/trials/{tid}/release",
        json={"attempt": job["attempt"], "reason": "stopping", "checkpoint": f"{own}/", "step": 2},
    )
    assert r.status_code == 200, r.text
    t = http.get(f"{API}/trials/{tid}").json()
    assert (t["state"], t["checkpoint"], t["resource_from"]) == ("queued", str(own), 2)


# -- uploads -------------------------------------------------------------------------------------
def _malicious(kind: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo("escape")
        if kind == "symlink":
            info.type, info.linkname = tarfile.SYMTYPE, "/etc"
        elif kind == "absolute":
            info.name = "/etc/cron.d/job"
        else:
            info.name = "../../outside"
        tar.addfile(info, io.BytesIO(b""))
    return buf.getvalue()


@pytest.mark.parametrize("kind", ["symlink", "absolute", "dot-dot"])
def test_an_unsafe_archive_is_refused_at_upload(
    http: TestClient, settings: Settings, kind: str
) -> None:
    _, job = _running(http, {"type": "fifo", "max_resource": 5})
    r = http.put(
        f"{API}/trials/{job['trial_id']}/checkpoint",
        params={"attempt": job["attempt"]},
        content=_malicious(kind),
    )
    assert r.status_code == 422, r.text
    (error,) = r.json()["errors"]
    assert error["field"] == "body" and "member" in error["message"], r.json()
    stored = list((Path(settings.data_dir) / "checkpoints-api").rglob("*"))
    assert [p for p in stored if p.is_file()] == [], "nothing of a refused upload is kept"


def test_a_body_that_is_no_tar_gz_is_refused_at_upload(http: TestClient) -> None:
    _, job = _running(http, {"type": "fifo", "max_resource": 5})
    r = http.put(
        f"{API}/trials/{job['trial_id']}/checkpoint",
        params={"attempt": job["attempt"]},
        content=b"c" * 4096,
    )
    assert r.status_code == 422 and "not a readable tar.gz archive" in r.json()["detail"]

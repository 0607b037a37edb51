"""``tuneyard trial download`` against a fake API: unpacks a model (checked first), keeps the
archive as it is, and says why there is none."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import httpx
import pytest

from tests.fake_api import FakeApi, problem, run
from tests.helpers import archive


def test_a_model_is_unpacked_into_a_directory(
    api: FakeApi, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    api.on("GET", "/trials/7/model", httpx.Response(200, content=archive(b"weights", "model.pt")))
    r = run("trial", "download", "7")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "trial-7-model" / "model.pt").read_bytes() == b"weights"
    assert "model.pt" in r.output
    assert not list(tmp_path.glob(".*part")), "no partial file left behind"
    # Not over a directory that holds something.
    again = run("trial", "download", "7")
    assert again.exit_code == 2 and "not an empty directory" in again.output


def test_the_archive_is_kept_as_it_is_when_asked(api: FakeApi, tmp_path: Path) -> None:
    data = archive(b"w")
    api.on("GET", "/trials/7/model", httpx.Response(200, content=data))
    out = tmp_path / "m" / "best.tar.gz"
    r = run("trial", "download", "7", "-o", str(out))
    assert r.exit_code == 0, r.output
    assert out.read_bytes() == data


def test_a_trial_without_a_model_says_why(api: FakeApi, tmp_path: Path) -> None:
    why = "trial 7 has no model: it is running"
    api.on("GET", "/trials/7/model", problem(404, why))
    r = run("trial", "download", "7", "-o", str(tmp_path / "out"))
    assert r.exit_code == 1 and why in r.output
    assert not (tmp_path / "out").exists()


def test_an_archive_that_would_escape_is_refused_and_nothing_written(
    api: FakeApi, tmp_path: Path
) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo("../evil.py")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    api.on("GET", "/trials/7/model", httpx.Response(200, content=buf.getvalue()))
    r = run("trial", "download", "7", "-o", str(tmp_path / "out"))
    assert r.exit_code == 1 and "refused" in r.output
    assert not (tmp_path / "evil.py").exists() and not (tmp_path / "out").exists()

"""Studies' code over HTTP, on SQLite and PostgreSQL: an archive is uploaded by its SHA-256
once, a study names it in execution.code and records its digest, workers download it. A body
whose SHA-256 is another, one over max_code_bytes and an archive that holds what code may not
are refused with the field or the limit named, and nothing is stored; the scopes hold."""

from __future__ import annotations

import hashlib
import io
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, select

from tests.helpers import API, study_spec
from tuneyard.api.app import create_app
from tuneyard.code_archive import pack
from tuneyard.service.context import Toolkit
from tuneyard.service.tokens import Scope, TokenService
from tuneyard.settings import Settings
from tuneyard.store.db import make_sessionmaker
from tuneyard.store.models import Study


@pytest.fixture
def http(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings.model_copy(update={"max_code_bytes": 64 * 1024}))) as c:
        yield c


def code_archive(tmp_path: Path, text: str = "def run(trial):\n    return 1.0\n") -> bytes:
    root = tmp_path / "proj"
    (root / "pkg").mkdir(parents=True, exist_ok=True)
    (root / "pkg" / "__init__.py").write_text("")
    (root / "pkg" / "train.py").write_text(text)
    return pack(root, tmp_path / "code.tar.gz").path.read_bytes()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def with_code(code: str, queue: str = "default") -> dict:  # type: ignore[type-arg]
    return study_spec(execution={"entrypoint": "pkg.train:run", "queue": queue, "code": code})


def stored(settings: Settings) -> list[str]:
    folder = settings.data_dir / "code"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_upload_once_name_it_in_a_study_and_download_it(
    http: TestClient, settings: Settings, tmp_path: Path
) -> None:
    data = code_archive(tmp_path)
    digest = sha(data)
    r = http.put(f"{API}/code/{digest}", content=data)
    assert r.status_code == 201, r.text
    assert r.json() == {"code": f"sha256:{digest}", "size": len(data), "created": True}
    again = http.put(f"{API}/code/{digest}", content=data)
    assert again.status_code == 200 and again.json()["created"] is False
    assert stored(settings) == [f"{digest}.tar.gz"]  # once per digest

    study = http.post(f"{API}/studies", json=with_code(f"sha256:{digest}"))
    assert study.status_code == 201, study.text
    assert study.json()["spec"]["execution"]["code"] == f"sha256:{digest}"
    engine = create_engine(settings.resolved_database_url())
    with engine.connect() as c:
        assert c.execute(select(Study.code_digest)).scalar_one() == digest
    engine.dispose()

    got = http.get(f"{API}/code/{digest}")
    assert got.status_code == 200 and got.content == data
    assert got.headers["content-type"] == "application/gzip"


def test_a_study_naming_code_never_uploaded_is_a_422(http: TestClient) -> None:
    r = http.post(f"{API}/studies", json=with_code("sha256:" + "a" * 64))
    assert r.status_code == 422, r.text
    assert r.json()["errors"][0]["field"] == "execution.code"
    assert "no code archive" in r.json()["detail"]
    bad = http.post(f"{API}/studies", json=with_code("md5:abc"))
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "execution.code"
    assert http.get(f"{API}/studies").json()["items"] == []


def test_a_body_that_is_not_its_digest_is_refused(
    http: TestClient, settings: Settings, tmp_path: Path
) -> None:
    data = code_archive(tmp_path)
    wrong = sha(data + b"x")
    r = http.put(f"{API}/code/{wrong}", content=data)
    assert r.status_code == 422, r.text
    assert r.json()["errors"][0]["field"] == "digest"
    assert sha(data) in r.json()["detail"]
    not_hex = http.put(f"{API}/code/{'Z' * 64}", content=data)
    assert not_hex.status_code == 422 and not_hex.json()["errors"][0]["field"] == "digest"
    assert stored(settings) == []


def test_an_archive_over_max_code_bytes_is_a_413_naming_the_limit(
    http: TestClient, settings: Settings
) -> None:
    big = b"\x00" * (64 * 1024 + 1)
    r = http.put(f"{API}/code/{sha(big)}", content=big)
    assert r.status_code == 413, r.text
    assert r.json()["limit"] == "max_code_bytes"
    assert "65536 bytes" in r.json()["detail"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        for _ in range(5):
            yield b"\x00" * 20_000

    streamed = http.put(f"{API}/code/{'0' * 64}", content=chunks())
    assert streamed.status_code == 413 and streamed.json()["limit"] == "max_code_bytes"
    assert [p for p in stored(settings) if not p.startswith(".")] == []


@pytest.mark.parametrize(
    ("member", "reason"),
    [("link", "symbolic link"), ("../escape.py", "'..'"), ("/abs.py", "absolute path")],
)
def test_a_bad_archive_is_refused(
    http: TestClient, settings: Settings, member: str, reason: str
) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo(member)
        if member == "link":
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
            tar.addfile(info)
        else:
            info.size = 1
            tar.addfile(info, io.BytesIO(b"x"))
    data = buf.getvalue()
    r = http.put(f"{API}/code/{sha(data)}", content=data)
    assert r.status_code == 422, r.text
    assert r.json()["errors"][0]["field"] == "body"
    assert reason in r.json()["detail"]
    not_gzip = b"just text"
    r = http.put(f"{API}/code/{sha(not_gzip)}", content=not_gzip)
    assert r.status_code == 422 and "not a readable tar.gz" in r.json()["detail"]
    assert stored(settings) == []


def test_scopes_write_uploads_workers_download_on_their_queues(
    settings: Settings, tmp_path: Path
) -> None:
    auth = settings.model_copy(update={"auth": True})
    engine = create_engine(auth.resolved_database_url())
    tokens = TokenService(Toolkit(make_sessionmaker(engine), auth))
    secret = {
        "write": tokens.create("w", Scope.WRITE).secret,
        "read": tokens.create("r", Scope.READ).secret,
        "worker": tokens.create("any queue", Scope.WORKER).secret,
        "gpu": tokens.create("gpu", Scope.WORKER, ["gpu"]).secret,
        "cpu": tokens.create("cpu", Scope.WORKER, ["cpu"]).secret,
    }
    engine.dispose()

    def h(name: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {secret[name]}"}

    data = code_archive(tmp_path)
    digest = sha(data)
    url = f"{API}/code/{digest}"
    with TestClient(create_app(auth)) as http:
        assert http.put(url, content=data).status_code == 401
        for name in ("read", "worker", "gpu"):
            assert http.put(url, content=data, headers=h(name)).status_code == 403, name
        assert stored(auth) == []
        assert http.put(url, content=data, headers=h("write")).status_code == 201
        r = http.post(
            f"{API}/studies", json=with_code(f"sha256:{digest}", "gpu"), headers=h("write")
        )
        assert r.status_code == 201, r.text

        assert http.get(url, headers=h("write")).status_code == 403  # write is not worker
        assert http.get(url, headers=h("read")).status_code == 403
        assert http.get(url, headers=h("worker")).content == data
        assert http.get(url, headers=h("gpu")).content == data
        # A worker token of another queue learns nothing, not even whether it exists.
        assert http.get(url, headers=h("cpu")).status_code == 403
        assert http.get(f"{API}/code/{'1' * 64}", headers=h("cpu")).status_code == 403
        assert http.get(f"{API}/code/{'1' * 64}", headers=h("worker")).status_code == 404

"""A study's code archive: the same files give the same bytes (and digest) whatever their
mtimes, owners or the order the filesystem lists them in; excludes follow gitignore's rules;
a worker's cache fetches once per digest, checks the digest and unpacks nothing unsafe."""

from __future__ import annotations

import hashlib
import io
import os
import stat
import tarfile
from pathlib import Path

import pytest

from tuneyard.checkpoint_archive import ArchiveLimits, BadArchive
from tuneyard.code_archive import (
    CodeTooLarge,
    Ignore,
    check_code_archive,
    extract_code,
    pack,
    remove_tree,
)
from tuneyard.spec import ExecutionSpec
from tuneyard.worker.code import CodeCache, CodeUnavailable, accepted_queues, accepts


def project(root: Path) -> Path:
    (root / "pkg").mkdir(parents=True)
    (root / "pkg" / "__init__.py").write_text("")
    (root / "pkg" / "train.py").write_text("def run(trial):\n    return 1.0\n")
    (root / "run.sh").write_text("#!/bin/sh\n")
    (root / "run.sh").chmod(0o755)
    (root / "empty").mkdir()
    return root


def names(archive: Path) -> list[str]:
    with tarfile.open(archive) as tar:
        return tar.getnames()


def test_packing_is_deterministic_whatever_the_times_and_order(tmp_path: Path) -> None:
    a = pack(project(tmp_path / "a"), tmp_path / "a.tar.gz")
    b_root = project(tmp_path / "b")
    for p in b_root.rglob("*"):
        os.utime(p, (1_000_000_000, 1_000_000_000))
    b = pack(b_root, tmp_path / "b.tar.gz")
    assert a.digest == b.digest
    assert a.path.read_bytes() == b.path.read_bytes()
    assert a.digest == hashlib.sha256(a.path.read_bytes()).hexdigest()
    assert names(a.path) == ["empty", "pkg", "pkg/__init__.py", "pkg/train.py", "run.sh"]
    with tarfile.open(a.path) as tar:
        for m in tar.getmembers():
            assert (m.mtime, m.uid, m.gid, m.uname, m.gname) == (0, 0, 0, "", "")
        assert tar.getmember("run.sh").mode == 0o755
        assert tar.getmember("pkg/train.py").mode == 0o644
    # A changed byte is another digest.
    (b_root / "pkg" / "train.py").write_text("def run(trial):\n    return 2.0\n")
    assert pack(b_root, tmp_path / "c.tar.gz").digest != a.digest


def test_defaults_and_gitignore_are_left_out(tmp_path: Path) -> None:
    root = project(tmp_path / "p")
    for d in (".git", "__pycache__", "pkg/__pycache__", ".venv/lib", "data", "out/run1"):
        (root / d).mkdir(parents=True, exist_ok=True)
        (root / d / "x.bin").write_bytes(b"x")
    (root / "pkg" / "train.pyc").write_bytes(b"x")
    (root / "notes.log").write_text("x")
    (root / "data" / "keep.csv").write_text("x")
    (root / "pkg" / "out").write_text("a file named out")
    (root / ".gitignore").write_text("# comment\n*.log\n/data/*\n!/data/keep.csv\nout/\n")
    packed = pack(root, tmp_path / "p.tar.gz")
    assert names(packed.path) == [
        ".gitignore",
        "data",
        "data/keep.csv",
        "empty",
        "pkg",
        "pkg/__init__.py",
        "pkg/out",  # "out/" names directories only
        "pkg/train.py",
        "run.sh",
    ]
    # .tuneyardignore, when there is one, is read instead of .gitignore.
    (root / ".tuneyardignore").write_text("pkg/**/*.py\nrun.sh\n")
    packed = pack(root, tmp_path / "q.tar.gz")
    listed = names(packed.path)
    assert "pkg/train.py" not in listed and "run.sh" not in listed
    assert "notes.log" in listed and "data/x.bin" in listed


@pytest.mark.parametrize(
    ("pattern", "path", "is_dir", "ignored"),
    [
        ("*.py", "a/b/c.py", False, True),
        ("/top.txt", "top.txt", False, True),
        ("/top.txt", "sub/top.txt", False, False),
        ("a/*.txt", "a/x.txt", False, True),
        ("a/*.txt", "a/b/x.txt", False, False),
        ("a/**/x.txt", "a/b/c/x.txt", False, True),
        ("**/build", "deep/down/build", True, True),
        ("build/", "build", False, False),
        ("f?o", "foo", False, True),
        ("[ab].txt", "b.txt", False, True),
        ("[!ab].txt", "b.txt", False, False),
    ],
)
def test_ignore_patterns(pattern: str, path: str, is_dir: bool, ignored: bool) -> None:
    assert Ignore([pattern]).ignored(path, is_dir) is ignored


def test_links_are_never_packed_and_limits_hold(tmp_path: Path) -> None:
    root = project(tmp_path / "p")
    (root / "passwd").symlink_to("/etc/passwd")
    packed = pack(root, tmp_path / "p.tar.gz")
    assert packed.skipped == ["passwd"]
    assert "passwd" not in names(packed.path)
    with pytest.raises(CodeTooLarge, match="more than 10 bytes"):
        pack(root, tmp_path / "big.tar.gz", ArchiveLimits(members=100, total_bytes=10))
    with pytest.raises(CodeTooLarge, match="more than 2 files"):
        pack(root, tmp_path / "many.tar.gz", ArchiveLimits(members=2))


def _evil(path: Path, info: tarfile.TarInfo, data: bytes = b"") -> Path:
    with tarfile.open(path, "w:gz", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return path


@pytest.mark.parametrize(
    ("name", "kind", "link", "reason"),
    [
        ("/etc/cron.d/x", tarfile.REGTYPE, "", "absolute path"),
        ("../outside.py", tarfile.REGTYPE, "", "'..'"),
        ("pkg/link", tarfile.SYMTYPE, "/etc", "symbolic link"),
        ("pkg/hard", tarfile.LNKTYPE, "pkg/x", "hard link"),
        ("dev", tarfile.CHRTYPE, "", "device node"),
    ],
)
def test_unsafe_archives_are_refused_and_write_nothing(
    tmp_path: Path, name: str, kind: bytes, link: str, reason: str
) -> None:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    archive = _evil(tmp_path / "evil.tar.gz", info)
    with pytest.raises(BadArchive, match=reason):
        check_code_archive(archive)
    with pytest.raises(BadArchive, match=reason):
        extract_code(archive, tmp_path / "dest")
    assert not (tmp_path / "dest").exists()
    assert not (tmp_path / "outside.py").exists()


def test_an_unpacked_tree_is_read_only_and_removable(tmp_path: Path) -> None:
    packed = pack(project(tmp_path / "p"), tmp_path / "p.tar.gz")
    dest = tmp_path / "tree"
    extract_code(packed.path, dest)
    assert (dest / "pkg" / "train.py").read_text().startswith("def run")
    assert not (dest / "pkg" / "train.py").stat().st_mode & 0o222
    assert not (dest / "pkg").stat().st_mode & 0o222
    assert (dest / "run.sh").stat().st_mode & stat.S_IXUSR
    remove_tree(dest)
    assert not dest.exists()


class _Api:
    def __init__(self, blob: bytes) -> None:
        self.blob = blob
        self.calls: list[str] = []

    def download_code(self, digest: str, dest: Path) -> None:
        self.calls.append(digest)
        dest.write_bytes(self.blob)


def test_the_cache_fetches_once_per_digest_and_checks_what_it_got(tmp_path: Path) -> None:
    packed = pack(project(tmp_path / "p"), tmp_path / "p.tar.gz")
    api = _Api(packed.path.read_bytes())
    cache = CodeCache(api, tmp_path / "cache")
    code = f"sha256:{packed.digest}"
    first = cache.get(code)
    assert first == (tmp_path / "cache" / packed.digest)
    assert (first / "pkg" / "train.py").is_file()
    assert cache.get(code) == first
    assert api.calls == [packed.digest]  # once
    # An archive whose bytes are not the digest asked for is refused, nothing is kept.
    other = "sha256:" + "0" * 64
    with pytest.raises(CodeUnavailable, match="has SHA-256"):
        cache.get(other)
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [packed.digest]


def test_accept_code_is_per_queue_and_fails_closed() -> None:
    shipped = ExecutionSpec(entrypoint="pkg.train:run", queue="gpu", code="sha256:" + "a" * 64)
    installed = ExecutionSpec(entrypoint="pkg.train:run", queue="gpu")
    env = {"TUNEYARD_WORKER_ACCEPT_CODE": '["gpu"]'}
    assert accepts(installed, {}) and accepts(None, {})
    assert accepts(shipped, env)
    assert not accepts(shipped, {})
    assert not accepts(shipped, {"TUNEYARD_WORKER_ACCEPT_CODE": '["cpu"]'})
    assert accepted_queues({"TUNEYARD_WORKER_ACCEPT_CODE": "not json"}) == frozenset()
    assert accepted_queues({"TUNEYARD_WORKER_ACCEPT_CODE": '"gpu"'}) == frozenset()


def test_code_names_what_runs_from_it() -> None:
    digest = "sha256:" + "a" * 64
    with pytest.raises(ValueError, match="name the entrypoint or the command"):
        ExecutionSpec(code=digest)
    with pytest.raises(ValueError, match="code"):
        ExecutionSpec(entrypoint="a:b", code="sha256:" + "A" * 64)
    assert ExecutionSpec(command=["python", "train.py"], code=digest).code == digest

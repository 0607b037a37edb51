"""Checkpoint archives are checked member by member and unpacked by our own code: hand-built
malicious archives are refused with a clear reason and write nothing, anywhere; a normal
nested checkpoint makes the round trip save → archive → restore."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import stat
import tarfile
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from tuneyard.checkpoint_archive import ArchiveLimits, BadArchive, check_archive, extract_archive
from tuneyard.worker.checkpoints import HttpCheckpointStore


def _file(name: str, data: bytes = b"x", mode: int = 0o644) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    return info, data


def _special(name: str, kind: bytes, linkname: str = "") -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    return info, b""


def _archive(path: Path, *members: tuple[tarfile.TarInfo, bytes]) -> Path:
    with tarfile.open(path, "w:gz", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return path


class _Api:
    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}

    def upload_checkpoint(self, trial_id: int, archive: Path, *, attempt: int = 1) -> str:
        data = archive.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        self.blobs[digest] = data
        return f"api:{trial_id}/{digest}"

    def download_checkpoint(self, trial_id: int, digest: str, dest: Path) -> None:
        dest.write_bytes(self.blobs[digest])


@pytest.fixture
def place(tmp_path: Path) -> Path:
    """A destination that already holds a checkpoint, beside a directory an escape would hit."""
    (tmp_path / "dest").mkdir()
    (tmp_path / "dest" / "keep.pt").write_bytes(b"the previous checkpoint")
    (tmp_path / "outside").mkdir()
    return tmp_path


def _nothing_written(place: Path) -> None:
    assert sorted(p.name for p in place.iterdir()) == ["bad.tar.gz", "dest", "outside"]
    assert [p.name for p in (place / "dest").iterdir()] == ["keep.pt"]
    assert (place / "dest" / "keep.pt").read_bytes() == b"the previous checkpoint"
    assert list((place / "outside").iterdir()) == []


# Each: the members, then words the refusal must hold.
MALICIOUS: list[tuple[str, Callable[[Path], list[tuple[tarfile.TarInfo, bytes]]], str]] = [
    ("absolute path", lambda p: [_file(str(p / "outside" / "pwned"))], "an absolute path"),
    ("dot-dot escape", lambda p: [_file("../outside/pwned")], "'..'"),
    ("dot-dot inside", lambda p: [_file("a/../../outside/pwned")], "'..'"),
    (
        # The CVE-2025-4517 shape: a chain of links that ends outside, then a file through it.
        "symlink chain then a file through it",
        lambda p: [
            _special("d", tarfile.DIRTYPE),
            _special("d/up", tarfile.SYMTYPE, "../../outside"),
            _special("escape", tarfile.SYMTYPE, "d/up"),
            _file("escape/pwned", b"owned"),
        ],
        "symbolic link",
    ),
    ("absolute symlink", lambda p: [_special("l", tarfile.SYMTYPE, "/etc")], "symbolic link"),
    (
        "hard link to /etc/passwd",
        lambda p: [_special("passwd", tarfile.LNKTYPE, "/etc/passwd")],
        "hard link",
    ),
    ("character device", lambda p: [_special("null", tarfile.CHRTYPE)], "device node"),
    ("block device", lambda p: [_special("sda", tarfile.BLKTYPE)], "device node"),
    ("fifo", lambda p: [_special("pipe", tarfile.FIFOTYPE)], "FIFO"),
    ("setuid file", lambda p: [_file("run.sh", b"#!/bin/sh\n", 0o4755)], "setuid"),
    ("setgid directory", lambda p: [_special("d", tarfile.DIRTYPE)], "setuid, setgid or sticky"),
    ("name '.'", lambda p: [_special(".", tarfile.DIRTYPE)], "names no file"),
    ("name './'", lambda p: [_file("./")], "names no file"),
    ("a member twice", lambda p: [_file("a.pt"), _file("./a.pt")], "appears twice"),
    ("a file under a file", lambda p: [_file("a"), _file("a/b")], "lies under the file 'a'"),
]


def _setgid(members: list[tuple[tarfile.TarInfo, bytes]]) -> list[tuple[tarfile.TarInfo, bytes]]:
    for info, _ in members:
        info.mode |= stat.S_ISGID
    return members


@pytest.mark.parametrize(
    ("build", "words"), [m[1:] for m in MALICIOUS], ids=[m[0] for m in MALICIOUS]
)
def test_a_malicious_archive_is_refused_and_writes_nothing(
    place: Path,
    tmp_path_factory: pytest.TempPathFactory,
    build: Callable[[Path], list[tuple[tarfile.TarInfo, bytes]]],
    words: str,
) -> None:
    members = build(place)
    if words == "setuid, setgid or sticky":
        members = _setgid(members)
    archive = _archive(place / "bad.tar.gz", *members)
    with pytest.raises(BadArchive, match="member") as refused:
        check_archive(archive)
    assert words in str(refused.value)
    with pytest.raises(BadArchive) as again:
        extract_archive(archive, place / "dest")
    assert words in str(again.value)
    _nothing_written(place)
    # A worker restoring it from the API server refuses it the same way.
    api = _Api()
    data = archive.read_bytes()
    api.blobs[hashlib.sha256(data).hexdigest()] = data
    store = HttpCheckpointStore(api, tmp_path_factory.mktemp("cache"))
    with pytest.raises(BadArchive) as restored:
        store.restore(f"api:1/{hashlib.sha256(data).hexdigest()}", place / "dest")
    assert words in str(restored.value)
    _nothing_written(place)


def test_a_name_with_a_nul_character_is_refused(place: Path) -> None:
    info, data = _file("ab")
    info.pax_headers = {"path": "a\x00b"}  # ustar names end at a NUL; a pax path need not
    archive = _archive(place / "bad.tar.gz", (info, data))
    with pytest.raises(BadArchive, match="NUL character"):
        extract_archive(archive, place / "dest")
    _nothing_written(place)


def test_an_archive_past_the_bounds_is_refused(place: Path) -> None:
    archive = _archive(place / "bad.tar.gz", *(_file(f"f{i}", b"12345") for i in range(6)))
    with pytest.raises(BadArchive, match="more than 5 members"):
        extract_archive(archive, place / "dest", ArchiveLimits(members=5))
    with pytest.raises(BadArchive, match=r"'f0': 5 bytes, over the limit of 4 per file"):
        extract_archive(archive, place / "dest", ArchiveLimits(file_bytes=4))
    with pytest.raises(BadArchive, match="add up to more than 12 bytes"):
        extract_archive(archive, place / "dest", ArchiveLimits(total_bytes=12))
    _nothing_written(place)
    # Within the bounds, the same archive unpacks.
    extract_archive(archive, place / "dest", ArchiveLimits(members=6, total_bytes=30))
    assert sorted(p.name for p in (place / "dest").iterdir()) == [f"f{i}" for i in range(6)]


def test_a_huge_declared_size_is_refused_before_anything_is_read(place: Path) -> None:
    info, _ = _file("weights.pt")
    info.size = 2**40  # declared, not present: the header alone must be enough to refuse it
    raw = io.BytesIO()
    raw.write(info.tobuf(format=tarfile.PAX_FORMAT))
    raw.write(b"\0" * 1024)
    (place / "bad.tar.gz").write_bytes(gzip.compress(raw.getvalue()))
    with pytest.raises(BadArchive, match="over the limit"):
        extract_archive(place / "bad.tar.gz", place / "dest")
    _nothing_written(place)


def test_an_oversized_extended_header_is_refused(place: Path) -> None:
    info, data = _file("a")
    info.pax_headers = {"comment": "1" * 20_000}  # tarfile would hold and parse it whole
    archive = _archive(place / "bad.tar.gz", (info, data))
    with pytest.raises(BadArchive, match="extended header"):
        extract_archive(archive, place / "dest")
    _nothing_written(place)


@pytest.mark.parametrize(
    "content",
    [b"", b"not an archive at all", b"\x1f\x8b\x08\x00garbage"],
    ids=["empty", "text", "damaged gzip"],
)
def test_an_unreadable_archive_is_refused(place: Path, content: bytes) -> None:
    (place / "bad.tar.gz").write_bytes(content)
    with pytest.raises(BadArchive):
        extract_archive(place / "bad.tar.gz", place / "dest")
    _nothing_written(place)


def test_a_truncated_archive_is_refused_and_leaves_the_old_checkpoint(place: Path) -> None:
    whole = _archive(place / "whole.tar.gz", _file("big.pt", os.urandom(200_000)))
    (place / "bad.tar.gz").write_bytes(whole.read_bytes()[:50_000])
    whole.unlink()
    with pytest.raises(BadArchive):
        extract_archive(place / "bad.tar.gz", place / "dest")
    _nothing_written(place)


# -- the normal case ---------------------------------------------------------------------------
def test_a_nested_checkpoint_makes_the_round_trip(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "model" / "shards").mkdir(parents=True)
    (src / "empty").mkdir()
    (src / "model" / "shards" / "00.bin").write_bytes(os.urandom(70_000))  # several chunks
    (src / "model" / "config.json").write_text('{"layers": 4}')
    (src / "run.sh").write_text("#!/bin/sh\n")
    (src / "run.sh").chmod(0o755)
    (src / "latest").symlink_to("model/config.json")  # a link to a file travels as the file
    api = _Api()
    location = HttpCheckpointStore(api, tmp_path / "cache-a").save(1, 7, src)
    digest = location.rsplit("/", 1)[1]
    (tmp_path / "copy.tar.gz").write_bytes(api.blobs[digest])
    assert check_archive(tmp_path / "copy.tar.gz") == 7

    dest = tmp_path / "work" / "ckpt"
    dest.mkdir(parents=True)
    (dest / "stale").write_text("from an earlier attempt")
    HttpCheckpointStore(api, tmp_path / "cache-b").restore(location, dest)

    def tree(root: Path) -> dict[str, bytes | None]:
        return {
            str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None)
            for p in sorted(root.rglob("*"))
        }

    assert tree(dest) == tree(src)
    assert not (dest / "latest").is_symlink()
    assert os.access(dest / "run.sh", os.X_OK)
    assert sorted(p.name for p in (tmp_path / "work").iterdir()) == ["ckpt"], "no staging left"


def test_a_checkpoint_holding_a_link_to_a_directory_is_not_saved(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "real").mkdir(parents=True)
    (src / "alias").symlink_to("real")
    with pytest.raises(ValueError, match="only files and directories"):
        HttpCheckpointStore(_Api(), tmp_path / "cache").save(1, 7, src)


def test_a_save_leaves_other_threads_archives_in_progress_alone(tmp_path: Path) -> None:
    """Worker slots and notebook threads share one cache: a save's pruning must neither
    count nor remove an archive another thread is still packing or fetching."""
    src = tmp_path / "ckpt"
    src.mkdir()
    (src / "state.pkl").write_bytes(b"state")
    cache = tmp_path / "cache"
    cache.mkdir()
    packing = cache / ".pack-3-0123abcd.tar.gz"
    packing.write_bytes(b"half written")
    store = HttpCheckpointStore(_Api(), cache, keep=1)
    for n in range(3):
        (src / "state.pkl").write_bytes(f"state {n}".encode())
        store.save(1, 7, src)
    assert packing.read_bytes() == b"half written"
    assert len([p for p in cache.iterdir() if not p.name.startswith(".")]) == 1


def test_threads_saving_into_one_cache_all_succeed(tmp_path: Path) -> None:
    api = _Api()
    store = HttpCheckpointStore(api, tmp_path / "cache", keep=2)
    failures: list[BaseException] = []

    def saves(trial_id: int) -> None:
        src = tmp_path / f"ckpt-{trial_id}"
        src.mkdir()
        for n in range(40):
            (src / "state.pkl").write_bytes(f"{trial_id} {n}".encode())
            try:
                store.save(1, trial_id, src)
            except BaseException as exc:
                failures.append(exc)

    threads = [threading.Thread(target=saves, args=(i,)) for i in range(1, 5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    assert len(list((tmp_path / "cache").glob("[0-9a-f]*.tar.gz"))) <= 2

"""A study's code as a content-addressed archive: a directory packed into a deterministic
``tar.gz`` whose SHA-256 names it, and the same archive unpacked safely on a worker.

Deterministic: the same files give the same bytes, hence the same digest, on this machine
(entries in a fixed order, each directory before what it holds; mtimes 0, owners root with no
names, modes 0644 or 0755 by the file's executable bit; no name or time in the gzip header).
So packing a directory that did not change uploads nothing new, and a changed file is a new
digest that every worker fetches once.

What is left out: what ``.tuneyardignore`` names (or, without one, the directory's
``.gitignore``), with git's pattern rules (``#`` comments, ``!`` re-includes, a trailing
``/`` for directories only, a ``/`` elsewhere anchors the pattern to the top, ``*``, ``?``,
``[...]`` and ``**``), plus ``DEFAULT_EXCLUDES`` (version control, virtual environments,
caches). Symbolic links and special files are never packed (a link could point anywhere on
the packing machine); ``pack`` lists what it skipped.

Unpacking is :func:`tuneyard.checkpoint_archive.extract_archive`'s: members checked before
anything is written, only files and directories, relative names without ``..``, no links, no
device files, bounded sizes. Standard library only: the CLI packs, the API server checks an
upload, the workers unpack.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import re
import stat
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tuneyard.checkpoint_archive import ArchiveLimits, BadArchive, check_archive, extract_archive

IGNORE_FILES = (".tuneyardignore", ".gitignore")
DEFAULT_EXCLUDES = (
    ".git/",
    ".hg/",
    ".svn/",
    "__pycache__/",
    "*.pyc",
    "*.pyo",
    ".venv/",
    ".tox/",
    ".nox/",
    ".mypy_cache/",
    ".pytest_cache/",
    ".ruff_cache/",
    ".ipynb_checkpoints/",
    "*.egg-info/",
    ".DS_Store",
)
# What an unpacked code archive may hold (checked by the server on upload and by the workers
# before they write anything).
CODE_LIMITS = ArchiveLimits(members=50_000, file_bytes=1024**3, total_bytes=2 * 1024**3)
DIGEST_PREFIX = "sha256:"
_HEX = re.compile(r"^[0-9a-f]{64}$")
_CHUNK = 1 << 20

__all__ = [
    "CODE_LIMITS",
    "DEFAULT_EXCLUDES",
    "BadArchive",
    "CodeTooLarge",
    "Ignore",
    "Packed",
    "check_code_archive",
    "extract_code",
    "file_digest",
    "is_digest",
    "pack",
]


class CodeTooLarge(ValueError):
    """The directory holds more than the archive may (after the excludes)."""


def is_digest(value: str) -> bool:
    """A SHA-256 as 64 lowercase hex digits."""
    return bool(_HEX.match(value))


def file_digest(path: Path | str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


# -- excludes --------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Rule:
    regex: re.Pattern[str]
    negate: bool
    dir_only: bool
    anchored: bool


def _glob_to_regex(glob: str) -> str:
    """A gitignore glob as a regex over '/'-separated paths."""
    out = []
    i, n = 0, len(glob)
    while i < n:
        c = glob[i]
        if glob.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif glob.startswith("/**", i) and i + 3 == n:
            out.append("(?:/.*)?")
            i += 3
        elif glob.startswith("**", i):
            out.append(".*")
            i += 2
        elif c == "*":
            out.append("[^/]*")
            i += 1
        elif c == "?":
            out.append("[^/]")
            i += 1
        elif c == "[":
            end = glob.find("]", i + 2 if glob[i + 1 : i + 2] in ("!", "]") else i + 1)
            if end < 0:
                out.append(re.escape(c))
                i += 1
                continue
            body = glob[i + 1 : end]
            if body.startswith("!"):
                body = "^" + body[1:]
            out.append(f"[{body.replace(chr(92), chr(92) * 2)}]")
            i = end + 1
        elif c == "\\" and i + 1 < n:
            out.append(re.escape(glob[i + 1]))
            i += 2
        else:
            out.append(re.escape(c))
            i += 1
    return "".join(out)


class Ignore:
    """gitignore-style patterns; the last one that matches a path decides."""

    def __init__(self, patterns: list[str]) -> None:
        self.rules: list[_Rule] = []
        for raw in patterns:
            line = raw.rstrip("\n").rstrip("\r")
            if not line.strip() or line.startswith("#"):
                continue
            line = line.rstrip() if not line.endswith("\\ ") else line
            negate = line.startswith("!")
            if negate or line.startswith("\\!") or line.startswith("\\#"):
                line = line[1:]
            dir_only = line.endswith("/")
            line = line.rstrip("/")
            if not line:
                continue
            anchored = "/" in line
            line = line.lstrip("/")
            regex = re.compile(f"^{_glob_to_regex(line)}$")
            self.rules.append(_Rule(regex, negate, dir_only, anchored))

    @classmethod
    def for_directory(cls, root: Path) -> Ignore:
        """The defaults, then ``.tuneyardignore`` or else ``.gitignore`` of ``root``."""
        patterns = list(DEFAULT_EXCLUDES)
        for name in IGNORE_FILES:
            f = root / name
            if f.is_file():
                patterns += f.read_text(encoding="utf-8", errors="replace").splitlines()
                break
        return cls(patterns)

    def ignored(self, rel: str, is_dir: bool) -> bool:
        """Whether the '/'-separated relative path is left out."""
        name = rel.rsplit("/", 1)[-1]
        out = False
        for rule in self.rules:
            if rule.dir_only and not is_dir:
                continue
            target = rel if rule.anchored else name
            if rule.regex.match(target):
                out = not rule.negate
        return out


# -- packing ---------------------------------------------------------------------------------
@dataclass
class Packed:
    """An archive written by :func:`pack`: its digest, size in bytes, the files in it and
    what was skipped (symbolic links, special files)."""

    path: Path
    digest: str
    size: int
    files: int
    skipped: list[str] = field(default_factory=list)


def _walk(root: Path, ignore: Ignore, rel: str = "") -> Iterator[tuple[str, os.stat_result]]:
    """(relative path, lstat) of what is packed, each directory before its contents, names
    in sorted order; symbolic links and special files come back too (the caller skips them)."""
    here = root / rel if rel else root
    for name in sorted(os.listdir(here)):
        path = f"{rel}/{name}" if rel else name
        st = os.lstat(root / path)
        is_dir = stat.S_ISDIR(st.st_mode)
        if ignore.ignored(path, is_dir):
            continue
        yield path, st
        if is_dir:
            yield from _walk(root, ignore, path)


def pack(directory: Path | str, dest: Path | str, limits: ArchiveLimits = CODE_LIMITS) -> Packed:
    """Pack ``directory`` into the deterministic archive ``dest``; :class:`CodeTooLarge` when
    what it holds (after the excludes) is beyond ``limits``."""
    root = Path(directory).resolve()
    if not root.is_dir():
        raise NotADirectoryError(f"{directory} is not a directory")
    ignore = Ignore.for_directory(root)
    dest = Path(dest)
    skipped: list[str] = []
    files = members = total = 0
    with (
        open(dest, "wb") as raw,
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=6) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for rel, st in _walk(root, ignore):
            is_dir = stat.S_ISDIR(st.st_mode)
            if not is_dir and not stat.S_ISREG(st.st_mode):
                skipped.append(rel)
                continue
            members += 1
            if members > limits.members:
                raise CodeTooLarge(
                    f"{root} holds more than {limits.members} files and directories "
                    "(leave some out with .tuneyardignore)"
                )
            info = tarfile.TarInfo(rel)
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            executable = is_dir or bool(st.st_mode & stat.S_IXUSR)
            info.mode = 0o755 if executable else 0o644
            if is_dir:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
                continue
            info.size = st.st_size
            total += st.st_size
            if st.st_size > limits.file_bytes or total > limits.total_bytes:
                raise CodeTooLarge(
                    f"{root} holds more than {limits.total_bytes} bytes of files (at {rel!r}; "
                    "leave data sets and outputs out with .tuneyardignore)"
                )
            with open(root / rel, "rb") as f:
                tar.addfile(info, f)
            files += 1
    return Packed(dest, file_digest(dest), dest.stat().st_size, files, skipped)


# -- checking and unpacking -----------------------------------------------------------------
def check_code_archive(archive: Path | str) -> int:
    """Check every member of a code archive; returns how many there are (BadArchive)."""
    return check_archive(archive, CODE_LIMITS)


def extract_code(archive: Path | str, dest: Path | str) -> None:
    """Unpack a code archive into ``dest`` (which must not exist yet), checked as a
    checkpoint is; the tree is then made read-only, as jobs share it."""
    extract_archive(archive, dest, CODE_LIMITS)
    for top, dirs, names in os.walk(dest):
        for name in names:
            p = os.path.join(top, name)
            os.chmod(p, os.stat(p).st_mode & 0o555)
        for name in dirs:
            os.chmod(os.path.join(top, name), 0o555)
    os.chmod(dest, 0o555)


def remove_tree(path: Path | str) -> None:
    """Remove a tree :func:`extract_code` made read-only."""
    import shutil

    path = Path(path)
    if not path.exists():
        return
    for top, dirs, _ in os.walk(path):
        os.chmod(top, 0o700)
        for name in dirs:
            os.chmod(os.path.join(top, name), 0o700)
    shutil.rmtree(path, ignore_errors=True)

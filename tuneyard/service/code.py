"""Studies' code archives, stored once per digest under ``<data_dir>/code``.

An archive is uploaded by its SHA-256 (``PUT /code/{sha256}``), checked as a worker will
check it before unpacking (:mod:`tuneyard.code_archive`: only files and directories, relative
names without ``..``, bounded sizes), and kept as ``<sha256>.tar.gz``; a study names it in
``execution.code`` and records the digest (``studies.code_digest``). Uploading an archive that
is already stored changes nothing, so a CLI that packs an unchanged directory again costs one
request. Several API servers share the files as they share checkpoints (one data dir).
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
from sqlalchemy import select

from tuneyard.code_archive import BadArchive, check_code_archive, is_digest
from tuneyard.errors import InvalidRequest, NotFound, PayloadTooLarge
from tuneyard.service.context import Toolkit
from tuneyard.store.models import Study

DIGEST_PREFIX = "sha256:"


def digest_of(code: str) -> str:
    """The hex digest of an ``execution.code`` value (``sha256:<hex>``)."""
    return code.removeprefix(DIGEST_PREFIX)


class CodeFiles:
    def __init__(self, kit: Toolkit) -> None:
        self.kit = kit
        self.root = Path(kit.settings.data_dir) / "code"
        self.limit = kit.settings.max_code_bytes

    @staticmethod
    def checked(digest: str) -> str:
        """``digest`` if it is a SHA-256 in hex; a 422 naming the field otherwise."""
        if not is_digest(digest):
            raise InvalidRequest("digest: not a SHA-256 as 64 lowercase hex digits", field="digest")
        return digest

    def _file(self, digest: str) -> Path:
        return self.root / f"{self.checked(digest)}.tar.gz"

    def too_large(self, size: int | None = None) -> PayloadTooLarge:
        got = f" ({size} bytes)" if size is not None else ""
        return PayloadTooLarge(
            f"the code archive{got} exceeds the server's limit of {self.limit} bytes "
            "(max_code_bytes, TUNEYARD_MAX_CODE_BYTES): leave data and outputs out of it with "
            ".tuneyardignore",
            limit="max_code_bytes",
        )

    async def put(self, digest: str, body: AsyncIterator[bytes]) -> tuple[int, bool]:
        """Store the archive sent as ``digest``; returns (its size, whether it is new).

        422 when the body's SHA-256 is another, or it is not a code archive; 413 beyond
        ``max_code_bytes`` (the rest of the body is not read)."""
        final = self._file(digest)
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".upload-{uuid.uuid4().hex}"
        h = hashlib.sha256()
        size = 0
        try:
            with open(tmp, "wb") as f:
                async for chunk in body:
                    size += len(chunk)
                    if size > self.limit:
                        raise self.too_large()
                    h.update(chunk)
                    f.write(chunk)
                f.flush()
                os.fsync(f.fileno())
            if size == 0:
                raise InvalidRequest("body: the code archive is empty", field="body")
            got = h.hexdigest()
            if got != digest:
                raise InvalidRequest(
                    f"digest: the body's SHA-256 is {got}, not the {digest} the path names "
                    "(the archive changed or was cut short on the way)",
                    field="digest",
                )
            if final.is_file():
                return size, False
            try:
                await anyio.to_thread.run_sync(check_code_archive, tmp)
            except BadArchive as exc:
                raise InvalidRequest(
                    f"body: the code archive is refused: {exc}", field="body"
                ) from None
            os.replace(tmp, final)
            return size, True
        finally:
            tmp.unlink(missing_ok=True)

    def path(self, digest: str) -> Path:
        path = self._file(digest)
        if not path.is_file():
            raise NotFound(f"no code archive {digest} was uploaded")
        return path

    def require(self, code: str) -> str:
        """The hex digest of a study's ``execution.code``, once its archive is known to be
        stored; a 422 naming the field otherwise."""
        digest = digest_of(code)
        if not self._file(digest).is_file():
            raise InvalidRequest(
                f"execution.code: no code archive {code} was uploaded to this server; upload it "
                "first (PUT /api/v1/code/{sha256}, or `tuneyard study create --code DIR`)",
                field="execution.code",
            )
        return digest

    def on_queues(self, digest: str, queues: tuple[str, ...]) -> bool:
        """Whether a study on one of ``queues`` carries the archive (what a worker token
        limited to those queues may download)."""
        queue = Study.spec["execution"]["queue"].as_string()
        with self.kit.reading() as s:
            row = s.execute(
                select(Study.id)
                .where(Study.code_digest == digest, queue.in_(list(queues)))
                .limit(1)
            ).first()
        return row is not None

"""Studies' code: upload an archive by its SHA-256, then name it in ``execution.code``.

    PUT /api/v1/code/{sha256}    (write)   the tar.gz as the body; 201, or 200 when already held
    GET /api/v1/code/{sha256}    (worker)  the archive, for a worker that accepts code

Two steps rather than one multipart request: an archive is stored once per digest whatever
number of studies use it, a repeated upload is a no-op, and the study definition stays one
JSON document that names its code like any other field.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import FileResponse
from starlette.concurrency import run_in_threadpool

from tuneyard.api.auth import WORKER, WRITE, CallerDep, limited_to_queues
from tuneyard.api.deps import KitDep
from tuneyard.api.routes import E404, E422, Responses
from tuneyard.api.schemas import Problem
from tuneyard.errors import Forbidden
from tuneyard.protocol import CodeOut
from tuneyard.service.code import DIGEST_PREFIX, CodeFiles

router = APIRouter(prefix="/api/v1")

E413: Responses = {
    413: {"model": Problem, "description": "the archive exceeds max_code_bytes"},
}
DIGEST_DOC = "the archive's SHA-256, 64 lowercase hex digits"


@router.put(
    "/code/{digest}",
    status_code=201,
    response_model=CodeOut,
    responses={200: {"model": CodeOut, "description": "already held"}, **E413, **E422},
    dependencies=[WRITE],
)
async def upload_code(digest: str, request: Request, response: Response, kit: KitDep) -> CodeOut:
    """Store a code archive (``tar.gz`` body: `tuneyard study create --code DIR` packs one)
    under its SHA-256. 422 when the body's SHA-256 is not ``digest`` or the archive holds
    what code may not (links, device files, absolute or '..' names); 413 beyond the server's
    ``max_code_bytes``, before the body is read when Content-Length says so."""
    files = CodeFiles(kit)
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > files.limit:
        raise files.too_large(int(length))
    size, created = await files.put(digest, request.stream())
    if not created:
        response.status_code = 200
    return CodeOut(code=f"{DIGEST_PREFIX}{digest}", size=size, created=created)


@router.get(
    "/code/{digest}",
    response_class=FileResponse,
    responses={200: {"content": {"application/gzip": {}}}, **E404, **E422},
    dependencies=[WORKER],
)
async def download_code(digest: str, kit: KitDep, who: CallerDep) -> Response:
    """A code archive, for the workers of studies that carry it. A worker token limited to
    queues gets only the code of studies on its queues (403 otherwise)."""
    files = CodeFiles(kit)
    # Before the file is looked for: an answer must not tell another queue what is stored.
    if limited_to_queues(who) and not await run_in_threadpool(
        files.on_queues, files.checked(digest), who.queues or ()
    ):
        raise Forbidden(
            f"no study on the queues of this worker token ({', '.join(who.queues or ())}) "
            f"carries the code {digest}"
        )
    path = files.path(digest)
    return FileResponse(path, media_type="application/gzip", filename=f"code-{digest}.tar.gz")

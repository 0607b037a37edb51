"""The web dashboard and the API's documentation pages, served by the API itself.

``mount(app)`` adds the single-page dashboard (the same HTML at ``/``, ``/studies/{id}``,
``/trials/{id}``, ``/workers`` and ``/timeline``; the script routes on the path), its static
files under ``/static/``, plotly.js from the installed ``plotly`` package, and Swagger UI at
``/docs`` from a vendored copy (no ReDoc: its standalone page always fetches a logo from its
vendor's CDN).
Every asset comes from this server: the pages work on a machine without internet access.

Caching: the HTML names each asset with ``?v=<digest of the file>``, and a URL carrying the
digest is served as immutable for a year; the same file without it is revalidated with its
ETag. Text assets are sent gzip-compressed when the client accepts it, compressed once per
file version.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import os
import re
import threading
from pathlib import Path
from typing import Any

import anyio
from fastapi import FastAPI
from fastapi.openapi.docs import (
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
    swagger_ui_default_parameters,
)
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

HERE = Path(__file__).resolve().parent
STATIC = HERE / "static"
INDEX = HERE / "index.html"

IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"
COMPRESSIBLE = ("text/", "application/javascript", "application/json", "image/svg+xml")
MIN_GZIP_BYTES = 1024

# The pages load nothing from another origin, and the browser holds them to it. plotly.js
# compiles its WebGL shaders with `new Function` (unsafe-eval) and, like Plotly's own
# styling, sets inline styles. The documentation pages also start with an inline script.
_POLICY = (
    "default-src 'self'; img-src 'self' data: blob:; font-src 'self' data:; "
    "style-src 'self' 'unsafe-inline'; connect-src 'self'; worker-src 'self' blob:; "
    "object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'self'; "
)
PAGE_CSP = _POLICY + "script-src 'self' 'unsafe-eval'"
DOCS_CSP = _POLICY + "script-src 'self' 'unsafe-inline' 'unsafe-eval'"


def plotly_js() -> Path | None:
    """plotly.min.js inside the installed ``plotly`` package, found without importing it."""
    spec = importlib.util.find_spec("plotly")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "package_data" / "plotly.min.js"
    return path if path.is_file() else None


class _FileCache:
    """Digests and gzip bodies of files, keyed on (path, mtime, size): computed once per file
    version, recomputed when a file changes (an editable install being worked on)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._digests: dict[tuple[str, int, int], str] = {}
        self._gzip: dict[tuple[str, int, int], bytes] = {}

    @staticmethod
    def _key(path: Path | str) -> tuple[str, int, int]:
        st = os.stat(path)
        return (str(path), st.st_mtime_ns, st.st_size)

    def digest(self, path: Path) -> str:
        key = self._key(path)
        with self._lock:
            found = self._digests.get(key)
        if found is None:
            found = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
            with self._lock:
                self._digests[key] = found
        return found

    def gzipped(self, path: str) -> bytes:
        key = self._key(path)
        with self._lock:
            found = self._gzip.get(key)
        if found is None:
            found = gzip.compress(Path(path).read_bytes(), compresslevel=6, mtime=0)
            with self._lock:
                self._gzip = {k: v for k, v in self._gzip.items() if k[0] != key[0]}
                self._gzip[key] = found
        return found


def _accepts_gzip(headers: Headers) -> bool:
    accepted = headers.get("accept-encoding", "")
    return any(
        part.split(";")[0].strip() == "gzip" and "q=0" not in part.replace(" ", "")
        for part in accepted.split(",")
    )


def _etag_matches(headers: Headers, etag: str) -> bool:
    wanted = headers.get("if-none-match")
    if not wanted:
        return False
    tags = {t.strip().removeprefix("W/") for t in wanted.split(",")}
    return "*" in tags or etag in tags


class Assets(StaticFiles):
    """Static files with the cache headers above and gzip for text."""

    def __init__(self, directory: Path, cache: _FileCache) -> None:
        super().__init__(directory=directory)
        self._cache = cache

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        query = scope.get("query_string", b"").split(b"&")
        versioned = any(part.startswith(b"v=") and len(part) > 2 for part in query)
        response.headers["Cache-Control"] = IMMUTABLE if versioned else REVALIDATE
        response.headers["Vary"] = "Accept-Encoding"
        headers = Headers(scope=scope)
        if not (isinstance(response, FileResponse) and self._compress(response, headers)):
            return response
        etag = response.headers.get("etag", "")
        gz_etag = f'{etag[:-1]}-gz"' if etag.endswith('"') else etag
        out = {
            k: v
            for k, v in response.headers.items()
            if k.lower() not in ("content-length", "content-type", "etag")
        }
        out["ETag"] = gz_etag
        if _etag_matches(headers, gz_etag):
            return Response(status_code=304, headers=out)
        body = await anyio.to_thread.run_sync(self._cache.gzipped, str(response.path))
        out["Content-Encoding"] = "gzip"
        return Response(body, headers=out, media_type=response.media_type)

    @staticmethod
    def _compress(response: FileResponse, headers: Headers) -> bool:
        return (
            response.status_code == 200
            and "range" not in headers
            and _accepts_gzip(headers)
            and (response.media_type or "").startswith(COMPRESSIBLE)
            and int(response.headers.get("content-length", "0")) >= MIN_GZIP_BYTES
        )


_STATIC_URL = re.compile(r"""(["'])(/static/[^"'?#]+)\1""")


class _Site:
    """Turns asset paths into versioned URLs and renders the HTML pages."""

    def __init__(self, cache: _FileCache) -> None:
        self.cache = cache
        self.plotly = plotly_js()

    def file_of(self, url_path: str) -> Path | None:
        if url_path == "/static/vendor/plotly.min.js":
            return self.plotly
        path = (STATIC / url_path.removeprefix("/static/")).resolve()
        return path if path.is_file() and STATIC in path.parents else None

    def url(self, url_path: str) -> str:
        path = self.file_of(url_path)
        return f"{url_path}?v={self.cache.digest(path)}" if path else url_path

    def page(self) -> HTMLResponse:
        html = _STATIC_URL.sub(
            lambda m: f"{m.group(1)}{self.url(m.group(2))}{m.group(1)}", INDEX.read_text()
        )
        return HTMLResponse(
            html, headers={"Cache-Control": REVALIDATE, "Content-Security-Policy": PAGE_CSP}
        )


def mount(app: FastAPI) -> None:
    """Serve the dashboard, its assets and the documentation pages from ``app``. Build the app
    with ``docs_url=None, redoc_url=None``: the routes here replace FastAPI's, which load
    their scripts from a CDN."""
    cache = _FileCache()
    site = _Site(cache)
    assets = Assets(STATIC, cache)

    # Plain functions: they read files, which FastAPI then does off the event loop.
    def page() -> Response:
        return site.page()

    for path in ("/", "/studies/{study_id:int}", "/trials/{trial_id:int}", "/workers", "/timeline"):
        app.add_api_route(path, page, methods=["GET"], include_in_schema=False)

    vendor = Assets(site.plotly.parent, cache) if site.plotly else None

    async def plotly(request: Request) -> Response:
        if vendor is None or site.plotly is None:
            return Response("plotly is not installed", status_code=404, media_type="text/plain")
        return await vendor.get_response(site.plotly.name, request.scope)

    # Before the /static mount, which would otherwise answer this path with a 404.
    app.add_api_route(
        "/static/vendor/plotly.min.js", plotly, methods=["GET", "HEAD"], include_in_schema=False
    )
    app.mount("/static", assets, name="static")
    _mount_docs(app, site)


def _mount_docs(app: FastAPI, site: _Site) -> None:
    openapi_url = app.openapi_url
    if not openapi_url:
        return
    swagger = "/static/vendor/swagger-ui"
    redirect = "/docs/oauth2-redirect"
    parameters: dict[str, Any] = {
        **swagger_ui_default_parameters,
        # The badge would send the schema's URL to validator.swagger.io.
        "validatorUrl": None,
        "persistAuthorization": True,
    }

    def swagger_ui() -> HTMLResponse:
        return _docs_headers(
            get_swagger_ui_html(
                openapi_url=openapi_url,
                title=f"{app.title} API",
                swagger_js_url=site.url(f"{swagger}/swagger-ui-bundle.js"),
                swagger_css_url=site.url(f"{swagger}/swagger-ui.css"),
                swagger_favicon_url=site.url(f"{swagger}/favicon-32x32.png"),
                oauth2_redirect_url=redirect,
                init_oauth=app.swagger_ui_init_oauth,
                swagger_ui_parameters=parameters,
            )
        )

    def swagger_ui_redirect() -> HTMLResponse:
        return _docs_headers(get_swagger_ui_oauth2_redirect_html())

    app.add_api_route("/docs", swagger_ui, methods=["GET"], include_in_schema=False)
    app.add_api_route(redirect, swagger_ui_redirect, methods=["GET"], include_in_schema=False)


def _docs_headers(response: HTMLResponse) -> HTMLResponse:
    response.headers["Content-Security-Policy"] = DOCS_CSP
    response.headers["Cache-Control"] = REVALIDATE
    return response

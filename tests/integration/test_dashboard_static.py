"""The dashboard's pages, its static files and the API docs, served by the app itself with
cache headers and without a reference to any other server (no browser: see
tests/e2e/test_dashboard_browser.py for that)."""

from __future__ import annotations

import gzip
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tuneyard.api.app import create_app
from tuneyard.dashboard import STATIC, plotly_js
from tuneyard.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
PAGES = ["/", "/studies/1", "/trials/7", "/workers", "/timeline"]
SWAGGER = "/static/vendor/swagger-ui"
OFF_SERVER = re.compile(r"""(?:https?:)?//[a-z0-9.-]+""", re.IGNORECASE)
ASSET_URL = re.compile(r"""(?:src|href)=["']([^"']+)["']""")


@pytest.fixture
def http(tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'db.sqlite'}", data_dir=tmp_path)
    with TestClient(create_app(settings)) as c:
        yield c


def assert_local_only(html: str) -> None:
    """No script, style, image or link in the page points at another server."""
    assert not OFF_SERVER.findall(html.replace("http://www.w3.org/2000/svg", "")), html[:2000]
    for url in ASSET_URL.findall(html):
        assert url.startswith("/"), url


@pytest.mark.parametrize("path", PAGES)
def test_each_page_path_serves_the_dashboard(http: TestClient, path: str) -> None:
    r = http.get(path)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    assert r.headers["cache-control"] == "no-cache"
    assert 'id="main"' in r.text
    # Each asset under a URL carrying the digest of its content.
    for asset in ("/static/app.js", "/static/style.css", "/static/vendor/plotly.min.js"):
        assert re.search(rf'"{re.escape(asset)}\?v=[0-9a-f]{{12}}"', r.text), asset
    assert_local_only(r.text)


def test_other_paths_are_not_pages(http: TestClient) -> None:
    assert http.get("/studies/abc").status_code == 404
    assert http.get("/nope").status_code == 404


def test_pages_and_docs_stay_out_of_the_openapi_schema(http: TestClient) -> None:
    paths = set(http.get("/openapi.json").json()["paths"])
    for hidden in ("/", "/studies/{study_id}", "/trials/{trial_id}", "/workers", "/docs"):
        assert hidden not in paths
    assert "/api/v1/studies" in paths


@pytest.mark.parametrize(
    ("path", "kind"),
    [
        ("/static/app.js", "javascript"),
        ("/static/style.css", "text/css"),
        ("/static/favicon.svg", "image/svg+xml"),
        ("/static/vendor/plotly.min.js", "javascript"),
        (f"{SWAGGER}/swagger-ui-bundle.js", "javascript"),
        (f"{SWAGGER}/swagger-ui.css", "text/css"),
        (f"{SWAGGER}/favicon-32x32.png", "image/png"),
    ],
)
def test_assets_answer_with_their_type_and_an_etag(http: TestClient, path: str, kind: str) -> None:
    r = http.get(path, headers={"Accept-Encoding": "identity"})
    assert r.status_code == 200, path
    assert kind in r.headers["content-type"]
    assert r.headers["cache-control"] == "no-cache"
    etag = r.headers["etag"]
    again = http.get(path, headers={"If-None-Match": etag, "Accept-Encoding": "identity"})
    assert again.status_code == 304
    versioned = http.get(f"{path}?v=abc", headers={"Accept-Encoding": "identity"})
    assert versioned.headers["cache-control"] == "public, max-age=31536000, immutable"


def test_plotly_comes_from_the_installed_package_and_is_gzipped(http: TestClient) -> None:
    source = plotly_js()
    assert source is not None, "plotly's package_data/plotly.min.js is missing"
    raw = source.read_bytes()
    plain = http.get("/static/vendor/plotly.min.js", headers={"Accept-Encoding": "identity"})
    assert plain.content == raw
    assert "content-encoding" not in plain.headers
    # httpx decodes the body; the raw stream is what went over the wire.
    with http.stream(
        "GET", "/static/vendor/plotly.min.js", headers={"Accept-Encoding": "gzip"}
    ) as r:
        wire = b"".join(r.iter_raw())
        headers = r.headers
    assert headers["content-encoding"] == "gzip"
    assert "Accept-Encoding" in headers["vary"]
    assert len(wire) < len(raw) / 2
    assert gzip.decompress(wire) == raw
    assert headers["etag"] != plain.headers["etag"]
    cached = http.get(
        "/static/vendor/plotly.min.js",
        headers={"Accept-Encoding": "gzip", "If-None-Match": headers["etag"]},
    )
    assert cached.status_code == 304


def test_static_files_stay_inside_their_folder(http: TestClient) -> None:
    assert http.get("/static/../__init__.py").status_code == 404
    assert http.get("/static/%2e%2e/__init__.py").status_code == 404


def test_swagger_ui_is_served_locally_in_version_5(http: TestClient) -> None:
    r = http.get("/docs")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    assert re.search(rf'"{SWAGGER}/swagger-ui-bundle\.js\?v=[0-9a-f]{{12}}"', r.text)
    assert re.search(rf'"{SWAGGER}/swagger-ui\.css\?v=[0-9a-f]{{12}}"', r.text)
    assert "url: '/openapi.json'" in r.text
    assert '"validatorUrl": null' in r.text  # no badge fetched from validator.swagger.io
    assert_local_only(r.text)
    # FastAPI emits OpenAPI 3.1, which Swagger UI renders from version 5 on.
    assert http.get("/openapi.json").json()["openapi"].startswith("3.1")
    bundle = (STATIC / "vendor/swagger-ui/swagger-ui-bundle.js").read_text()
    assert re.search(r'"5\.\d+\.\d+"', bundle)
    redirect = http.get("/docs/oauth2-redirect")
    assert redirect.status_code == 200
    assert "swaggerUIRedirectOauth2" in redirect.text


def _scripts() -> list[Path]:
    """The dashboard's own scripts: the entry module app.js and the modules under js/."""
    return [STATIC / "app.js", *sorted((STATIC / "js").glob("*.js"))]


def test_the_scripts_and_styles_load_nothing_from_elsewhere() -> None:
    for path in [*_scripts(), STATIC / "style.css"]:
        text = path.read_text()
        assert not OFF_SERVER.findall(text.replace("http://www.w3.org/2000/svg", "")), path.name
    index = (STATIC.parent / "index.html").read_text()
    assert_local_only(index)


IMPORT = re.compile(r"""^import \{([^}]*)\} from "(\.{1,2}/[^"]+)";""", re.MULTILINE)
EXPORT = re.compile(r"^export (?:async )?(?:function|const|class|let) ([\w$]+)", re.MULTILINE)


def test_the_page_loads_its_script_as_a_module_whose_imports_resolve(http: TestClient) -> None:
    """The entry is a module script; each module it reaches is served as JavaScript (the
    browser refuses a module of another type, nosniff or not) and exports what is imported."""
    page = http.get("/")
    assert re.search(r'<script type="module" src="/static/app\.js\?v=[0-9a-f]{12}">', page.text)
    assert "script-src 'self'" in page.headers["content-security-policy"]
    seen: set[Path] = set()
    todo = [STATIC / "app.js"]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        url = "/static/" + path.relative_to(STATIC).as_posix()
        r = http.get(url)
        assert r.status_code == 200, url
        assert "javascript" in r.headers["content-type"], (url, r.headers["content-type"])
        assert r.headers["x-content-type-options"] == "nosniff"
        for names, target in IMPORT.findall(path.read_text()):
            module = (path.parent / target).resolve()
            assert module.is_file() and STATIC in module.parents, (path.name, target)
            exported = set(EXPORT.findall(module.read_text()))
            for name in (n.strip() for n in names.split(",") if n.strip()):
                assert name in exported, f"{path.name} imports {name} from {target}"
            todo.append(module)
    assert seen == set(_scripts()), "a module under js/ that the page never loads"


def test_package_data_covers_every_dashboard_file() -> None:
    """A non-editable install carries the page and every asset."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["tuneyard"]
    package = ROOT / "tuneyard"
    covered = {p for pattern in patterns for p in package.glob(pattern) if p.is_file()}
    files = {
        p
        for p in (package / "dashboard").rglob("*")
        if p.is_file() and p.suffix not in (".py", ".pyc") and "__pycache__" not in p.parts
    }
    assert files, "no dashboard files found"
    assert files <= covered, sorted(str(p.relative_to(package)) for p in files - covered)
    deps = config["project"]["dependencies"]
    assert any(d.startswith("plotly") for d in deps)

"""The wheel carries everything an installed tuneyard needs: the Alembic history (so that
``tuneyard db upgrade`` works from a ``pip install``), the dashboard's pages and vendored
assets, and py.typed. Built here from a copy of the package's source, without network or build
isolation; .ci/wheel-check installs a full build into a fresh venv and runs it."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "tuneyard"
# What a build reads besides the package itself.
BUILD_FILES = ("pyproject.toml", "README.md", "MANIFEST.in", "setup.py", "setup.cfg")

pytestmark = pytest.mark.timeout(180)


def _source_files() -> set[str]:
    """Every file of the package's source tree, as a path inside the wheel."""
    return {
        p.relative_to(ROOT).as_posix()
        for p in PACKAGE.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
    }


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel built from a copy of the source (a build in the checkout would write build/
    and *.egg-info there, under the feet of anyone else building at the same time)."""
    base = tmp_path_factory.mktemp("wheel")
    src = base / "src"
    src.mkdir()
    for name in BUILD_FILES:
        if (ROOT / name).exists():
            shutil.copy2(ROOT / name, src / name)
    shutil.copytree(
        PACKAGE, src / "tuneyard", ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
    )
    out = base / "out"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--wheel-dir",
            str(out),
            str(src),
        ],
        capture_output=True,
        text=True,
        timeout=150,
        cwd=base,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    (built,) = out.glob("tuneyard-*-py3-none-any.whl")
    return built


@pytest.fixture(scope="module")
def names(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as zf:
        return set(zf.namelist())


def test_wheel_ships_the_migrations(names: set[str]) -> None:
    assert "tuneyard/migrations/env.py" in names
    assert "tuneyard/migrations/script.py.mako" in names
    shipped = {n for n in names if n.startswith("tuneyard/migrations/versions/")}
    in_source = {
        p.relative_to(ROOT).as_posix() for p in (PACKAGE / "migrations" / "versions").glob("*.py")
    }
    assert in_source, "no migrations in tuneyard/migrations/versions/"
    assert shipped == in_source
    # Nothing outside the package: one history, the one inside it.
    assert not {n for n in names if not n.startswith(("tuneyard/", "tuneyard-"))}


def test_wheel_ships_the_dashboard_and_py_typed(names: set[str]) -> None:
    for name in (
        "tuneyard/py.typed",
        "tuneyard/dashboard/index.html",
        "tuneyard/dashboard/static/app.js",
        "tuneyard/dashboard/static/style.css",
        "tuneyard/dashboard/static/vendor/swagger-ui/swagger-ui-bundle.js",
        "tuneyard/dashboard/static/vendor/swagger-ui/swagger-ui.css",
    ):
        assert name in names, name


def test_wheel_ships_every_file_of_the_package(names: set[str]) -> None:
    missing = _source_files() - names
    assert not missing, f"in tuneyard/ but not in the wheel: {sorted(missing)}"


def test_wheel_declares_the_cli(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        (entry_points,) = [n for n in zf.namelist() if n.endswith(".dist-info/entry_points.txt")]
        text = zf.read(entry_points).decode()
    assert "tuneyard = tuneyard.cli:main" in text


def test_wheel_history_is_the_checkouts(wheel: Path, tmp_path: Path) -> None:
    """The history in the wheel has the same revisions and the one head of the source's."""
    with zipfile.ZipFile(wheel) as zf:
        for n in zf.namelist():
            if n.startswith("tuneyard/migrations/"):
                zf.extract(n, tmp_path)
    shipped = ScriptDirectory(str(tmp_path / "tuneyard" / "migrations"))
    source = ScriptDirectory(str(PACKAGE / "migrations"))
    assert len(shipped.get_heads()) == 1
    assert shipped.get_heads() == source.get_heads()
    assert {r.revision for r in shipped.walk_revisions()} == {
        r.revision for r in source.walk_revisions()
    }

"""A slot process re-imports the user's modules when one of their files changed, and leaves
libraries (and tuneyard) imported."""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tuneyard.worker.objective import load_objective
from tuneyard.worker.reload import UserModules


@pytest.fixture
def user_pkg(tmp_path: Path) -> Iterator[Path]:
    root = tmp_path / "code"
    (root / "mypkg_reload").mkdir(parents=True)
    (root / "mypkg_reload" / "__init__.py").write_text("")
    (root / "mypkg_reload" / "helper.py").write_text("FACTOR = 1\n")
    (root / "mypkg_reload" / "train.py").write_text(
        "from mypkg_reload.helper import FACTOR\n\ndef run(trial):\n    return FACTOR\n"
    )
    sys.path.insert(0, str(root))
    try:
        yield root
    finally:
        sys.path.remove(str(root))
        for name in [n for n in sys.modules if n.startswith("mypkg_reload")]:
            del sys.modules[name]


def _bump(path: Path, text: str) -> None:
    path.write_text(text)
    st = path.stat()  # a later mtime even on a coarse clock
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))


def test_a_changed_module_is_imported_again(user_pkg: Path) -> None:
    modules = UserModules()
    assert load_objective("mypkg_reload.train:run")(None) == 1
    modules.note()
    assert {"mypkg_reload", "mypkg_reload.helper", "mypkg_reload.train"} <= set(modules.seen)
    assert not any(n.split(".")[0] in ("tuneyard", "pytest", "json") for n in modules.seen)
    assert modules.refresh() == []  # nothing changed: nothing forgotten
    assert "mypkg_reload.train" in sys.modules

    # A change in a module the entrypoint imports reaches the entrypoint too.
    _bump(user_pkg / "mypkg_reload" / "helper.py", "FACTOR = 2\n")
    json_module = sys.modules["json"]
    assert modules.refresh() == ["mypkg_reload.helper"]
    assert "mypkg_reload.train" not in sys.modules
    assert sys.modules["json"] is json_module  # libraries stay imported
    assert load_objective("mypkg_reload.train:run")(None) == 2
    modules.note()
    assert modules.refresh() == []


def test_a_removed_module_file_counts_as_changed(user_pkg: Path) -> None:
    modules = UserModules()
    importlib.import_module("mypkg_reload.helper")
    modules.note()
    (user_pkg / "mypkg_reload" / "helper.py").unlink()
    assert modules.refresh() == ["mypkg_reload.helper"]
    with pytest.raises(ImportError):
        load_objective("mypkg_reload.helper:FACTOR")

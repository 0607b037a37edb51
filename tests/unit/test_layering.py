"""The layering of shared/DESIGN.md, checked on the source.

Every module under ``tuneyard/`` is parsed with ``ast``, never imported, and each of its imports
is checked: those at the top, those inside functions (the lazy ones), those under
``TYPE_CHECKING``, and ``importlib.import_module`` of a literal name. A module breaks a rule when
it imports a forbidden package or anything inside it (``from tuneyard import api`` counts as
``tuneyard.api``).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "tuneyard"

IO_LIBRARIES = (
    "sqlalchemy",
    "fastapi",
    "starlette",
    "httpx",
    "redis",
    "rq",
    "psycopg",
    "uvicorn",
    "requests",
)


@dataclass(frozen=True)
class Rule:
    layer: str
    forbidden: tuple[str, ...]
    why: str

    def __str__(self) -> str:
        return f"{self.layer} imports nothing of {', '.join(self.forbidden)}: {self.why}"


RULES = [
    Rule(
        "tuneyard.scheduler",
        (
            *IO_LIBRARIES,
            "tuneyard.service",
            "tuneyard.store",
            "tuneyard.api",
            "tuneyard.worker",
            "tuneyard.client",
            "tuneyard.cli",
        ),
        "the scheduling core is pure: no I/O, unit-testable with plain numbers, and the same "
        "engine runs in the service and in the simulator",
    ),
    Rule(
        "tuneyard.worker",
        ("tuneyard.api", "tuneyard.service", "tuneyard.store"),
        "a worker talks to the API only over HTTP and shares with it only tuneyard.protocol",
    ),
    Rule(
        "tuneyard.client",
        ("tuneyard.api", "tuneyard.service", "tuneyard.store"),
        "the client talks to the API only over HTTP and shares with it only tuneyard.protocol",
    ),
    Rule(
        "tuneyard.store",
        ("tuneyard.service", "tuneyard.api", "tuneyard.worker"),
        "the store holds models and queries; the service joins it with the scheduler",
    ),
    Rule(
        "tuneyard.protocol",
        ("tuneyard.api", "tuneyard.service", "tuneyard.store", "tuneyard.worker"),
        "the wire schemas are shared by the server, the worker and the client, so they may "
        "depend on none of them (tuneyard.spec is shared too)",
    ),
    Rule(
        "tuneyard.service",
        ("tuneyard.worker", "tuneyard.client", "tuneyard.cli"),
        "the server reaches workers only through the queue: the dispatcher enqueues the "
        "slot job by name (tuneyard.protocol.SLOT_JOB)",
    ),
    Rule(
        "tuneyard.api",
        ("tuneyard.worker", "tuneyard.client", "tuneyard.cli"),
        "the routes call the service; workers and the client are on the other side of HTTP",
    ),
]

# (module, imported name) pairs that break a rule today, each with why it is still there.
# Keep this short: a new entry needs a reason, and a fixed one must be taken out (see
# test_known_exceptions_are_still_needed).
KNOWN_EXCEPTIONS: dict[tuple[str, str], str] = {}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(source: str, module: str, *, is_package: bool = False) -> Iterator[str]:
    """Every name ``module`` imports, anywhere in its source, relative imports resolved."""
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            yield base
            # `from tuneyard import api` imports the package tuneyard.api.
            yield from (f"{base}.{alias.name}" for alias in node.names if alias.name != "*")
        elif (
            isinstance(node, ast.Call)
            and (
                (isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
                or (isinstance(node.func, ast.Name) and node.func.id == "import_module")
            )
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            yield node.args[0].value


def inside(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def all_imports() -> dict[str, set[str]]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        module = module_name(path)
        source = path.read_text(encoding="utf-8")
        found[module] = set(imports_of(source, module, is_package=path.name == "__init__.py"))
    return found


def violations(rule: Rule, imports: dict[str, set[str]]) -> set[tuple[str, str]]:
    """(module, import) pairs that break the rule; of `from x.y import z`, only x.y is named."""
    found = set()
    for module, names in imports.items():
        if not inside(module, rule.layer):
            continue
        bad = {n for n in names if any(inside(n, f) for f in rule.forbidden)}
        found |= {(module, n) for n in bad if not any(inside(n, o) for o in bad - {n})}
    return found


@pytest.fixture(scope="module")
def imports() -> dict[str, set[str]]:
    return all_imports()


@pytest.mark.parametrize("rule", RULES, ids=lambda r: r.layer)
def test_layer_imports_nothing_it_must_not(rule: Rule, imports: dict[str, set[str]]) -> None:
    assert any(inside(m, rule.layer) for m in imports), f"no module in {rule.layer}"
    broken = sorted(violations(rule, imports) - KNOWN_EXCEPTIONS.keys())
    assert not broken, f"rule: {rule}\nbroken by (module, import): {broken}"


def test_known_exceptions_are_still_needed(imports: dict[str, set[str]]) -> None:
    every = set().union(*(violations(rule, imports) for rule in RULES))
    assert not KNOWN_EXCEPTIONS.keys() - every, "fixed: take these out of KNOWN_EXCEPTIONS"


def test_imports_are_found_wherever_they_are() -> None:
    source = """
import sqlalchemy.orm
from tuneyard import api
from . import board
from ..store.models import Trial
import importlib

def late():
    from redis import Redis
    importlib.import_module("tuneyard.worker.jobs")

if TYPE_CHECKING:
    from tuneyard.client import Client
"""
    found = set(imports_of(source, "tuneyard.scheduler.engine"))
    assert {
        "sqlalchemy.orm",
        "tuneyard.api",
        "tuneyard.scheduler.board",
        "tuneyard.store.models",
        "redis",
        "tuneyard.worker.jobs",
        "tuneyard.client",
    } <= found
    assert "tuneyard.scheduler.samplers" in set(
        imports_of("from .samplers import x", "tuneyard.scheduler", is_package=True)
    )
    assert {name for _, name in violations(RULES[0], {"tuneyard.scheduler.engine": found})} == {
        "sqlalchemy.orm",
        "tuneyard.api",
        "tuneyard.store.models",
        "redis",
        "tuneyard.worker.jobs",
        "tuneyard.client",
    }


def test_the_dispatcher_names_the_workers_slot_job() -> None:
    """The dispatcher enqueues the slot job by name, so the name must be the worker's job."""
    from rq.utils import import_attribute

    from tuneyard.protocol import SLOT_JOB
    from tuneyard.worker.jobs import run_slot

    assert import_attribute(SLOT_JOB) is run_slot

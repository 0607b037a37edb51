"""Schemathesis against the app's own OpenAPI schema: generated requests, valid and invalid,
one operation at a time and as stateful sequences along the links it infers (a created study's
id into its routes, a trial's id into its reports). No answer may be a 5xx, and every answer
must conform to what the schema declares: status code, content type, headers and body.

Invalid input is generated too, and must never crash the server; that every invalid input is
refused is not asserted: the API parses leniently on purpose (a number sent as a string is
accepted, as YAML study files need).

The budget is fixed (examples per operation, steps per stateful run, derandomized Hypothesis),
so the test sends the same requests on every run.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, Phase, settings
from schemathesis import checks
from sqlalchemy import Engine
from starlette.testclient import TestClient

from tests.helpers import API, study_spec
from tuneyard.api.app import create_app
from tuneyard.service.context import Toolkit
from tuneyard.service.tokens import TokenService
from tuneyard.settings import Settings
from tuneyard.store.db import make_engine, make_sessionmaker
from tuneyard.store.models import Base

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

EXAMPLES = 30
STATEFUL_RUNS = 15
STATEFUL_STEPS = 12
CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_headers_conformance,
    checks.response_schema_conformance,
    checks.ignored_auth,
]
FIXED = settings(
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
    phases=[Phase.explicit, Phase.generate],
)


def _app() -> tuple[FastAPI, TokenService, Engine]:
    """The app, with auth on, on a fresh SQLite database, and its tokens. Built when the
    module is collected, since the schema it serves decides the tests; it touches nothing
    outside its temporary directory."""
    tmp = Path(tempfile.mkdtemp(prefix="tuneyard-fuzz-"))
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)
    url = f"sqlite:///{tmp / 'fuzz.db'}"
    settings_ = Settings(
        database_url=url, data_dir=tmp, redis_url="redis://127.0.0.1:1/0", report_rate=0
    )
    engine = make_engine(url)
    Base.metadata.create_all(engine)
    tokens = TokenService(Toolkit(make_sessionmaker(engine), settings_))
    return create_app(settings_), tokens, engine


APP, TOKENS, ENGINE = _app()
_admin: list[str] = []
_revoking: list[bool] = [True]


def auth() -> dict[str, str]:
    """An admin token's header; a new token when the fuzzing may have revoked the last one
    (it calls DELETE /tokens/{id} too)."""
    if _revoking[0] and (not _admin or TOKENS.authenticate(_admin[0]) is None):
        _admin[:] = [TOKENS.create("fuzz", "admin").secret]
    _revoking[0] = False
    return {"Authorization": f"Bearer {_admin[0]}"}


def called(case: schemathesis.Case) -> None:
    if case.method.upper() == "DELETE" and case.path.startswith("/api/v1/tokens/"):
        _revoking[0] = True


schema = schemathesis.openapi.from_asgi("/openapi.json", APP)
# What each stateful run starts from: studies with trials running, whose ids the inferred links
# carry into every route (generated study definitions are rarely valid, so few are created).
SEED = [
    study_spec(name="seed-asha"),
    study_spec(
        name="seed-grid",
        sampler={"type": "grid"},
        scheduler={"type": "fifo", "max_resource": 3},
        space={
            "model": {"type": "categorical", "choices": ["a", "b"]},
            "depth": {"type": "int", "low": 1, "high": 3, "when": {"model": "a"}},
        },
        execution={"command": ["python3", "train.py", "--depth={depth}"]},
    ),
]


@schema.parametrize()
@settings(FIXED, max_examples=EXAMPLES)
def test_every_operation(case: schemathesis.Case) -> None:
    try:
        case.call_and_validate(headers=auth(), checks=CHECKS)
    finally:
        called(case)


class Workflow(schema.as_state_machine()):  # type: ignore[misc]
    def setup(self) -> None:
        # Every run starts from the same empty database: Hypothesis replays a run's choices
        # and requires them to meet the same answers, which rows left by earlier runs (ids,
        # lists, a study's state) would change.
        Base.metadata.drop_all(ENGINE)
        Base.metadata.create_all(ENGINE)
        _admin.clear()
        _revoking[0] = True
        http = TestClient(APP, headers=auth())
        for spec in SEED:
            sid = http.post(f"{API}/studies", json=spec).json()["id"]
            job = http.post(f"{API}/studies/{sid}/next", json={"worker": "seed"}).json()
            http.post(
                f"{API}/trials/{job['trial_id']}/reports",
                json={"attempt": 1, "step": 1, "value": 0.5},
            )

    def get_call_kwargs(self, case: schemathesis.Case) -> dict[str, Any]:
        return {"headers": auth()}

    def after_call(self, response: Any, case: schemathesis.Case) -> None:
        super().after_call(response, case)
        called(case)

    def validate_response(
        self, response: Any, case: schemathesis.Case, *args: Any, **kwargs: Any
    ) -> None:
        case.validate_response(response, checks=CHECKS)


def test_stateful_sequences() -> None:
    Workflow.run(
        settings=settings(FIXED, max_examples=STATEFUL_RUNS, stateful_step_count=STATEFUL_STEPS)
    )

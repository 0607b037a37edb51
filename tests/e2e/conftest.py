"""The deployment most end-to-end tests run on: the API and the dispatcher in processes of
their own, with auth on, on PostgreSQL and Redis (tests/e2e/stack.py). A test module that
needs other settings defines a ``deployment`` fixture of its own with :func:`running`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.stack import Deployment, running


@pytest.fixture
def deployment(postgres_url: str, redis_url: str, tmp_path: Path) -> Iterator[Deployment]:
    with running(postgres_url, redis_url, tmp_path) as d:
        yield d

"""Fixtures shared by the CLI tests."""

from __future__ import annotations

import httpx
import pytest

from tests.fake_api import FakeApi
from tuneyard import cli
from tuneyard.cli import common
from tuneyard.client import Client


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> FakeApi:
    fake = FakeApi()

    def make_client(url: str) -> Client:
        fake.urls.append(url)
        return Client(url, transport=httpx.MockTransport(fake.handle), retries=0)

    monkeypatch.setattr(common, "make_client", make_client)
    # Tables unwrapped, whatever the terminal. Rich's width setter pins the width, and undoing
    # a patch of the property would pin the width read at setup (80 without a terminal) for
    # every later test, so that a CliRunner's COLUMNS no longer counts; the attribute the
    # setter writes goes back to None (follow the terminal) instead.
    monkeypatch.setattr(cli.console, "_width", 200)
    monkeypatch.delenv("TUNEYARD_API_URL", raising=False)
    return fake

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
    monkeypatch.setattr(cli.console, "width", 200)  # tables unwrapped, whatever the terminal
    monkeypatch.delenv("TUNEYARD_API_URL", raising=False)
    return fake

"""Passwords in URLs and in exception text are masked before anything is logged or printed."""

from __future__ import annotations

import pytest

from tuneyard.redact import redact_text, redact_url


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:s3cret@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0"),
        ("rediss://default:s3cret@cache:6380/2", "rediss://default:***@cache:6380/2"),
        ("redis://u:p@ss@host:1/0", "redis://u:***@host:1/0"),
        ("postgresql+psycopg://app:s3cret@db:5432/ty", "postgresql+psycopg://app:***@db:5432/ty"),
        (
            "postgresql://app@db/ty?sslmode=require&password=s3cret",
            "postgresql://app@db/ty?sslmode=require&password=***",
        ),
        ("https://user:s3cret@api.example/", "https://user:***@api.example/"),
        # Nothing secret: returned exactly as given.
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("postgresql+psycopg://postgres@127.0.0.1:5432/postgres", None),
        ("sqlite:////var/lib/tuneyard/tuneyard.db", None),
        ("sqlite:///relative.db", None),
        ("http://[not a url", None),
    ],
)
def test_a_url_loses_its_password_and_keeps_where_it_points(url: str, shown: str | None) -> None:
    assert redact_url(url) == (shown if shown is not None else url)


def test_free_text_loses_every_password_it_quotes() -> None:
    text = (
        "cannot reach redis://:s3cret@h:6379/0 nor postgresql://app:p@ss@db/ty; "
        "conninfo host=db password=hunter2 user=app; api_key='k 1' token=abc max_tokens=5"
    )
    out = redact_text(text)
    for secret in ("s3cret", "p@ss", "hunter2", "k 1", "abc"):
        assert secret not in out
    assert "redis://:***@h:6379/0" in out and "postgresql://app:***@db/ty" in out
    assert "host=db password=*** user=app" in out
    assert "max_tokens=5" in out, "a name that only contains a secret's name is left alone"

"""The ``notifications`` part of a study definition, which hosts the server posts to, and
the CLI showing the signing secret once."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError

from tests.fake_api import SPEC, FakeApi, run, study_json
from tests.helpers import study_spec
from tuneyard.service.notifications import backoff, host_refusal, sign
from tuneyard.settings import Settings
from tuneyard.spec import StudySpec

H = "https://h.example.com"


def notifications(**given: object) -> StudySpec:
    return StudySpec.model_validate(study_spec(notifications=given))


def test_the_defaults_tell_every_event() -> None:
    spec = notifications(webhook="https://hooks.example.com/t")
    assert spec.notifications is not None
    assert spec.notifications.on == ["best", "failing", "finished"]
    assert spec.notifications.max_attempts == 8
    assert StudySpec.model_validate(study_spec()).notifications is None


@pytest.mark.parametrize(
    ("given", "field", "says"),
    [
        ({"webhook": "file:///etc/passwd"}, ("notifications", "webhook"), "http or https"),
        (
            {"webhook": H, "on": ["best", "best"]},
            ("notifications", "on"),
            "twice",
        ),
        ({"webhook": H, "on": ["started"]}, ("notifications", "on", 0), ""),
        ({"webhook": H, "on": []}, ("notifications", "on"), ""),
        (
            {"webhook": H, "max_attempts": 0},
            ("notifications", "max_attempts"),
            "",
        ),
        ({"webhook": "https://h.example.com/a b"}, ("notifications", "webhook"), "whitespace"),
        ({"webhook": H, "secret": "x"}, ("notifications", "secret"), ""),
    ],
)
def test_a_bad_notifications_part_names_its_field(
    given: dict[str, object], field: tuple[object, ...], says: str
) -> None:
    with pytest.raises(ValidationError) as info:
        StudySpec.model_validate(study_spec(notifications=given))
    [error] = info.value.errors()
    assert error["loc"] == field
    assert says in error["msg"]


def public(host: str, port: int) -> list[str]:
    return ["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946"]


def inside(host: str, port: int) -> list[str]:
    return ["10.0.0.1"]


@pytest.mark.parametrize(
    "addresses",
    [["127.0.0.1"], ["93.184.216.34", "10.0.0.1"], ["::ffff:192.168.1.1"], ["fe80::1%eth0"]],
)
def test_by_default_a_host_with_any_inside_address_is_refused(addresses: list[str]) -> None:
    why = host_refusal(Settings(), "https://hooks.example.com/x", lambda h, p: addresses)
    assert why is not None and "not a public address" in why


def test_by_default_a_public_host_is_posted_to() -> None:
    assert host_refusal(Settings(), "https://hooks.example.com/x", public) is None
    # At creation nothing is resolved: the name as written passes, an inside address does not.
    assert host_refusal(Settings(), "https://hooks.example.com/x", None) is None
    assert host_refusal(Settings(), "http://169.254.169.254/latest", None) is not None
    assert host_refusal(Settings(), "http://LOCALHOST./x", None) is not None


def test_an_allow_list_names_the_hosts_by_glob() -> None:
    allow = Settings(webhook_allow="127.0.0.1, *.hooks.internal")
    assert host_refusal(allow, "http://127.0.0.1:8080/x", inside) is None
    assert host_refusal(allow, "http://ci.HOOKS.internal/x", inside) is None
    assert host_refusal(allow, "https://hooks.example.com/x", public) is not None
    assert host_refusal(allow, "http://hooks.internal/x", inside) is not None


def test_the_signature_is_the_bodys_hmac_and_backoff_doubles() -> None:
    assert sign("k", b"{}") == (
        "sha256=add853b103fbcc936a194f9eb15e29c4ff08af6e47d5d1bca4f20218e31e4fff"
    )
    assert [backoff(n).total_seconds() for n in (1, 2, 3)] == [10, 20, 40]
    assert backoff(30).total_seconds() == 3600


def test_the_cli_prints_the_webhook_secret_it_is_shown_once(api: FakeApi, tmp_path: Path) -> None:
    f = tmp_path / "study.json"
    f.write_text(json.dumps(SPEC))
    created = study_json(7, webhook_secret="ab" * 32, webhook_signed=True)
    api.on("POST", "/studies", httpx.Response(201, json=created))
    r = run("study", "create", "-f", str(f))
    assert r.exit_code == 0, r.output
    assert "ab" * 32 in r.output and "shown once" in r.output

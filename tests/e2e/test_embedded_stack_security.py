"""The whole embedded stack (``tuneyard up``'s) with its Redis behind a password: the API, the
dispatcher and the RQ workers all reach it with the password they were handed, none of them
shows it on a command line or in a log, everything the run writes is private to this user,
and the token made for the dashboard can read and nothing more."""

from __future__ import annotations

import stat
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import psutil
import pytest

from tests.helpers import API
from tuneyard import embedded
from tuneyard.worker.allow import Allowlist

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]

SPEC = {
    "name": "embedded-security",
    "metric": "loss",
    "space": {"x": {"type": "float", "low": 0, "high": 1}},
    "sampler": {"type": "random", "seed": 3},
    "scheduler": {"type": "fifo", "max_resource": 3},
    "limits": {"max_trials": 3, "max_concurrent": 2},
    "execution": {"entrypoint": "tests.e2e.objectives:curve"},
}


def test_the_stack_runs_on_a_private_redis_and_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TUNEYARD_REDIS_URL", raising=False)  # the stack starts its own
    monkeypatch.delenv("TUNEYARD_DATABASE_URL", raising=False)
    data_dir = tmp_path / "up"
    allow = Allowlist.of(["tests.e2e.objectives:*"])
    with (
        embedded.private_umask(),
        embedded.stack(data_dir, workers=2, paths=[str(ROOT)], allow=allow) as st,
    ):
        password = urlsplit(st.redis_url).password
        assert password and st.token and st.read_token
        admin = httpx.Client(base_url=st.api_url, headers={"Authorization": f"Bearer {st.token}"})
        reader = {"Authorization": f"Bearer {st.read_token}"}
        with admin:
            created = admin.post(f"{API}/studies", json=SPEC)
            assert created.status_code == 201, created.text
            sid = created.json()["id"]
            # The dashboard's token reads, and can change nothing.
            assert httpx.get(f"{st.api_url}{API}/studies/{sid}", headers=reader).is_success
            refused = httpx.post(f"{st.api_url}{API}/studies", json=SPEC, headers=reader)
            assert refused.status_code == 403
            # The dispatcher fills the queue and the workers take from it: both through the
            # password-protected Redis.
            deadline = time.monotonic() + 180
            while (state := admin.get(f"{API}/studies/{sid}").json()["state"]) == "running":
                assert st.problem() is None, st.problem()
                assert time.monotonic() < deadline, "the study did not finish"
                time.sleep(0.5)
            assert state == "completed"
            # The API reaches Redis with the password too.
            assert admin.get("/readyz").json()["redis"] == "ok"

        stack_procs = [p for p, _ in st.processes.values()]
        every = [psutil.Process(p.pid) for p in stack_procs]
        every += [c for p in list(every) for c in p.children(recursive=True)]
        every += [c for c in psutil.Process().children() if c.name() == "redis-server"]
        assert len(every) >= 5  # API, dispatcher, pool with 2 slots, Redis
        for proc in every:
            assert password not in " ".join(proc.cmdline()), proc.cmdline()

    for log in data_dir.glob("*.log"):
        assert password not in log.read_text(errors="replace"), log.name
    for path in [data_dir, *data_dir.rglob("*")]:
        mode = stat.S_IMODE(path.lstat().st_mode)
        if path.is_symlink():
            continue
        assert mode & 0o077 == 0, f"{path} is {oct(mode)}"
    assert (data_dir / "tuneyard.db").is_file() and (data_dir / "checkpoints").is_dir()

"""Test helpers: study definitions and a synthetic ask/tell worker over any HTTP client."""

from __future__ import annotations

import io
import math
import tarfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

API = "/api/v1"


def archive(content: bytes, name: str = "state.pkl") -> bytes:
    """A checkpoint archive (tar.gz) holding one file."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo(name)
        info.size = len(content)
        tar.addfile(info, io.BytesIO(content))
    return buf.getvalue()


def checkpoint(http: Any, tid: int, attempt: int, tag: str = "") -> str:
    """Upload a small checkpoint archive of a running trial's attempt (its content set by
    ``tag``, so different tags are different archives); returns the location to pass to
    /pause or /release, as a worker does."""
    data = archive(f"trial {tid} {tag}".encode())
    r = http.put(f"{API}/trials/{tid}/checkpoint", params={"attempt": attempt}, content=data)
    assert r.status_code == 201, r.text
    location: str = r.json()["location"]
    return location


@contextmanager
def serve(app: Any) -> Iterator[str]:
    """The app served by uvicorn in a thread (one event loop, as in production); yields its
    URL. For what a TestClient cannot show: an endless stream, requests answered while
    another one is being worked on."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not (server.started and server.servers and server.servers[0].sockets):
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def study_spec(**overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "name": "synthetic",
        "metric": "loss",
        "direction": "minimize",
        "space": {
            "x": {"type": "float", "low": 0.0, "high": 1.0},
            "y": {"type": "float", "low": 1e-3, "high": 1.0, "log": True},
            "kind": {"type": "categorical", "choices": ["a", "b"]},
        },
        "sampler": {"type": "random", "seed": 3},
        "scheduler": {
            "type": "asha",
            "min_resource": 1,
            "max_resource": 27,
            "reduction_factor": 3,
        },
        "limits": {"max_trials": 30, "max_concurrent": 4},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(spec.get(key), dict) and key != "space":
            spec[key] = {**spec[key], **value}
        else:
            spec[key] = value
    return spec


def curve(params: dict[str, Any], step: float) -> float:
    """A learning curve: a final quality set by the params, approached as 1/step."""
    final = (params["x"] - 0.3) ** 2 + 0.1 * abs(math.log10(params["y"]) + 1.5)
    return final + 0.5 / math.sqrt(step)


def run_job(
    http: Any,
    job: dict[str, Any],
    objective: Callable[[dict[str, Any], float], float | dict[str, float]] = curve,
    on_report: Callable[[dict[str, Any], float, dict[str, Any]], None] | None = None,
) -> str:
    """Run one assignment: report every integer step, obey the decisions. Returns the ending."""
    tid = job["trial_id"]
    step = int(job["resource_from"])
    to = job["resource_to"]
    while step < to:
        step += 1
        result = objective(job["params"], step)
        # Several metrics (objectives, constrained ones) go as metrics.
        measured = {"metrics": result} if isinstance(result, dict) else {"value": result}
        r = http.post(
            f"{API}/trials/{tid}/reports",
            json={"attempt": job["attempt"], "step": step, **measured},
        )
        assert r.status_code == 200, r.text
        ans = r.json()
        if on_report:
            on_report(job, step, ans)
        if ans["decision"] == "pause":
            p = http.post(
                f"{API}/trials/{tid}/pause",
                json={
                    "attempt": job["attempt"],
                    "checkpoint": checkpoint(http, tid, job["attempt"], f"step {step}"),
                },
            )
            assert p.status_code == 200, p.text
            return "pause"
        if ans["decision"] in ("stop", "complete"):
            return ans["decision"]
        to = ans["resource_to"] or to
    r = http.post(f"{API}/trials/{tid}/complete", json={"attempt": job["attempt"]})
    assert r.status_code == 200, r.text
    return "complete"


def drive(http: Any, study_id: int, max_jobs: int = 10_000, **kw: Any) -> list[dict[str, Any]]:
    """One sequential worker: next → run → … until the study is finished. Returns the jobs."""
    jobs = []
    for _ in range(max_jobs):
        r = http.post(f"{API}/studies/{study_id}/next", json={"worker": "w0"})
        if r.status_code == 409:
            return jobs
        assert r.status_code == 200, (r.status_code, r.text)
        job = r.json()
        jobs.append(job)
        run_job(http, job, **kw)
    raise AssertionError("study did not finish")

"""What bench/overhead.py and bench/utilization.py share: databases of their own on the
machine's PostgreSQL, API server processes started the production way, and CPU time read from
/proc."""

from __future__ import annotations

import os
import platform
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import IO, Any

import httpx
import numpy as np
import psycopg

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
DEFAULT_POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432"
DEFAULT_REDIS = "redis://127.0.0.1:6379"
CLK_TCK = os.sysconf("SC_CLK_TCK")


# -- CPU time from /proc --------------------------------------------------------------------------
def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of one process (None once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read().decode()
    except OSError:
        return None
    # The command name may hold spaces and parentheses: the fields start after the last ')'.
    fields = raw[raw.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def descendants(pid: int) -> list[int]:
    """Every process below ``pid``."""
    parent_of: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                raw = f.read().decode()
        except OSError:
            continue
        parent_of[int(entry)] = int(raw[raw.rindex(")") + 2 :].split()[1])
    out: list[int] = []
    frontier = [pid]
    while frontier:
        p = frontier.pop()
        kids = [c for c, pp in parent_of.items() if pp == p]
        out.extend(kids)
        frontier.extend(kids)
    return out


class CpuMeter:
    """CPU seconds used by a set of processes between ``start()`` and ``stop()``. Processes
    that appear in between count from zero; one that ended in between keeps what it had used
    at ``start()`` (its last stretch is lost: the benchmark's processes live longer)."""

    def __init__(self) -> None:
        self.before: dict[int, float] = {}

    def start(self, pids: Iterable[int]) -> None:
        self.before = {p: c for p in pids if (c := cpu_seconds(p)) is not None}

    def stop(self, pids: Iterable[int]) -> float:
        total = 0.0
        for p in set(pids):
            c = cpu_seconds(p)
            if c is not None:
                total += c - self.before.get(p, 0.0)
        return total


# -- PostgreSQL ----------------------------------------------------------------------------------
def libpq_url(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def with_database(base: str, name: str) -> str:
    return f"{base.rstrip('/')}/{name}"


class PgAdmin:
    """A connection to the server's ``postgres`` database, to create and drop the benchmark's
    own databases and to find the backends serving them."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.conn = psycopg.connect(libpq_url(with_database(base, "postgres")), autocommit=True)

    def recreate(self, name: str) -> str:
        self.drop(name)
        self.conn.execute(f'CREATE DATABASE "{name}"')
        return with_database(self.base, name)

    def drop(self, name: str) -> None:
        self.conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,)
        )
        self.conn.execute(f'DROP DATABASE IF EXISTS "{name}"')

    def backends(self, name: str) -> list[int]:
        rows = self.conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s", (name,)
        ).fetchall()
        return [int(r[0]) for r in rows]

    def version(self) -> str:
        row = self.conn.execute("SHOW server_version").fetchone()
        return str(row[0]) if row else "?"

    def max_connections(self) -> int:
        row = self.conn.execute("SHOW max_connections").fetchone()
        return int(row[0]) if row else 0

    def close(self) -> None:
        self.conn.close()


def redis_pid(url: str) -> int | None:
    import redis

    client = redis.Redis.from_url(url)
    try:
        pid = client.info("server").get("process_id")
    finally:
        client.close()
    return int(pid) if pid else None


# -- the API server --------------------------------------------------------------------------------
def create_token(database_url: str, scope: str) -> str:
    """A new API token of ``scope``, made the way the README makes the first one
    (``tuneyard token create --db``); empty when this version has no tokens."""
    out = subprocess.run(
        [PY, "-m", "tuneyard.cli", "token", "create", "--scope", scope, "--db"],
        env={**os.environ, "TUNEYARD_DATABASE_URL": database_url},
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    if out.returncode != 0:
        return ""
    return out.stdout.strip().splitlines()[-1].strip()


def auth_headers(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ApiServer:
    """``tuneyard server`` in a process of its own, as the README's production setup runs it
    (the same command as the Dockerfile's), on the given database."""

    def __init__(
        self,
        database_url: str,
        redis_url: str,
        data_dir: Path,
        log: IO[bytes],
        args: Sequence[str] = (),
        env: dict[str, str] | None = None,
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        environment = {
            **os.environ,
            "TUNEYARD_DATABASE_URL": database_url,
            "TUNEYARD_REDIS_URL": redis_url,
            "TUNEYARD_DATA_DIR": str(data_dir),
            **(env or {}),
        }
        # BENCH_PROFILE=FILE: the server under yappi (bench/profile_server.py), for where the
        # API's CPU per report goes when py-spy is not at hand.
        profile = os.environ.get("BENCH_PROFILE")
        if profile:
            cmd = [PY, str(ROOT / "bench" / "profile_server.py"), profile, "server"]
        else:
            cmd = [PY, "-m", "tuneyard.cli", "server"]
        cmd += ["--host", "127.0.0.1", "--port", str(self.port)]
        self.proc = subprocess.Popen(
            [*cmd, *args], env=environment, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT
        )

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the API server exited with {self.proc.returncode}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the API server did not become ready")
            time.sleep(0.1)

    def pids(self) -> list[int]:
        return [self.proc.pid, *descendants(self.proc.pid)]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# -- reporting ----------------------------------------------------------------------------------
def pct(xs: Sequence[float], q: float) -> float:
    """The q-quantile of latencies in seconds, in milliseconds (NaN when there are none)."""
    if not xs:
        return float("nan")
    return 1000.0 * float(np.quantile(np.asarray(xs), q))


def machine(admin: PgAdmin | None = None) -> str:
    model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3
    parts = [
        f"{os.cpu_count()} cores ({model})",
        f"{mem:.0f} GiB",
        f"Python {platform.python_version()}",
    ]
    if admin is not None:
        parts.append(f"PostgreSQL {admin.version()} (max_connections {admin.max_connections()})")
    return ", ".join(parts)


def fmt_ms(v: float) -> str:
    if v != v:  # NaN
        return "-"
    return f"{v:.0f}" if v >= 100 else f"{v:.1f}"


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table, printed and returned."""
    cells = [[str(c) for c in r] for r in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
    lines = [
        "| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |",
        "|" + "|".join("-" * (w + 2) for w in widths) + "|",
    ]
    lines += [
        "| " + " | ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in cells
    ]
    text = "\n".join(lines)
    print(text, flush=True)
    return text

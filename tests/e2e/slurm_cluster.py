"""A private single-node Slurm cluster for end-to-end tests: munged with a key of its own,
slurmctld and slurmd from Debian's packages, a slurm.conf generated in a temporary directory
(nothing read from /etc/slurm or /etc/munge), ports of its own. Started as root (slurmd
launches jobs as their users), stopped by PID.

Commands reach it through ``env`` (SLURM_CONF names the generated file)."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from tests.e2e.servers import free_port

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "scancel", "squeue", "sinfo")


def missing() -> str | None:
    """Why this machine cannot run the cluster, or None."""
    absent = [
        name
        for name in (*DAEMONS, *CLIENTS)
        if not (shutil.which(name) or Path("/usr/sbin", name).exists())
    ]
    if absent:
        return f"{', '.join(absent)} not installed (Debian: slurmctld slurmd slurm-client munge)"
    if os.geteuid() != 0:
        return "slurmd must run as root to start jobs"
    return None


def _exe(name: str) -> str:
    return shutil.which(name) or str(Path("/usr/sbin", name))


def _memory_mib() -> int:
    """What slurmd finds (MemTotal), less a margin: a node configured with more memory than
    it has is drained."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024 * 9 // 10
    raise RuntimeError("no MemTotal in /proc/meminfo")


class SlurmCluster:
    def __init__(self) -> None:
        # In /tmp rather than pytest's 0700 tree: munged wants its socket's directory
        # searchable by all users.
        self.dir = Path(tempfile.mkdtemp(prefix="tuneyard-slurm-"))
        self.dir.chmod(0o755)
        self.conf = self.dir / "slurm.conf"
        self.socket = self.dir / "munge" / "munge.socket"
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self) -> None:
        self._start_munge()
        self._write_conf()
        self._start("slurmctld", [_exe("slurmctld"), "-D", "-f", str(self.conf)])
        self._start("slurmd", [_exe("slurmd"), "-D", "-N", "localhost", "-f", str(self.conf)])
        self._wait_idle()

    def _start(self, name: str, cmd: list[str]) -> None:
        log = open(self.dir / f"{name}.log", "wb")  # noqa: SIM115
        self.procs[name] = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, cwd=self.dir, env=self.env
        )

    def _start_munge(self) -> None:
        keys = self.dir / "munge-key"
        keys.mkdir(mode=0o700)
        key = keys / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        self.socket.parent.mkdir(mode=0o755)
        run = self.socket.parent
        self._start(
            "munged",
            [
                _exe("munged"),
                "--foreground",
                f"--key-file={key}",
                f"--socket={self.socket}",
                f"--pid-file={run / 'munged.pid'}",
                f"--seed-file={run / 'munged.seed'}",
                f"--log-file={self.dir / 'munged.file.log'}",
                "--num-threads=2",
            ],
        )
        self._wait(lambda: self.socket.exists(), "munged's socket")

    def _write_conf(self) -> None:
        d = self.dir
        (d / "state").mkdir()
        (d / "spool").mkdir()
        (d / "plugstack.conf").write_text("")  # no SPANK plugins: not the machine's
        cpus = os.cpu_count() or 1
        self.conf.write_text(
            "\n".join(
                [
                    "ClusterName=tuneyardtest",
                    "SlurmctldHost=localhost(127.0.0.1)",
                    f"SlurmctldPort={free_port()}",
                    f"SlurmdPort={free_port()}",
                    "SlurmUser=root",
                    "SlurmdUser=root",
                    "AuthType=auth/munge",
                    "CredType=cred/munge",
                    f"AuthInfo=socket={self.socket}",
                    f"StateSaveLocation={d / 'state'}",
                    f"SlurmdSpoolDir={d / 'spool'}",
                    f"SlurmctldPidFile={d / 'slurmctld.pid'}",
                    f"SlurmdPidFile={d / 'slurmd.pid'}",
                    f"PlugStackConfig={d / 'plugstack.conf'}",
                    "ProctrackType=proctrack/linuxproc",
                    "TaskPlugin=task/none",
                    "SelectType=select/cons_tres",
                    "SelectTypeParameters=CR_CPU",
                    "SchedulerType=sched/builtin",
                    "MpiDefault=none",
                    "JobAcctGatherType=jobacct_gather/none",
                    "AccountingStorageType=accounting_storage/none",
                    "JobCompType=jobcomp/none",
                    "ReturnToService=2",
                    "KillWait=30",
                    "MailProg=/bin/true",
                    f"NodeName=localhost NodeAddr=127.0.0.1 CPUs={cpus} "
                    f"RealMemory={_memory_mib()} State=UNKNOWN",
                    "PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP",
                    "",
                ]
            )
        )

    def run(self, *cmd: str, check: bool = True) -> str:
        done = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=30)
        if check and done.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)}: {done.stderr or done.stdout}\n{self.logs()}")
        return done.stdout

    def _wait_idle(self) -> None:
        def idle() -> bool:
            out = self.run("sinfo", "--noheader", "--format=%T", check=False).strip()
            return out == "idle"

        self._wait(idle, "the Slurm node idle")

    def _wait(self, cond: Callable[[], bool], what: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, p in self.procs.items():
                if p.poll() is not None:
                    raise RuntimeError(f"{name} exited with {p.returncode}\n{self.logs()}")
            if cond():
                return
            time.sleep(0.2)
        raise RuntimeError(f"{what}: not within {timeout} s\n{self.logs()}")

    def jobs(self) -> list[str]:
        out = self.run("squeue", "--noheader", "--format=%i", check=False)
        return [line.strip() for line in out.splitlines() if line.strip()]

    def logs(self, tail: int = 3000) -> str:
        out = []
        for f in sorted(self.dir.glob("*.log")):
            out.append(f"== {f.name} ==\n{f.read_text(errors='replace')[-tail:]}")
        return "\n".join(out)

    def close(self) -> None:
        """Jobs cancelled (their processes end with them), then the daemons by PID."""
        with contextlib.suppress(Exception):
            if jobs := self.jobs():
                self.run("scancel", *jobs, check=False)
                self._wait(lambda: not self.jobs(), "the jobs gone", timeout=60)
        for name in reversed(DAEMONS):
            p = self.procs.get(name)
            if p is None:
                continue
            if p.poll() is None:
                p.terminate()
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        shutil.rmtree(self.dir, ignore_errors=True)

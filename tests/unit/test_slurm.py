"""Workers on Slurm without a cluster: the batch script `tuneyard slurm submit` writes (run
by bash with a stand-in Python that records what it was started with), the GPUs a worker
finds in a job's environment, the token file. tests/e2e/test_slurm.py runs it all on a real
Slurm."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tuneyard import cli
from tuneyard.cli import startup
from tuneyard.cli.startup import StartupError
from tuneyard.worker import pool
from tuneyard.worker.pool import Gpu, plan_slots
from tuneyard.worker.slurm import SlurmGpu, WorkerJob, allocated_gpus, parse_time

TOKEN = "ty_" + "a" * 43


def job(**kw: Any) -> WorkerJob:
    base: dict[str, Any] = {
        "api": "http://api.internal:8765",
        "token_file": "/home/me/.tuneyard/worker-token",
        "python": "/opt/venv/bin/python",
        "allow": ("myproj.*",),
    }
    return WorkerJob(**{**base, **kw})


def sbatch_lines(script: str) -> list[str]:
    return [ln.removeprefix("#SBATCH ") for ln in script.splitlines() if ln.startswith("#SBATCH")]


# -- the script ------------------------------------------------------------------------------
def test_gpu_tasks_ask_for_their_gres_and_the_worker_takes_the_job_s_gpus() -> None:
    script = job(tasks=8, gpus_per_task=2, partition="a100", time="1-00:00:00").script()
    lines = sbatch_lines(script)
    assert "--array=0-7" in lines and "--gres=gpu:2" in lines
    assert "--partition=a100" in lines and "--time=1-00:00:00" in lines
    assert "--gpus slurm" in script and "--slots" not in script


def test_multi_gpu_trials_group_each_task_s_gpus_into_slots() -> None:
    script = job(gpus_per_task=4, gpus_per_slot=2).script()
    assert "--gres=gpu:4" in sbatch_lines(script)
    assert "--gpus slurm" in script and "--gpus-per-slot 2" in script
    assert "--gpus-per-slot" not in job(gpus_per_task=4).script(), "one GPU per slot: as before"
    for per_task, per_slot in ((3, 2), (0, 2)):
        with pytest.raises(ValueError, match=f"--gpus-per-slot: {per_slot} does not divide"):
            job(gpus_per_task=per_task, gpus_per_slot=per_slot).script()


def test_cpu_tasks_run_one_slot_and_ask_for_no_gres() -> None:
    script = job(gpus_per_task=0).script()
    assert not any(ln.startswith("--gres") for ln in sbatch_lines(script))
    assert "--slots 1" in script and "--gpus" not in script
    assert not any(ln.startswith(("--partition", "--time")) for ln in sbatch_lines(script))


def test_the_stop_signal_goes_to_the_batch_shell_grace_plus_a_margin_before_the_limit() -> None:
    assert "--signal=B:TERM@120" in sbatch_lines(job().script())
    assert "--signal=B:TERM@91" in sbatch_lines(job(grace=30.5).script())
    # The worker replaces the batch shell, so that signal is the worker's.
    assert "\nexec /opt/venv/bin/python -m tuneyard.cli worker " in job().script()


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("30", 1800),
        ("90:30", 5430),
        ("4:00:00", 14400),
        ("1-12", 129600),
        ("2-00:30", 174600),
        ("1-00:00:05", 86405),
        ("UNLIMITED", None),
        ("infinite", None),
    ],
)
def test_slurm_time_formats(value: str, seconds: int | None) -> None:
    assert parse_time(value) == seconds


@pytest.mark.parametrize("value", ["", "1h", "1:2:3:4", "-5", "1-", "ten"])
def test_a_time_that_is_not_slurm_s_is_refused(value: str) -> None:
    with pytest.raises(ValueError, match="is not a Slurm time"):
        parse_time(value)


def test_a_time_limit_within_the_signal_s_lead_is_refused_naming_time() -> None:
    with pytest.raises(ValueError, match=r"^--time: 2 is not longer than .* 120 s"):
        job(time="2").script()
    with pytest.raises(ValueError, match=r"^--time: 5 is not longer than .* 300 s"):
        job(time="5", grace=240).script()
    assert "--time=3" in sbatch_lines(job(time="3").script())


@pytest.mark.parametrize(
    ("kw", "flag"),
    [
        ({"partition": "gpu a100"}, "--partition"),
        ({"account": "lab'x"}, "--account"),
        ({"time": "1:00\n#SBATCH --x"}, "--time"),
        ({"job_name": 'a"b'}, "--job-name"),
        ({"sbatch_options": ("--qos=long extra",)}, "--sbatch-option"),
        ({"sbatch_options": ("qos=long",)}, "--sbatch-option"),
        ({"output": 'logs/"x".out'}, "--output"),
        ({"tasks": 0}, "--tasks"),
        ({"allow": ()}, "--allow"),
    ],
)
def test_values_an_sbatch_line_cannot_carry_are_refused_naming_the_option(
    kw: dict[str, Any], flag: str
) -> None:
    with pytest.raises(ValueError, match=f"^{flag}: "):
        job(**kw).script()


def test_the_token_stays_in_its_file_and_the_worker_drops_what_the_job_inherited(
    tmp_path: Path,
) -> None:
    """bash runs the script, its Python a stand-in that records its arguments and
    environment: paths with blanks and quotes reach the worker whole."""
    bin_dir = tmp_path / "a venv" / "bin"
    bin_dir.mkdir(parents=True)
    record = tmp_path / "record.json"
    python = bin_dir / "py thon"
    seen_now = "{'argv': sys.argv[1:], 'env': dict(os.environ)}"
    python.write_text(
        f"#!{sys.executable}\nimport json, os, sys\n"
        f"json.dump({seen_now}, open({str(record)!r}, 'w'))\n"
    )
    python.chmod(0o755)
    token_file = tmp_path / "it's a token"
    script = job(
        python=str(python),
        token_file=str(token_file),
        data_dir=str(tmp_path / "work dir"),
        paths=(str(tmp_path / "my code"),),
        allow=("my proj.*", "x;rm -rf /"),
        redis="redis://:p@ss w0rd@redis:6379/0",
        queue="gpu $HOME",
    ).script()
    env = {
        "PATH": os.environ["PATH"],
        "SLURM_ARRAY_JOB_ID": "41",
        "SLURM_ARRAY_TASK_ID": "3",
        "TUNEYARD_TOKEN": TOKEN,
        "TUNEYARD_DATABASE_URL": "postgresql://u:pw@db/tuneyard",
    }
    subprocess.run(["bash", "-c", script], env=env, check=True, timeout=30)
    seen = json.loads(record.read_text())
    assert seen["argv"] == [
        "-m",
        "tuneyard.cli",
        "worker",
        "--api",
        "http://api.internal:8765",
        "--token-file",
        str(token_file),
        "--queue",
        "gpu $HOME",
        "--name",
        "slurm-41_3",
        "--grace",
        "60",
        "--data-dir",
        f"{tmp_path / 'work dir'}/slurm-41_3",
        "--slots",
        "1",
        "--allow",
        "my proj.*",
        "--allow",
        "x;rm -rf /",
        "--path",
        str(tmp_path / "my code"),
    ]
    assert "TUNEYARD_TOKEN" not in seen["env"] and "TUNEYARD_DATABASE_URL" not in seen["env"]
    assert seen["env"]["TUNEYARD_REDIS_URL"] == "redis://:p@ss w0rd@redis:6379/0"
    assert TOKEN not in script


# -- the GPUs of a job ---------------------------------------------------------------------------
def test_cuda_visible_devices_is_used_as_is_even_when_slurm_renumbered_the_gpus() -> None:
    # A node that confines jobs to their devices: node GPUs 2 and 3 are CUDA's 0 and 1.
    env = {"SLURM_JOB_ID": "7", "CUDA_VISIBLE_DEVICES": "0,1", "SLURM_JOB_GPUS": "2,3"}
    assert allocated_gpus(env) == [SlurmGpu("0", "2"), SlurmGpu("1", "3")]
    # A node that does not: CUDA sees every GPU, and Slurm names the job's by the node's ids.
    env = {"SLURM_JOB_ID": "7", "CUDA_VISIBLE_DEVICES": "5,6", "SLURM_JOB_GPUS": "5,6"}
    assert [g.visible for g in allocated_gpus(env)] == ["5", "6"]


def test_a_step_s_gpus_win_over_the_job_s() -> None:
    env = {"SLURM_JOB_ID": "7", "SLURM_JOB_GPUS": "0,1,2,3", "SLURM_STEP_GPUS": "2"}
    assert allocated_gpus(env, gpus_on_node=4) == [SlurmGpu("2", "2")]


def test_without_cuda_visible_devices_the_node_s_ids_are_mapped_to_cuda_s() -> None:
    env = {"SLURM_JOB_ID": "7", "SLURM_JOB_GPUS": "4,6"}
    # Every GPU of the node visible: CUDA's ids are the node's.
    assert [g.visible for g in allocated_gpus(env, gpus_on_node=8)] == ["4", "6"]
    # Only the job's two: CUDA numbers them from 0.
    assert [g.visible for g in allocated_gpus(env, gpus_on_node=2)] == ["0", "1"]


def test_no_gpus_in_the_job() -> None:
    assert allocated_gpus({"SLURM_JOB_ID": "7"}) == []
    assert allocated_gpus({"SLURM_JOB_ID": "7", "CUDA_VISIBLE_DEVICES": "NoDevFiles"}) == []


def test_uuids_are_kept_and_matched_to_nvidia_smi_s_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    node = [Gpu(str(i), "H100", 81559, f"GPU-{i}aaa") for i in range(4)]
    monkeypatch.setattr(pool, "detect_gpus", lambda: node)
    env = {"SLURM_JOB_ID": "7", "CUDA_VISIBLE_DEVICES": "GPU-2aaa,GPU-3aaa"}
    assert plan_slots("slurm", None, env) == [
        Gpu("GPU-2aaa", "H100", 81559, "GPU-2aaa"),
        Gpu("GPU-3aaa", "H100", 81559, "GPU-3aaa"),
    ]


def test_the_worker_pins_its_slots_to_the_job_s_gpus_only(monkeypatch: pytest.MonkeyPatch) -> None:
    node = [Gpu(str(i), "A100", 40960, f"GPU-{i}") for i in range(8)]
    monkeypatch.setattr(pool, "detect_gpus", lambda: node)
    env = {"SLURM_JOB_ID": "7", "CUDA_VISIBLE_DEVICES": "3,5", "SLURM_JOB_GPUS": "3,5"}
    expected = [node[3], node[5]]
    assert plan_slots("slurm", None, env) == expected
    assert plan_slots("auto", None, env) == expected, "'auto' inside a job is the job's"
    # Renumbered (the node shows the job only its own two): model and memory by position.
    monkeypatch.setattr(pool, "detect_gpus", lambda: [node[3], node[5]])
    env = {"SLURM_JOB_ID": "7", "CUDA_VISIBLE_DEVICES": "0,1", "SLURM_JOB_GPUS": "3,5"}
    assert plan_slots("slurm", None, env) == [
        Gpu("0", "A100", 40960, "GPU-3"),
        Gpu("1", "A100", 40960, "GPU-5"),
    ]


def test_slurm_gpus_outside_a_job_or_in_a_job_without_gpus_is_an_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(pool, "detect_gpus", lambda: [Gpu("0")])
    with pytest.raises(ValueError, match="SLURM_JOB_ID is not set"):
        plan_slots("slurm", None, {})
    with pytest.raises(ValueError, match=r"Slurm job 7 has no GPUs.*--gres=gpu:N"):
        plan_slots("slurm", None, {"SLURM_JOB_ID": "7"})
    # 'auto' in a job without GPUs takes none of the node's: CPU slots.
    assert plan_slots("auto", 2, {"SLURM_JOB_ID": "7"}) == [None, None]


# -- the token file ------------------------------------------------------------------------------
def token_file(tmp_path: Path, text: str = TOKEN + "\n", mode: int = 0o600) -> Path:
    f = tmp_path / "token"
    f.write_text(text)
    f.chmod(mode)
    return f


def test_a_private_token_file_gives_its_token(tmp_path: Path) -> None:
    assert startup.read_token_file(token_file(tmp_path)) == TOKEN
    assert startup.read_token_file(token_file(tmp_path, mode=0o400)) == TOKEN


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o620, 0o666])
def test_a_token_file_others_may_read_or_change_is_refused(tmp_path: Path, mode: int) -> None:
    with pytest.raises(StartupError, match=f"has mode {mode:04o}.*chmod 600") as info:
        startup.read_token_file(token_file(tmp_path, mode=mode))
    assert str(info.value).startswith("--token-file / TUNEYARD_TOKEN_FILE: ")
    assert TOKEN not in str(info.value)


@pytest.mark.parametrize("text", ["", "\n", f"{TOKEN} {TOKEN}\n", "tøken"])
def test_a_token_file_without_one_token_is_refused(tmp_path: Path, text: str) -> None:
    with pytest.raises(StartupError, match="does not hold one token"):
        startup.read_token_file(token_file(tmp_path, text))


def test_a_missing_or_unreadable_token_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(StartupError, match=r"cannot read the token file .*No such file"):
        startup.read_token_file(tmp_path / "absent")
    with pytest.raises(StartupError, match=r"cannot read the token file|not a regular file"):
        startup.read_token_file(tmp_path)


# -- the commands --------------------------------------------------------------------------------
def run(*args: str, env: dict[str, str] | None = None) -> Any:
    result = CliRunner().invoke(cli.app, list(args), env=env)
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def test_submit_refuses_a_token_file_others_may_read(tmp_path: Path) -> None:
    f = token_file(tmp_path, mode=0o644)
    r = run("slurm", "submit", "--token-file", str(f), "--allow", "x.*", "--dry-run")
    assert r.exit_code == 2
    assert "tuneyard slurm submit: --token-file / TUNEYARD_TOKEN_FILE:" in r.output
    assert "mode 0644" in r.output


def test_submit_without_sbatch_says_so_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    f = token_file(tmp_path)
    r = run(
        "slurm", "submit", "--token-file", str(f), "--allow", "x.*", env={"PATH": str(tmp_path)}
    )
    assert r.exit_code == 2
    assert "sbatch is not on the PATH" in r.output and "--dry-run" in r.output
    assert not list(tmp_path.glob("*.sbatch"))


def test_a_dry_run_prints_the_script_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    f = token_file(tmp_path)
    args = ["slurm", "submit", "--token-file", str(f), "--api", "http://h:1", "--dry-run"]
    r = run(*args, "--allow", "x.*", "--tasks", "4", "--gpus-per-task", "1", "--time", "2:00:00")
    assert r.exit_code == 0, r.output
    assert "#SBATCH --array=0-3" in r.output and "#SBATCH --gres=gpu:1" in r.output
    assert f"--token-file {f}" in r.output and TOKEN not in r.output
    assert os.listdir(tmp_path) == ["token"]
    r = run(*args, "--allow", "x.*", "--time", "1")
    assert r.exit_code == 2 and "--time: 1 is not longer than" in r.output


def test_the_worker_reads_its_token_from_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tuneyard.cli.startup
    from tuneyard.protocol import CallerOut

    seen: list[str | None] = []
    monkeypatch.setattr(
        pool, "run_pool", lambda *a, **kw: seen.append(os.environ.get("TUNEYARD_TOKEN")) or 0
    )
    given: list[str] = []

    def check_api(url: str, token: str, **kw: Any) -> CallerOut:
        given.append(token)
        return CallerOut(name="t", scope="worker", queues=None, auth=True)

    monkeypatch.setattr(tuneyard.cli.startup, "check_api", check_api)
    monkeypatch.setattr(tuneyard.cli.startup, "check_redis", lambda url, **kw: url)
    monkeypatch.setenv("TUNEYARD_REDIS_URL", "redis://127.0.0.1:1/5")
    monkeypatch.setenv("TUNEYARD_TOKEN", "")
    monkeypatch.delenv("TUNEYARD_TOKEN")
    f = token_file(tmp_path)
    worker = ["worker", "--api", "http://h:1", "--allow", "x.*", "--token-file", str(f)]
    r = run(*worker, "--data-dir", str(tmp_path / "d"))
    assert r.exit_code == 0, r.output
    assert given == [TOKEN] and seen == [TOKEN]
    monkeypatch.delenv("TUNEYARD_TOKEN")  # the command put it there, for its slots
    # A token in the environment as well: which one is meant is not guessed.
    r = run(*worker, env={"TUNEYARD_TOKEN": "ty_other"})
    assert r.exit_code == 2 and "give the token once" in r.output
    f.chmod(0o644)
    r = run(*worker)
    assert r.exit_code == 2 and "mode 0644" in r.output and seen == [TOKEN]
    assert stat.S_IMODE(f.stat().st_mode) == 0o644

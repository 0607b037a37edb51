"""The worker runtime's fault handling against a fake service: captured output, timeouts,
a stopping worker handing its trial back, checkpoints over HTTP, GPU discovery."""

from __future__ import annotations

import hashlib
import os
import stat
import threading
import time
from pathlib import Path

import pytest

from tests.fakes import FakeService, ManualClock, job, run
from tuneyard.worker import Trial
from tuneyard.worker.checkpoints import (
    FilesystemCheckpointStore,
    HttpCheckpointStore,
    RoutingCheckpointStore,
    parse_api_location,
)
from tuneyard.worker.command import CommandError, build_argv
from tuneyard.worker.output import LogShipper
from tuneyard.worker.pool import detect_gpus, plan_slots
from tuneyard.worker.runner import Control, JobOptions, run_assignment


def test_what_the_objective_prints_goes_to_the_trial_log(tmp_path: Path) -> None:
    def objective(trial: Trial) -> float:
        print("loading data")
        import sys

        print("warning: slow disk", file=sys.stderr)
        return 0.5

    svc = FakeService()
    assert run(svc, job(), objective, tmp_path, "w") == "complete"
    assert svc.output() == "loading data\nwarning: slow disk\n"
    # Shipped before the trial is completed, so its tail is there when it ends.
    assert svc.kinds()[-1] == "complete"


class FlakyLogApi:
    def __init__(self, fail_first: int) -> None:
        self.fail_first = fail_first
        self.chunks: list[tuple[int, str]] = []

    def append_log(self, trial_id: int, attempt: int, offset: int, text: str) -> int:
        if self.fail_first > 0:
            self.fail_first -= 1
            raise OSError("API unreachable")
        self.chunks.append((offset, text))
        return offset + len(text)


def test_output_is_kept_while_the_api_is_down_and_sent_with_its_offset() -> None:
    api = FlakyLogApi(fail_first=1)
    shipper = LogShipper(api, trial_id=1, attempt=1)
    shipper.write("one\n")
    assert shipper.flush() is False
    shipper.write("two\n")
    assert shipper.flush() is True
    shipper.write("three\n")
    assert shipper.flush() is True
    assert api.chunks == [(0, "one\ntwo\n"), (8, "three\n")]
    assert shipper.tail() == "one\ntwo\nthree"


def hang(seconds: float = 120) -> None:
    """An objective stuck until its timeout interrupts it. It sleeps in short slices: a signal
    that lands just before a sleep begins is handled only when that sleep ends."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        time.sleep(0.01)


def test_an_objective_past_its_timeout_is_interrupted_and_failed(tmp_path: Path) -> None:
    clock = ManualClock()

    def objective(trial: Trial) -> None:
        trial.report(1, 0.5)
        print("about to hang")
        clock.advance(1.5)  # past the timeout: the watchdog interrupts the hang below
        hang()

    svc = FakeService()
    store = FilesystemCheckpointStore(tmp_path / "shared")
    started = time.monotonic()
    opts = JobOptions(timeout=1, control=Control(clock))
    out = run_assignment(svc, 1, job(to=3), objective, store, tmp_path / "w", opts)
    assert out == "fail" and time.monotonic() - started < 60
    ((_tid, error),) = svc.args("fail")
    assert error.startswith("timed out: the objective ran past execution.timeout (1 s)")
    assert "about to hang" not in error, "the error is the error, not the output"
    assert svc.outputs == ["about to hang"], "the output goes with it, apart"


def test_an_objective_that_catches_exception_still_times_out(tmp_path: Path) -> None:
    clock = ManualClock()

    def objective(trial: Trial) -> None:
        try:
            clock.advance(1)  # past the timeout
            hang()
        except Exception as exc:  # an objective that swallows its errors
            print(f"ignored {exc!r}")

    svc = FakeService()
    store = FilesystemCheckpointStore(tmp_path / "shared")
    opts = JobOptions(timeout=0.5, control=Control(clock))
    assert run_assignment(svc, 1, job(), objective, store, tmp_path / "w", opts) == "fail"


def test_a_stopping_worker_hands_its_trial_back_at_the_next_report(tmp_path: Path) -> None:
    control = Control()
    reached, stopped = threading.Event(), threading.Event()

    def worker_gets_sigterm() -> None:
        if reached.wait(10):
            control.stop()
            stopped.set()

    stopper = threading.Thread(target=worker_gets_sigterm)
    stopper.start()

    def objective(trial: Trial) -> None:
        state = {"epochs": 0}
        for epoch in trial.epochs():
            state["epochs"] = epoch
            trial.report(epoch, 1.0 / epoch)
            if epoch == 2:
                reached.set()
                assert stopped.wait(10)  # the worker's SIGTERM arrives during epoch 3
        trial.save(state)

    svc = FakeService()
    store = FilesystemCheckpointStore(tmp_path / "shared")
    opts = JobOptions(control=control)
    out = run_assignment(svc, 1, job(to=9), objective, store, tmp_path / "w", opts)
    stopper.join()
    assert out == "release"
    steps = [a[1] for a in svc.args("report")]
    assert steps == [1, 2, 3], "the report after the signal is sent, then the job ends"
    ((_tid, reason, location, step),) = svc.args("release")
    assert reason == "the worker is stopping" and step == 3
    import pickle

    assert pickle.loads((Path(location) / "state.pkl").read_bytes()) == {"epochs": 3}
    assert svc.args("pause") == [] and svc.args("fail") == []


def test_a_stuck_job_is_handed_back_without_a_checkpoint_after_the_grace(
    tmp_path: Path,
) -> None:
    clock = ManualClock()
    control = Control(clock)
    svc = FakeService()

    def objective(trial: Trial) -> float:
        control.stop()
        clock.advance(2.5)  # no report within the grace period
        svc.arrived("release").wait(30)  # the watchdog hands the trial back meanwhile
        return 0.5

    store = FilesystemCheckpointStore(tmp_path / "shared")
    opts = JobOptions(control=control, grace=0.5)
    run_assignment(svc, 1, job(), objective, store, tmp_path / "w", opts)
    (first, *_rest) = svc.args("release")
    assert "did not reach a report within 0.5 s" in first[1] and first[2] is None


# -- command lines -------------------------------------------------------------------------------
def test_command_placeholders_are_filled_and_unknown_ones_named() -> None:
    argv = build_argv(
        ["python", "train.py", "--lr={lr}", "--epochs={resource_to}", "--out={checkpoint_dir}"],
        {"lr": 0.01, "resource_to": 9.0, "checkpoint_dir": "/tmp/c"},
    )
    assert argv == ["python", "train.py", "--lr=0.01", "--epochs=9", "--out=/tmp/c"]
    with pytest.raises(CommandError, match=r"\{momentum\}, which is none of: lr"):
        build_argv(["--m={momentum}"], {"lr": 0.1})


# -- checkpoints over HTTP -----------------------------------------------------------------------
class FakeCheckpointApi:
    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}
        self.downloads = 0
        self.corrupt = False

    def upload_checkpoint(self, trial_id: int, archive: Path, *, attempt: int) -> str:
        data = archive.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        self.blobs[digest] = data
        return f"api:{trial_id}/{digest}"

    def download_checkpoint(self, trial_id: int, digest: str, dest: Path) -> None:
        self.downloads += 1
        data = self.blobs[digest]
        dest.write_bytes(data[:-1] + b"x" if self.corrupt else data)


def test_http_checkpoints_travel_between_machines_and_are_verified(tmp_path: Path) -> None:
    api = FakeCheckpointApi()
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "model.pt").write_bytes(b"weights")
    (src / "sub" / "opt.pt").write_bytes(b"moments")
    here = HttpCheckpointStore(api, tmp_path / "cache-a")
    location = here.save(1, 7, src)
    assert parse_api_location(location)[0] == 7

    # The same worker restores from its cache, without a download.
    here.restore(location, tmp_path / "again")
    assert api.downloads == 0 and (tmp_path / "again" / "sub" / "opt.pt").read_bytes() == b"moments"

    # Another machine downloads it.
    there = HttpCheckpointStore(api, tmp_path / "cache-b")
    there.restore(location, tmp_path / "dest")
    assert api.downloads == 1 and (tmp_path / "dest" / "model.pt").read_bytes() == b"weights"

    api.corrupt = True
    with pytest.raises(OSError, match="arrived damaged"):
        HttpCheckpointStore(api, tmp_path / "cache-c").restore(location, tmp_path / "bad")


def test_a_routing_store_restores_either_kind_of_location(tmp_path: Path) -> None:
    api = FakeCheckpointApi()
    http = HttpCheckpointStore(api, tmp_path / "cache")
    fs = FilesystemCheckpointStore(tmp_path / "shared")
    src = tmp_path / "src"
    src.mkdir()
    (src / "state.pkl").write_bytes(b"s")
    on_disk = fs.save(1, 2, src)
    over_http = http.save(1, 3, src)
    store = RoutingCheckpointStore(fs, http)
    for loc, dest in ((on_disk, "a"), (over_http, "b")):
        store.restore(loc, tmp_path / dest)
        assert (tmp_path / dest / "state.pkl").read_bytes() == b"s"


# -- GPUs ----------------------------------------------------------------------------------------
def test_gpus_come_from_nvidia_smi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    smi = tmp_path / "nvidia-smi"
    smi.write_text(
        "#!/bin/sh\n"
        "echo '0, NVIDIA H100 80GB HBM3, 81559, GPU-aaa'\n"
        "echo '1, NVIDIA H100 80GB HBM3, 81559, GPU-bbb'\n"
    )
    smi.chmod(smi.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    gpus = detect_gpus()
    assert [(g.index, g.name, g.memory_mib) for g in gpus] == [
        ("0", "NVIDIA H100 80GB HBM3", 81559),
        ("1", "NVIDIA H100 80GB HBM3", 81559),
    ]
    assert [g.index for g in plan_slots("auto", None) if g] == ["0", "1"]
    picked = plan_slots("1", None)
    assert picked[0] is not None and picked[0].memory_mib == 81559
    assert plan_slots("none", 3) == [None, None, None]


def test_no_gpu_means_cpu_slots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    assert detect_gpus() == []
    assert plan_slots("auto", 2) == [None, None]
    with pytest.raises(ValueError, match="names no GPU"):
        plan_slots(",", None)

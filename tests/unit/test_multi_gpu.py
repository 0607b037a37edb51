"""Multi-GPU trials, piece by piece: ``execution.gpus`` and ``execution.launcher`` in the
definition, a worker's GPUs grouped into slots, a slot that leaves a study needing more GPUs to
others, torchrun's command line, and the ranks of a trial: rank 0 reports and saves, the
others take its decisions over a real gloo process group."""

from __future__ import annotations

import multiprocessing
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from tuneyard.protocol import ReportOut
from tuneyard.spec import ExecutionSpec, StudySpec
from tuneyard.worker.command import torchrun_argv
from tuneyard.worker.jobs import cannot_serve
from tuneyard.worker.pool import Gpu, group_slots, plan_slots, slot_gpus
from tuneyard.worker.trial import Trial, trial_from_env

SPACE = {"x": {"type": "float", "low": 0, "high": 1}}


def study(**execution: Any) -> StudySpec:
    return StudySpec.model_validate({"name": "s", "space": SPACE, "execution": execution})


# -- the definition ------------------------------------------------------------------------------
def test_gpus_default_to_one_and_a_command_with_several_runs_under_torchrun() -> None:
    plain = study(command=["python", "train.py"]).execution
    assert plain is not None and plain.gpus == 1 and plain.ranks is None
    assert ExecutionSpec(command=["python", "t.py"], gpus=2).ranks == 2
    assert ExecutionSpec(command=["python", "t.py"], gpus=2, launcher="none").ranks is None
    assert ExecutionSpec(command=["python", "t.py"], launcher="torchrun").ranks == 1
    # An entrypoint runs in the worker's process: it gets the GPUs, not ranks.
    assert ExecutionSpec(entrypoint="m.train:run", gpus=4).ranks is None


@pytest.mark.parametrize(
    ("execution", "field", "text"),
    [
        ({"command": ["python"], "gpus": 0}, "execution.gpus", "greater than or equal to 1"),
        ({"command": ["python"], "gpus": 65}, "execution.gpus", "less than or equal to 64"),
        ({"command": ["python"], "gpus": "two"}, "execution.gpus", "valid integer"),
        ({"command": ["python"], "launcher": "mpirun"}, "execution.launcher", "'torchrun'"),
        ({"entrypoint": "m.train:run", "launcher": "torchrun"}, "execution", "launcher: torchrun"),
    ],
)
def test_bad_gpus_or_launcher_is_named(execution: dict[str, Any], field: str, text: str) -> None:
    with pytest.raises(ValidationError) as info:
        study(**execution)
    message = str(info.value)
    assert field in message and text in message, message


# -- slots ---------------------------------------------------------------------------------------
def test_named_gpus_are_kept_without_nvidia_smi_and_grouped_in_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no nvidia-smi on it
    plan = plan_slots("0,1,2,3", None)
    assert [g.index for g in plan if g] == ["0", "1", "2", "3"]
    slots = group_slots(plan, 2)
    assert [[g.index for g in slot_gpus(s)] for s in slots] == [["0", "1"], ["2", "3"]]
    assert group_slots(plan, 1) == plan, "one GPU per slot: as before"
    assert [[g.index for g in slot_gpus(s)] for s in group_slots(plan, 4)] == [["0", "1", "2", "3"]]
    assert slot_gpus(None) == () and slot_gpus(Gpu("3")) == (Gpu("3"),)


@pytest.mark.parametrize(
    ("gpus", "per_slot", "text"),
    [
        ("0,1,2", 2, "the 3 GPUs (0,1,2) do not make whole slots of 2; name 2 of them"),
        ("none", 2, "no GPUs to make slots of 2 from: give --gpus"),
        ("0,1", 0, "at least 1"),
    ],
)
def test_slots_that_cannot_be_whole_are_refused(
    gpus: str, per_slot: int, text: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ValueError) as info:
        group_slots(plan_slots(gpus, 2), per_slot)
    assert text in str(info.value)


def test_a_worker_whose_gpus_make_no_whole_slots_does_not_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tuneyard.worker.pool
    from tuneyard import cli

    started: list[Any] = []
    monkeypatch.setattr(tuneyard.worker.pool, "run_pool", lambda *a, **kw: started.append(a))
    monkeypatch.setenv("PATH", str(tmp_path))
    args = ["worker", "--api", "http://127.0.0.1:1", "--redis", "redis://127.0.0.1:1/0"]
    args += ["--token", "ty_x", "--allow", "examples.*", "--gpus", "0,1,2"]
    result = CliRunner().invoke(cli.app, [*args, "--gpus-per-slot", "2"])
    assert result.exit_code == 2 and started == []
    assert "--gpus-per-slot: the 3 GPUs (0,1,2) do not make whole slots of 2" in result.output


def test_a_slot_runs_only_studies_whose_trials_fit_on_its_gpus() -> None:
    two = [{"index": "0"}, {"index": "1"}]
    needs = ExecutionSpec(command=[sys.executable, "t.py"], gpus=2)
    assert cannot_serve(needs, two) is None
    assert cannot_serve(needs, [*two, {"index": "2"}, {"index": "3"}]) is None
    assert cannot_serve(needs, two[:1]) == (
        "its trials need 2 GPUs each (execution.gpus) and this worker slot has 1 GPU "
        "(start a worker with --gpus-per-slot 2)"
    )
    assert "this worker slot has no GPU" in (cannot_serve(needs, []) or "")
    # One GPU per trial runs anywhere, a CPU slot included, as before.
    assert cannot_serve(ExecutionSpec(entrypoint="m.t:run"), []) is None
    assert cannot_serve(None, []) is None


def test_torchrun_starts_the_command_as_written_once_per_gpu() -> None:
    argv = torchrun_argv(2, ["python", "train.py", "--lr=0.1"])
    assert argv == [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node=2",
        "--no-python",
        "python",
        "train.py",
        "--lr=0.1",
    ]


# -- ranks ---------------------------------------------------------------------------------------
class Service:
    """Answers each report with the next of ``answers`` (decision, resource_to), and notes
    what it was sent."""

    def __init__(self, answers: list[tuple[str, float | None]]) -> None:
        self.answers = list(answers)
        self.sent: list[float] = []

    def report(
        self, trial_id: int, step: float, value: float | None = None, *, attempt: int, **m: Any
    ) -> ReportOut:
        self.sent.append(step)
        decision, resource_to = self.answers.pop(0)
        return ReportOut(
            step=step,
            value=value,
            metrics={},
            decision=decision,  # type: ignore[arg-type]
            reason=f"{decision} at {step:g}",
            resource_to=resource_to,
            created_at=datetime.now(UTC),
        )


def make(tmp: Path, service: Service, rank: int, world: int) -> Trial:
    return Trial(service, 1, 7, 0, {}, 0, 3, tmp / f"rank-{rank}", rank=rank, world_size=world)


def test_rank_zero_alone_saves(tmp_path: Path) -> None:
    zero, one = make(tmp_path, Service([]), 0, 2), make(tmp_path, Service([]), 1, 2)
    assert zero.save({"w": 1}).exists()
    path = one.save({"w": 1})
    assert not path.exists(), "rank 1 writes no checkpoint"
    assert not one.save_with(lambda p: p.write_text("x"), "model.txt").exists()


def test_the_stop_file_pauses_rank_zero_at_its_next_report(tmp_path: Path) -> None:
    """A stopping worker asks torchrun's ranks to pause through a file, not a signal: the
    report after the file appears is a pause, and the trial is handed back."""
    service = Service([("continue", None), ("continue", None)])
    zero = make(tmp_path, service, 0, 1)
    zero.stop_file = tmp_path / "stop"
    assert zero.report(1, 0.5) == "continue"
    zero.stop_file.touch()
    assert zero.report(2, 0.4) == "pause"
    assert zero.handed_back and zero.reason == "the worker is stopping"
    assert service.sent == [1, 2], "the report itself still reaches the service"


def test_a_rank_without_a_process_group_cannot_learn_the_decision(tmp_path: Path) -> None:
    service = Service([("continue", None)])
    one = make(tmp_path, service, 1, 2)
    with pytest.raises(RuntimeError, match="init_process_group"):
        one.report(1, 0.5)
    assert service.sent == [], "rank 1 sends nothing"
    # Rank 0 without a group still reports (its own decision).
    zero = make(tmp_path, service, 0, 2)
    assert zero.report(1, 0.5) == "continue" and service.sent == [1]
    with pytest.raises(ValueError, match="rank 2 of world_size 2"):
        make(tmp_path, service, 2, 2)


def test_trial_from_env_reads_torchruns_rank(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for k, v in {
        "TUNEYARD_API_URL": "http://127.0.0.1:1",
        "TUNEYARD_STUDY_ID": "1",
        "TUNEYARD_TRIAL_ID": "2",
        "TUNEYARD_RESOURCE_TO": "3",
        "TUNEYARD_CHECKPOINT_DIR": str(tmp_path),
    }.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    alone = trial_from_env()
    assert (alone.rank, alone.world_size) == (0, 1)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    second = trial_from_env()
    assert (second.rank, second.world_size) == (1, 2)
    monkeypatch.setenv("RANK", "one")
    with pytest.raises(RuntimeError, match="RANK must be a whole number, got 'one'"):
        trial_from_env()


def _rank_main(rank: int, store: str, ckpt: str, out: Any) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    # Only rank 0's service is asked; it promotes the trial on the spot, then stops it.
    service = Service([("continue", None), ("continue", 5.0), ("stop", None)] if rank == 0 else [])
    trial = Trial(service, 1, 7, 0, {}, 0, 3, Path(ckpt) / str(rank), rank=rank, world_size=2)
    decisions = [(e, trial.report(e, 1.0 / e), trial.resource_to) for e in trial.epochs()]
    out.put((rank, decisions, trial.reason, trial.last_step, service.sent))
    dist.destroy_process_group()


def test_every_rank_follows_rank_zeros_decisions(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    args = (str(tmp_path / "store"), str(tmp_path), out)
    procs = [ctx.Process(target=_rank_main, args=(r, *args)) for r in (0, 1)]
    for p in procs:
        p.start()
    got = sorted(out.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    (_, zero, reason, last, sent0), (_, one, reason1, last1, sent1) = got
    expected = [(1, "continue", 3.0), (2, "continue", 5.0), (3, "stop", 5.0)]
    assert zero == expected and one == expected, "the promotion and the stop reach rank 1"
    assert reason == reason1 == "stop at 3" and last == last1 == 3
    assert sent0 == [1, 2, 3] and sent1 == []

"""A worker's allowlist: entrypoint patterns, executables, and nothing by default."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from tuneyard.spec import ExecutionSpec
from tuneyard.worker.allow import ENV_VAR, Allowlist, NotAllowed


def entry(e: str) -> ExecutionSpec:
    return ExecutionSpec(entrypoint=e)


def command(*argv: str) -> ExecutionSpec:
    return ExecutionSpec(command=list(argv))


def test_nothing_is_allowed_by_default() -> None:
    empty = Allowlist.from_env({})
    with pytest.raises(NotAllowed, match="none given"):
        empty.check(entry("examples.mlp_digits:train"))
    with pytest.raises(NotAllowed, match="--allow-command"):
        empty.check(command("python3", "train.py"))
    assert not empty


@pytest.mark.parametrize(
    ("patterns", "entrypoint", "ok"),
    [
        (["examples.*"], "examples.mlp_digits:train", True),
        (["examples.*"], "examplesx.mod:train", False),
        (["examples.*"], "os:system", False),
        (["myproj.train:*"], "myproj.train:fit", True),
        (["myproj.train:*"], "myproj.train_evil:fit", False),
        (["myproj.train:fit"], "myproj.train:fit", True),
        (["myproj.train:fit"], "myproj.train:fit2", False),
        (["*"], "anything.at:all", True),
    ],
)
def test_entrypoint_patterns(patterns: list[str], entrypoint: str, ok: bool) -> None:
    allow = Allowlist.of(patterns)
    if ok:
        allow.check(entry(entrypoint))
    else:
        with pytest.raises(NotAllowed, match=entrypoint.replace(".", r"\.")):
            allow.check(entry(entrypoint))


def test_entrypoint_patterns_do_not_allow_commands() -> None:
    with pytest.raises(NotAllowed, match="executable 'python3'"):
        Allowlist.of(["*"]).check(command("python3", "-c", "print(1)"))


def test_executables_by_name_or_by_path(tmp_path: Path) -> None:
    tool = tmp_path / "bin" / "train"
    tool.parent.mkdir()
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    path = str(tool.parent)
    by_name = Allowlist.of([], ["train"])
    by_name.check(command("train", "--lr=1"), path=path)
    # A name allows that name on the PATH, never a file of that name elsewhere.
    with pytest.raises(NotAllowed):
        by_name.check(command(str(tool)), path=path)
    with pytest.raises(NotAllowed):
        by_name.check(command("./train"), path=path)
    by_path = Allowlist.of([], [f"{tmp_path}/bin/*"])
    by_path.check(command(str(tool)))
    by_path.check(command("train"), path=path)  # found on the PATH, under the pattern
    with pytest.raises(NotAllowed):
        by_path.check(command("/bin/sh", "-c", "true"))
    Allowlist.of([], [sys.executable]).check(command(sys.executable, "x.py"))
    Allowlist.of([], ["*"]).check(command("/bin/sh", "-c", "true"))


def test_a_placeholder_cannot_choose_the_executable() -> None:
    with pytest.raises(NotAllowed, match="placeholder"):
        Allowlist.of([], ["*"]).check(command("{tool}", "--x"))


def test_the_allowlist_travels_to_slot_processes_by_environment() -> None:
    allow = Allowlist.of(["examples.*", " ", "examples.*"], [sys.executable])
    assert allow.entrypoints == ("examples.*",)
    env = {**os.environ, ENV_VAR: allow.to_env()}
    assert Allowlist.from_env(env) == allow
    assert Allowlist.from_env({ENV_VAR: "not json"}) == Allowlist()
    assert Allowlist.from_env({ENV_VAR: '{"entrypoints": "x"}'}) == Allowlist()

"""``tuneyard study create --code DIR``: pack the directory, upload it, name it in the study."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.markup import escape

from tuneyard.cli.common import _call, err

if TYPE_CHECKING:
    from tuneyard.spec import StudySpec


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} bytes"
    return f"{n / 1024:.1f} KiB" if n < 1024**2 else f"{n / 1024**2:.1f} MiB"


def ship_code(spec: StudySpec, directory: Path, api: str | None) -> StudySpec:
    """``spec`` with ``execution.code`` naming the archive of ``directory``, uploaded."""
    from tuneyard.code_archive import CodeTooLarge, pack

    execution = spec.execution
    if execution is None or not (execution.entrypoint or execution.command):
        err.print(
            "[red]--code needs the study to name what to run from it: "
            "execution.entrypoint or execution.command[/red]"
        )
        raise typer.Exit(2)
    with tempfile.TemporaryDirectory(prefix="tuneyard-code-") as tmp:
        try:
            packed = pack(directory, Path(tmp) / "code.tar.gz")
        except (CodeTooLarge, OSError) as exc:
            err.print(f"[red]--code {escape(str(directory))}: {escape(str(exc))}[/red]")
            raise typer.Exit(2) from exc
        if packed.skipped:
            shown = ", ".join(packed.skipped[:5]) + (" ..." if len(packed.skipped) > 5 else "")
            err.print(f"left out {len(packed.skipped)} links or special files: {escape(shown)}")
        out = _call(api, lambda c: c.upload_code(packed.path, packed.digest))
    how = "uploaded" if out.created else "already on the server"
    err.print(
        f"code: {packed.files} files of {escape(str(directory))}, {_size(packed.size)}, "
        f"{out.code[:19]}… ({how})"
    )
    return spec.model_copy(update={"execution": execution.model_copy(update={"code": out.code})})

"""``tuneyard trial download``: a completed trial's model, its final checkpoint."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from tuneyard.checkpoint_archive import BadArchive, extract_archive
from tuneyard.cli.common import ApiOpt, _call, err, trial_app

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz")


@trial_app.command("download")
def trial_download(
    trial_id: int,
    api: ApiOpt = None,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="A directory to unpack the model into (default: ./trial-ID-model), or a "
            "file ending in .tar.gz or .tgz to keep the archive as it is.",
        ),
    ] = None,
) -> None:
    """Download a completed trial's model: what its objective last saved (trial.save), e.g.
    ``trial-ID-model/state.pkl``. Only the best ``limits.keep_models`` trials of a study
    keep theirs."""
    dest = output or Path(f"trial-{trial_id}-model")
    keep_archive = dest.name.endswith(ARCHIVE_SUFFIXES)
    if not keep_archive and dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        err.print(f"[red]{escape(str(dest))} exists and is not an empty directory[/red]")
        raise typer.Exit(2)
    dest.absolute().parent.mkdir(parents=True, exist_ok=True)
    part = dest.absolute().with_name(f".{dest.name}.{uuid.uuid4().hex[:8]}.part")
    try:
        _call(api, lambda c: c.download_model(trial_id, part))
        if keep_archive:
            part.replace(dest)
        else:
            # Checked member by member before anything is written: a model is untrusted.
            extract_archive(part, dest)
    except BadArchive as exc:
        err.print(f"[red]the model of trial {trial_id} is refused: {escape(str(exc))}[/red]")
        raise typer.Exit(1) from exc
    finally:
        part.unlink(missing_ok=True)
    if keep_archive:
        err.print(f"trial {trial_id}: model written to {escape(str(dest))}")
        return
    files = sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file())
    shown = ", ".join(files[:10]) + (f" and {len(files) - 10} more" if len(files) > 10 else "")
    err.print(f"trial {trial_id}: model unpacked into {escape(str(dest))}: {escape(shown)}")


__all__ = ["trial_download"]

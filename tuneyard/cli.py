"""The ``tuneyard`` command line: run the service, manage studies, look at trials."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from pydantic import BaseModel, ValidationError
from rich.console import Console
from rich.table import Table

from tuneyard.client import ApiError, Client, Unreachable
from tuneyard.settings import Settings

app = typer.Typer(help="tuneyard: distributed hyperparameter tuning.", no_args_is_help=True)
study_app = typer.Typer(help="Create and manage studies.", no_args_is_help=True)
trials_app = typer.Typer(help="List trials.", no_args_is_help=True)
trial_app = typer.Typer(help="Look at one trial.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
app.add_typer(study_app, name="study")
app.add_typer(trials_app, name="trials")
app.add_typer(trial_app, name="trial")
app.add_typer(db_app, name="db")

console = Console()
err = Console(stderr=True)

ApiOpt = Annotated[
    str | None,
    typer.Option("--api", envvar="TUNEYARD_API_URL", help="API base URL."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable JSON output.")]


def make_client(api: str | None) -> Client:
    """The client commands use; tests replace it."""
    return Client(api or Settings().api_url)


def _call(api: str | None, fn: Any) -> Any:
    client = make_client(api)
    try:
        return fn(client)
    except Unreachable as exc:
        err.print(f"[red]cannot reach the API at {client.base_url}[/red]: {exc.detail}")
        err.print("is the server running? start it with `tuneyard server`")
        raise typer.Exit(1) from exc
    except ApiError as exc:
        err.print(f"[red]{exc.status} {exc.title}[/red]: {exc.detail}")
        raise typer.Exit(1) from exc
    finally:
        client.close()


def _dump(obj: Any) -> None:
    data: Any
    if isinstance(obj, BaseModel):
        data = obj.model_dump(mode="json")
    elif isinstance(obj, list):
        data = [o.model_dump(mode="json") if isinstance(o, BaseModel) else o for o in obj]
    else:
        data = obj
    sys.stdout.write(json.dumps(data, indent=2) + "\n")


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _age(t: datetime) -> str:
    secs = (datetime.now(UTC) - t).total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if secs >= size:
            return f"{int(secs // size)}{unit}"
    return f"{int(secs)}s"


def _params(p: dict[str, Any]) -> str:
    return " ".join(f"{k}={_fmt(v)}" for k, v in p.items())


# -- the service -------------------------------------------------------------------------------
@app.command()
def server(
    host: Annotated[str | None, typer.Option(help="Address to bind.")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on.")] = None,
) -> None:
    """Run the API server (migrating the database first)."""
    import uvicorn

    from tuneyard.api.app import create_app
    from tuneyard.store.migrate import upgrade

    settings = Settings()
    upgrade(settings.resolved_database_url())
    uvicorn.run(
        create_app(settings),
        host=host or settings.host,
        port=port if port is not None else settings.port,
        log_level="warning",
    )


@db_app.command("upgrade")
def db_upgrade(revision: str = "head") -> None:
    """Apply the migrations to TUNEYARD_DATABASE_URL (the embedded SQLite file by default)."""
    from tuneyard.store.migrate import upgrade

    url = Settings().resolved_database_url()
    upgrade(url, revision)
    console.print(f"database at {url.split('@')[-1]} is at revision {revision}")


@app.command()
def scheduler(
    api: ApiOpt = None,
    redis_url: Annotated[
        str | None, typer.Option("--redis", envvar="TUNEYARD_REDIS_URL", help="Redis URL.")
    ] = None,
    interval: Annotated[float, typer.Option(help="Seconds between passes.")] = 0.5,
) -> None:
    """The dispatcher: keep each running study's queue filled with slot jobs."""
    import logging

    from redis import Redis

    from tuneyard.service.context import Toolkit
    from tuneyard.service.dispatch import Dispatcher
    from tuneyard.store.db import make_engine, make_sessionmaker

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    settings = Settings()
    engine = make_engine(settings.resolved_database_url(), pool_size=2, max_overflow=2)
    kit = Toolkit(make_sessionmaker(engine), settings)
    redis = Redis.from_url(redis_url or settings.redis_url)
    Dispatcher(kit, redis, api or settings.api_url).run(interval)


@app.command()
def worker(
    api: ApiOpt = None,
    redis_url: Annotated[
        str | None, typer.Option("--redis", envvar="TUNEYARD_REDIS_URL", help="Redis URL.")
    ] = None,
    queue: Annotated[str, typer.Option(help="Queue to take jobs from.")] = "default",
    gpus: Annotated[str | None, typer.Option(help="GPU ids ('0,1,3'), 'auto' or 'none'.")] = None,
    slots: Annotated[int | None, typer.Option(help="CPU worker processes (no GPU).")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Work and checkpoint directory.")] = None,
    path: Annotated[
        list[str] | None, typer.Option(help="Extra import path for objectives (repeatable).")
    ] = None,
) -> None:
    """Attach this machine: one RQ worker process per GPU, or --slots CPU processes."""
    from tuneyard.worker.pool import plan_slots, run_pool

    settings = Settings()
    try:
        plan = plan_slots(gpus, slots)
    except ValueError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc
    where = ", ".join(f"GPU {g}" if g is not None else "CPU" for g in plan)
    err.print(f"tuneyard worker: {len(plan)} processes ({where}) on queue {queue!r}")
    code = run_pool(
        api or settings.api_url,
        redis_url or settings.redis_url,
        queue,
        plan,
        (data_dir or settings.data_dir).resolve(),
        path,
    )
    raise typer.Exit(code)


@app.command()
def up(
    data_dir: Annotated[Path | None, typer.Option(help="Where the stack keeps its files.")] = None,
    workers: Annotated[int, typer.Option(help="Local worker processes.")] = 2,
    port: Annotated[int, typer.Option(help="API port (0: any free port).")] = 0,
    gpus: Annotated[
        str | None, typer.Option(help="One worker per GPU: ids, 'auto' (instead of --workers).")
    ] = None,
) -> None:
    """Everything on this machine: API on SQLite, Redis, dispatcher, local workers."""
    from tuneyard.embedded import run_up

    raise typer.Exit(run_up(data_dir=data_dir, workers=workers, port=port, gpus=gpus))


@app.command()
def demo(
    data_dir: Annotated[Path | None, typer.Option(help="Where the demo keeps its files.")] = None,
    study: Annotated[Path | None, typer.Option(help="Study definition (YAML).")] = None,
    workers: Annotated[int, typer.Option(help="Local worker processes.")] = 2,
    port: Annotated[int, typer.Option(help="API port (0: any free port).")] = 0,
    max_trials: Annotated[int | None, typer.Option(help="Override limits.max_trials.")] = None,
    gpus: Annotated[
        str | None, typer.Option(help="One worker per GPU: ids, 'auto' (instead of --workers).")
    ] = None,
) -> None:
    """`tuneyard up` plus the example study (digits MLP, ASHA) run to the end."""
    from tuneyard.embedded import run_demo

    raise typer.Exit(
        run_demo(
            data_dir=data_dir,
            study_file=study,
            workers=workers,
            port=port,
            max_trials=max_trials,
            gpus=gpus,
        )
    )


# -- studies -------------------------------------------------------------------------------------
def load_spec_file(path: Path) -> dict[str, Any]:
    text = path.read_text()
    data = yaml.safe_load(text)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping at the top level")
    return data


@study_app.command("create")
def study_create(
    file: Annotated[Path, typer.Option("-f", "--file", exists=True, help="study.yaml or .json")],
    api: ApiOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a study from a YAML or JSON definition."""
    from tuneyard.spec import StudySpec

    try:
        spec = StudySpec.model_validate(load_spec_file(file))
    except (ValueError, yaml.YAMLError) as exc:
        err.print(f"[red]{file} is not a valid study definition[/red]")
        if isinstance(exc, ValidationError):
            for e in exc.errors():
                loc = ".".join(str(p) for p in e["loc"] if p not in ("float", "int", "categorical"))
                err.print(f"  {loc or 'study'}: {e['msg'].removeprefix('Value error, ')}")
        else:
            err.print(f"  {exc}")
        raise typer.Exit(2) from exc
    out = _call(api, lambda c: c.create_study(spec))
    if as_json:
        _dump(out)
    else:
        console.print(f"created study [bold]{out.id}[/bold] ({out.name})")


def _study_table(studies: list[Any]) -> Table:
    t = Table("id", "name", "state", "trials", "best", "age")
    for s in studies:
        counts = ", ".join(f"{n} {k}" for k, n in s.counts.items() if n)
        best = _fmt(s.best.value) if s.best else "-"
        limit = s.spec.limits.max_trials
        t.add_row(
            str(s.id),
            s.name,
            s.state,
            f"{s.trials_started}/{limit} ({counts or '-'})",
            best,
            _age(s.created_at),
        )
    return t


@study_app.command("ls")
def study_ls(api: ApiOpt = None, as_json: JsonOpt = False, limit: int = 50) -> None:
    """List studies, newest first."""
    page = _call(api, lambda c: c.list_studies(limit=limit))
    if as_json:
        _dump(page.items)
    else:
        console.print(_study_table(page.items))


@study_app.command("show")
def study_show(study_id: int, api: ApiOpt = None, as_json: JsonOpt = False) -> None:
    """One study: its definition, trial counts and best trial."""
    s = _call(api, lambda c: c.get_study(study_id))
    if as_json:
        _dump(s)
        return
    sp = s.spec
    console.print(f"[bold]study {s.id}: {s.name}[/bold]  state: {s.state}")
    console.print(
        f"  {sp.direction} {sp.metric}; sampler {sp.sampler.type}; "
        f"scheduler {sp.scheduler.type} (r={_fmt(sp.scheduler.min_resource)}, "
        f"R={_fmt(sp.scheduler.max_resource)}, eta={sp.scheduler.reduction_factor})"
    )
    console.print(
        f"  trials: {s.trials_started}/{sp.limits.max_trials} started; "
        + ", ".join(f"{n} {k}" for k, n in s.counts.items())
    )
    if s.best:
        console.print(
            f"  best: trial {s.best.number} {sp.metric}={_fmt(s.best.value)} "
            f"at {_fmt(s.best.resource)}  {_params(s.best.params)}"
        )


def _set_state(study_id: int, state: str, api: str | None, as_json: bool) -> None:
    s = _call(api, lambda c: c.set_study_state(study_id, state))
    if as_json:
        _dump(s)
    else:
        console.print(f"study {s.id} is {s.state}")


@study_app.command("pause")
def study_pause(study_id: int, api: ApiOpt = None, as_json: JsonOpt = False) -> None:
    """Pause: no new work is handed out until resumed."""
    _set_state(study_id, "paused", api, as_json)


@study_app.command("resume")
def study_resume(study_id: int, api: ApiOpt = None, as_json: JsonOpt = False) -> None:
    """Resume a paused study."""
    _set_state(study_id, "running", api, as_json)


@study_app.command("stop")
def study_stop(study_id: int, api: ApiOpt = None, as_json: JsonOpt = False) -> None:
    """Stop for good: paused trials end, running ones stop at their next report."""
    _set_state(study_id, "stopped", api, as_json)


@study_app.command("delete")
def study_delete(study_id: int, api: ApiOpt = None) -> None:
    """Delete a study and everything recorded about it."""
    _call(api, lambda c: c.delete_study(study_id))
    console.print(f"study {study_id} deleted")


# -- trials --------------------------------------------------------------------------------------
@trials_app.command("ls")
def trials_ls(
    study_id: int,
    api: ApiOpt = None,
    as_json: JsonOpt = False,
    state: Annotated[str | None, typer.Option(help="Only trials in this state.")] = None,
    order: Annotated[str, typer.Option(help="number, -number, value or -value.")] = "number",
    limit: int = 100,
) -> None:
    """A study's trials."""
    page = _call(api, lambda c: c.list_trials(study_id, state=state, order=order, limit=limit))
    if as_json:
        _dump(page.items)
        return
    t = Table("#", "state", "value", "resource", "rung", "params", "reason")
    for tr in page.items:
        t.add_row(
            str(tr.number),
            tr.state,
            _fmt(tr.value),
            _fmt(tr.resource),
            str(tr.rung),
            _params(tr.params),
            tr.reason or "",
        )
    console.print(t)


@trial_app.command("show")
def trial_show(trial_id: int, api: ApiOpt = None, as_json: JsonOpt = False) -> None:
    """One trial: params, reports, every decision with its reason, attempts."""
    tr = _call(api, lambda c: c.get_trial(trial_id))
    if as_json:
        _dump(tr)
        return
    console.print(f"[bold]trial {tr.id} (#{tr.number})[/bold] {tr.state}: {tr.reason or ''}")
    console.print(f"  params: {_params(tr.params)}")
    if tr.error:
        console.print(f"  [red]error[/red]: {tr.error.strip().splitlines()[-1]}")
    d = Table("when", "decision", "rung", "resource", "reason")
    for x in tr.decisions:
        d.add_row(
            x.created_at.strftime("%H:%M:%S"), x.kind, _fmt(x.rung), _fmt(x.resource), x.reason
        )
    console.print(d)
    r = Table("step", "value", "decision")
    for rep in tr.reports:
        r.add_row(_fmt(rep.step), _fmt(rep.value), rep.decision)
    console.print(r)


def main() -> None:
    app()


if __name__ == "__main__":
    main()

"""``tuneyard token``: API tokens, made and revoked through the API or, with ``--db``, straight
in the database (how the first admin token is made)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from enum import StrEnum
from typing import Annotated, Any, TypeVar

import typer
from rich.markup import escape
from rich.table import Table

from tuneyard.cli.common import ApiOpt, JsonOpt, _call, _dump, console, err, token_app
from tuneyard.settings import Settings

T = TypeVar("T")


def _token_service(settings: Settings, migrate: bool = True) -> Any:
    """Tokens straight in the database (``--db``): how the first admin token is made."""
    from tuneyard.service.context import Toolkit
    from tuneyard.service.tokens import TokenService
    from tuneyard.store.db import make_engine, make_sessionmaker
    from tuneyard.store.migrate import upgrade

    url = settings.resolved_database_url()
    if migrate:
        upgrade(url)
    engine = make_engine(url, pool_size=1, max_overflow=1)
    return TokenService(Toolkit(make_sessionmaker(engine), settings))


def _active_tokens(settings: Settings) -> int | None:
    """How many tokens can be used; None when that can't be told (the server will say)."""
    from sqlalchemy.exc import SQLAlchemyError

    try:
        return len(_token_service(settings, migrate=False).list())
    except SQLAlchemyError:
        return None


class TokenScope(StrEnum):
    admin = "admin"
    write = "write"
    worker = "worker"
    read = "read"


DbOpt = Annotated[
    bool,
    typer.Option(
        "--db",
        help="Work on TUNEYARD_DATABASE_URL directly instead of through the API (how the "
        "first admin token is made).",
    ),
]


def _token_row(row: Any, secret: str | None = None) -> Any:
    from tuneyard.protocol import NewTokenOut, TokenOut

    out = TokenOut.model_validate(row, from_attributes=True)
    return NewTokenOut(**out.model_dump(), token=secret) if secret is not None else out


def _direct(fn: Callable[[Any], T]) -> T:
    """Run ``fn`` with a token service on the database; its errors print and exit 1."""
    from tuneyard.errors import TuneyardError

    try:
        return fn(_token_service(Settings()))
    except TuneyardError as exc:
        err.print(f"[red]{escape(exc.detail)}[/red]")
        raise typer.Exit(1) from exc


@token_app.command("create")
def token_create(
    scope: Annotated[
        TokenScope,
        typer.Option(
            help="admin: everything, tokens too; write: create and change studies; worker: "
            "run trials (next, reports, checkpoints); read: look (dashboard, lists, /metrics)."
        ),
    ],
    name: Annotated[
        str | None, typer.Option(help="What or who it is for (default: the scope).")
    ] = None,
    queue: Annotated[
        list[str] | None,
        typer.Option(
            "--queue", help="Worker tokens: a queue it may serve (repeatable; default: any)."
        ),
    ] = None,
    expires_in_days: Annotated[
        float | None, typer.Option(min=0.001, help="Expire after this many days (default: never).")
    ] = None,
    db: DbOpt = False,
    api: ApiOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create an API token and print it, once: only its hash is stored.

    The token alone goes to standard output (TOKEN=$(tuneyard token create ...)); clients read
    it from TUNEYARD_TOKEN. Through the API this needs an admin token; --db needs the database."""
    from datetime import timedelta

    label = name or f"{scope.value} token"
    if db:
        days = timedelta(days=expires_in_days) if expires_in_days else None
        new = _direct(lambda svc: svc.create(label, scope.value, queue, days))
        out = _token_row(new.token, new.secret)
    else:
        out = _call(api, lambda c: c.create_token(label, scope.value, queue, expires_in_days))
    if as_json:
        _dump(out)
        return
    queues = f" on queues {', '.join(out.queues)}" if out.queues else ""
    expires = f", expires {out.expires_at:%Y-%m-%d %H:%M} UTC" if out.expires_at else ""
    err.print(
        f"token {out.id} ({escape(out.name)}): scope {out.scope}{escape(queues)}{expires}; "
        "shown once, store it now"
    )
    sys.stdout.write(out.token + "\n")


@token_app.command("list")
def token_list(
    all_: Annotated[bool, typer.Option("--all", help="Include revoked tokens.")] = False,
    db: DbOpt = False,
    api: ApiOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The tokens: id, name, scope, queues, first characters; never a secret."""
    if db:
        rows = [_token_row(t) for t in _direct(lambda svc: svc.list(all_))]
    else:
        rows = _call(api, lambda c: c.list_tokens(include_revoked=all_))
    if as_json:
        _dump(rows)
        return
    t = Table("id", "name", "scope", "queues", "starts with", "created", "expires", "revoked")
    for r in rows:
        t.add_row(
            str(r.id),
            escape(r.name),
            r.scope,
            escape(", ".join(r.queues)) if r.queues else "any",
            escape(r.hint) + "…",
            r.created_at.strftime("%Y-%m-%d"),
            r.expires_at.strftime("%Y-%m-%d") if r.expires_at else "-",
            r.revoked_at.strftime("%Y-%m-%d") if r.revoked_at else "-",
        )
    console.print(t)


@token_app.command("revoke")
def token_revoke(token_id: int, db: DbOpt = False, api: ApiOpt = None) -> None:
    """Revoke a token: refused at once by the server that revoked it, within seconds by the
    others (a --db revocation: within seconds by every server)."""
    if db:
        out = _direct(lambda svc: svc.revoke(token_id))
    else:
        out = _call(api, lambda c: c.revoke_token(token_id))
    console.print(f"token {out.id} ({escape(out.name)}) revoked")

"""Settings, read from ``TUNEYARD_*`` environment variables (or passed explicitly)."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_PORT = 8765


def default_data_dir() -> Path:
    return Path.home() / ".local" / "share" / "tuneyard"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TUNEYARD_", extra="ignore")

    # Where the embedded default keeps its SQLite file, checkpoints and logs.
    data_dir: Path = Field(default_factory=default_data_dir)
    # SQLAlchemy URL; empty means the embedded SQLite file under data_dir.
    database_url: str = ""
    redis_url: str = "redis://127.0.0.1:6379/0"
    api_url: str = f"http://127.0.0.1:{DEFAULT_PORT}"
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    # A running trial whose worker sent no report or heartbeat for this long is reaped.
    lease_seconds: float = 60.0
    # Largest checkpoint archive a worker may upload to the API.
    max_checkpoint_bytes: int = 8 * 1024**3
    # Largest code archive (`tuneyard study create --code DIR`) the API stores; 413 beyond it.
    max_code_bytes: int = 100 * 1024**2
    # Shared directories (NFS, a bucket mount) where workers save checkpoints themselves
    # (`tuneyard worker --checkpoints DIR`): a checkpoint location handed to /pause or
    # /release must be an api: location of this server or a directory under one of these, or
    # under <data_dir>/checkpoints (the local workers' own). Absolute paths; in the
    # environment a JSON list or paths separated by os.pathsep (':'), as in PATH.
    checkpoint_roots: list[str] | str = Field(default_factory=list)
    # Seconds a checkpoint that can no longer be resumed (its trial stopped or failed, or a
    # newer checkpoint superseded it) is kept before the dispatcher's sweep deletes it; 0 =
    # at the next sweep. Completed trials' models are kept by rank instead (limits.keep_models).
    checkpoint_retention: float = Field(default=86_400.0, ge=0)
    # Seconds between two runs of that sweep in each API process (0: none).
    checkpoint_sweep_every: float = Field(default=60.0, ge=0)
    db_pool_size: int = 10
    db_max_overflow: int = 20
    # Seconds a request waits for a free database connection before it is answered 503.
    db_pool_timeout: float = 10.0
    # Largest request body the API reads (checkpoint uploads have max_checkpoint_bytes); 413.
    max_body_bytes: int = 4 * 1024**2
    # Reports a trial may send per second, after a burst of report_burst, per API process
    # (429 with Retry-After beyond that; 0 turns the limit off).
    report_rate: float = 50.0
    report_burst: int = 200
    # Every request needs a scoped API token (docs/security.md). Off only for a server bound
    # to the loopback interface (`--insecure-no-auth`): then anyone who reaches it is an admin.
    auth: bool = True
    # Whether /metrics answers without a token (for a Prometheus that sends none).
    metrics_public: bool = False
    # The hosts studies' notification webhooks may name (docs/security.md): host globs
    # separated by commas ("hooks.example.com,*.internal"), posted to whatever addresses they
    # resolve to. Empty: any host whose addresses are all public (no loopback, private,
    # link-local or reserved address); the server posts to nothing inside its own network.
    webhook_allow: str = ""
    # The token this process presents as a client of the API (CLI, workers, notebooks).
    token: str = Field(default="", repr=False)

    @field_validator("checkpoint_roots")
    @classmethod
    def _checkpoint_roots(cls, value: list[str] | str) -> list[str]:
        roots = value.split(os.pathsep) if isinstance(value, str) else value
        roots = [r.strip() for r in roots if r.strip()]
        for root in roots:
            if not os.path.isabs(root) or ".." in Path(root).parts:
                raise ValueError(f"{root!r} is not an absolute path without '..'")
        return roots

    def checkpoint_root_paths(self) -> list[Path]:
        """Where checkpoints handed in as paths may lie: the configured roots, then the local
        workers' own directory (``tuneyard up`` and ``run_local_workers`` save there)."""
        roots = [Path(r) for r in self.checkpoint_roots]
        return [*roots, self.data_dir.absolute() / "checkpoints"]

    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.data_dir / 'tuneyard.db'}"

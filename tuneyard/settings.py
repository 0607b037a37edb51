"""Settings, read from ``TUNEYARD_*`` environment variables (or passed explicitly)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
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
    # The token this process presents as a client of the API (CLI, workers, notebooks).
    token: str = Field(default="", repr=False)

    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.data_dir / 'tuneyard.db'}"

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

    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.data_dir / 'tuneyard.db'}"

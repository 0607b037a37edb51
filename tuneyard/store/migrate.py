"""Run the Alembic history (``tuneyard/migrations/``, shipped inside the package) against a
database URL."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from alembic import command
from alembic.config import Config


def migrations_dir() -> Path:
    """The Alembic script directory inside the installed package (a wheel or the checkout)."""
    location = Path(str(files("tuneyard").joinpath("migrations")))
    if not (location / "env.py").is_file() or not (location / "versions").is_dir():
        raise RuntimeError(
            f"tuneyard's migrations are missing from {location}; reinstall the package"
        )
    return location


def alembic_config(database_url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    cfg.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return cfg


def upgrade(database_url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(database_url), revision)


def downgrade(database_url: str, revision: str = "base") -> None:
    command.downgrade(alembic_config(database_url), revision)

"""The FastAPI application, built by ``create_app(settings)``; nothing heavy at import."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from sqlalchemy import text

from tuneyard import __version__
from tuneyard.api import errors
from tuneyard.api.metrics import LatencyMiddleware
from tuneyard.api.metrics import router as metrics_router
from tuneyard.api.routes import router
from tuneyard.api.worker_routes import router as worker_router
from tuneyard.errors import Unavailable
from tuneyard.service.context import Clock, Toolkit, utc_clock
from tuneyard.service.metrics import Metrics, StateCollector
from tuneyard.settings import Settings
from tuneyard.store.db import make_engine, make_sessionmaker


def create_app(settings: Settings | None = None, clock: Clock = utc_clock) -> FastAPI:
    settings = settings or Settings()
    engine = make_engine(
        settings.resolved_database_url(),
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
    )
    # A registry of its own: create_app may run several times in one process (tests).
    metrics = Metrics(CollectorRegistry())
    kit = Toolkit(make_sessionmaker(engine), settings, clock, metrics=metrics)
    metrics.registry.register(StateCollector(kit, settings.redis_url))

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        engine.dispose()

    app = FastAPI(
        title="tuneyard",
        version=__version__,
        summary="Distributed hyperparameter tuning: studies, trials and ASHA decisions.",
        lifespan=lifespan,
    )
    app.state.kit = kit
    app.state.engine = engine
    app.state.metrics = metrics
    errors.install(app)
    app.add_middleware(LatencyMiddleware, metrics=metrics)
    app.include_router(router)
    app.include_router(worker_router)
    app.include_router(metrics_router)

    @app.get("/healthz", tags=["health"])
    def healthz() -> dict[str, str]:
        """The process is up."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"], responses={503: {"description": "database unreachable"}})
    def readyz() -> dict[str, str]:
        """The database is reachable (a 503 otherwise). Also says whether Redis, which holds
        only work in flight, answers; the API keeps serving without it."""
        try:
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except Exception as exc:
            raise Unavailable(f"database unreachable: {type(exc).__name__}") from exc
        return {"status": "ready", "database": engine.dialect.name, "redis": _redis_status()}

    def _redis_status() -> str:
        import redis

        try:
            client = redis.Redis.from_url(
                settings.redis_url, socket_connect_timeout=0.5, socket_timeout=0.5
            )
            client.ping()
            client.close()
        except (redis.RedisError, OSError) as exc:
            return f"unreachable: {type(exc).__name__}"
        return "ok"

    return app

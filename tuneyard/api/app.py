"""The FastAPI application, built by ``create_app(settings)``; nothing heavy at import."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from sqlalchemy import text
from starlette.types import ASGIApp

from tuneyard import __version__, dashboard
from tuneyard.api import dashboard_routes, errors, openapi
from tuneyard.api.auth import AuthGate, TokenCache
from tuneyard.api.code_routes import router as code_router
from tuneyard.api.fast_calls import FastCalls
from tuneyard.api.guards import LoopbackOnly, NoSniff
from tuneyard.api.import_routes import router as import_router
from tuneyard.api.limits import BodyLimitMiddleware, RateLimiter
from tuneyard.api.metrics import LatencyMiddleware
from tuneyard.api.metrics import router as metrics_router
from tuneyard.api.model_routes import router as model_router
from tuneyard.api.notes_routes import notes_router, timeline_router
from tuneyard.api.population_routes import router as population_router
from tuneyard.api.routes import router
from tuneyard.api.token_routes import router as token_router
from tuneyard.api.token_routes import self_router as whoami_router
from tuneyard.api.warm_start_routes import router as warm_start_router
from tuneyard.api.worker_routes import router as worker_router
from tuneyard.errors import Unavailable
from tuneyard.service.context import Clock, Toolkit, utc_clock
from tuneyard.service.metrics import Metrics, StateCollector
from tuneyard.service.retention import Sweeper
from tuneyard.settings import Settings
from tuneyard.store.db import make_engine, make_sessionmaker


class TuneyardAPI(FastAPI):
    """FastAPI with the guards of ``tuneyard.api.guards`` around everything else, the
    framework's own error middleware included (its 500 answers get nosniff too)."""

    def build_middleware_stack(self) -> ASGIApp:
        app = super().build_middleware_stack()
        if not self.state.kit.settings.auth:
            app = LoopbackOnly(app)
        return NoSniff(app)


def create_app(settings: Settings | None = None, clock: Clock = utc_clock) -> FastAPI:
    settings = settings or Settings()
    engine = make_engine(
        settings.resolved_database_url(),
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_timeout=settings.db_pool_timeout,
    )
    # A registry of its own: create_app may run several times in one process (tests).
    metrics = Metrics(CollectorRegistry())
    kit = Toolkit(make_sessionmaker(engine), settings, clock, metrics=metrics)
    metrics.registry.register(StateCollector(kit, settings.redis_url))
    # Deletes checkpoints that can no longer be resumed (service/retention.py).
    sweeper = Sweeper(kit, settings.checkpoint_sweep_every)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # What exists at startup (modules, the app, numpy, SQLAlchemy's caches) lives as long
        # as the process: out of the collector's way, a full collection costs a few ms instead
        # of the 100 ms or more that shows in the dashboard's and the report path's tails.
        gc.freeze()
        sweeper.start()
        yield
        sweeper.stop()
        engine.dispose()

    app = TuneyardAPI(
        title="tuneyard",
        version=__version__,
        summary="Distributed hyperparameter tuning: studies, trials and ASHA decisions.",
        lifespan=lifespan,
        # Served by dashboard.mount from local copies: the defaults load them from a CDN.
        docs_url=None,
        redoc_url=None,
    )
    app.state.kit = kit
    app.state.engine = engine
    app.state.metrics = metrics
    app.state.report_limiter = RateLimiter(settings.report_rate, settings.report_burst)
    app.state.token_cache = TokenCache()
    errors.install(app)
    openapi.install(app)
    # Innermost: a report's and a heartbeat's happy path, without the router (fast_calls.py).
    app.add_middleware(FastCalls, api=app)
    # The token is checked before a route reads the body, after the size limit.
    app.add_middleware(AuthGate, api=app)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(LatencyMiddleware, metrics=metrics)
    app.include_router(router)
    app.include_router(worker_router)
    app.include_router(code_router)
    app.include_router(model_router)
    app.include_router(population_router)
    app.include_router(warm_start_router)
    app.include_router(import_router)
    app.include_router(metrics_router)
    app.include_router(token_router)
    app.include_router(notes_router)
    app.include_router(whoami_router)
    # The dashboard's JSON is read scope; its page and static files (dashboard.mount) are
    # public: the page asks for a token and sends it (its event stream, a ticket).
    app.include_router(dashboard_routes.router)
    app.include_router(dashboard_routes.stream_router)
    app.include_router(timeline_router)
    dashboard.mount(app)

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

"""Running the services under uvicorn: one per container, or all three for the local platform."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
import socket
from collections.abc import Iterator
from typing import Any

import uvicorn
from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from medrobotics import logs
from medrobotics.config import Settings

DEFAULT_PORTS = {"ingestion": 8080, "api": 5000}
SERVICE_NAMES = {"ingestion": "data-ingestion", "api": "api-service"}
# ECS sends SIGTERM, waits stopTimeout (30 s in the task definitions), then SIGKILL.
GRACEFUL_SECONDS = 25

log = logs.get("medrobotics.server")


def build(settings: Settings, service: str, **kwargs: Any) -> FastAPI:
    """Create one service's app."""
    if service == "ingestion":
        from medrobotics.ingestion.app import create_app
    else:
        from medrobotics.api.app import create_app
    return create_app(settings, **kwargs)


def _config(app: ASGIApp, settings: Settings, host: str, port: int, **kw: Any) -> uvicorn.Config:
    production = settings.environment == "production"
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        loop="uvloop",
        http="httptools",
        log_config=None,  # our structured logging, configured before
        access_log=False,  # RequestContext writes one line per request with more fields
        timeout_graceful_shutdown=GRACEFUL_SECONDS,
        # Behind the ALB (the only peer the security group admits) X-Forwarded-For is true.
        proxy_headers=True,
        forwarded_allow_ips="*" if production else "127.0.0.1",
        server_header=False,
        **kw,
    )


def serve_one(settings: Settings, service: str) -> None:
    """Run one service in the foreground until SIGTERM or SIGINT (graceful)."""
    logs.configure(
        service=SERVICE_NAMES[service], fmt=settings.log_format, level=settings.log_level
    )
    port = settings.port or DEFAULT_PORTS[service]
    app = build(settings, service)
    settle_memory()
    log.info("starting", host=settings.host, port=port, database=_db_kind(settings))
    uvicorn.Server(_config(app, settings, settings.host, port)).run()
    log.info("stopped")


def settle_memory() -> None:
    """Move everything loaded so far out of the garbage collector's sight, and collect less often.

    The libraries and the app are a few hundred thousand long-lived objects; every full
    collection walked them all, a pause of tens of milliseconds that landed in the slowest
    requests. Requests allocate many short-lived objects, which the young generation still
    collects.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


def _db_kind(settings: Settings) -> str:
    return "postgresql" if settings.db_url.startswith("postgresql") else "sqlite"


class Front:
    """The load balancer's path rules: /api/* to the API, /ingest/* to ingestion, else 404.

    Paths are passed through unchanged, as the ALB does.
    """

    def __init__(self, api: ASGIApp, ingestion: ASGIApp) -> None:
        self.api, self.ingestion = api, ingestion

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            return  # the services run their own lifespans on their own servers
        path: str = scope.get("path", "")
        if path.startswith("/api/"):
            await self.api(scope, receive, send)
        elif path.startswith("/ingest/"):
            await self.ingestion(scope, receive, send)
        else:
            body = (
                b'{"error":{"code":"not_found","message":"no route for this path",'
                b'"details":[],"request_id":null}}'
            )
            await send(
                {
                    "type": "http.response.start",
                    "status": 404,
                    "headers": [(b"content-type", b"application/json")],
                }
            )
            await send({"type": "http.response.body", "body": body})


class PortInUse(SystemExit):
    """A port the platform needs is taken."""


def bind(host: str, port: int) -> socket.socket:
    """Bind a listening TCP socket, or raise PortInUse naming the port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise PortInUse(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


class _Server(uvicorn.Server):
    """A uvicorn server that leaves signal handling to its owner."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve_many(
    settings: Settings,
    *,
    host: str,
    front_port: int,
    api_port: int,
    ingestion_port: int,
    ready: Any = None,
) -> None:
    """Run both services and the front port in one process until SIGINT or SIGTERM.

    Stop order matters: the front stops taking requests and finishes its in-flight ones
    first; then the services stop, and ingestion flushes what it holds.
    """
    # Bind every port before starting anything: a port in use is a clear message, not a
    # half-started platform.
    sockets = [bind(host, p) for p in (front_port, ingestion_port, api_port)]
    ingestion = build(settings, "ingestion")
    api = build(settings, "api")
    settle_memory()
    front = _Server(_config(Front(api, ingestion), settings, host, front_port, lifespan="off"))
    backs = [
        _Server(_config(ingestion, settings, host, ingestion_port)),
        _Server(_config(api, settings, host, api_port)),
    ]
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    back_tasks = [
        asyncio.create_task(s.serve([k])) for s, k in zip(backs, sockets[1:], strict=True)
    ]
    front_task = asyncio.create_task(front.serve([sockets[0]]))
    while not all(s.started for s in (front, *backs)):
        if any(t.done() for t in (front_task, *back_tasks)):
            break
        await asyncio.sleep(0.05)
    if ready is not None and all(s.started for s in (front, *backs)):
        ready()
    stop_waiter = asyncio.create_task(stopping.wait())
    await asyncio.wait({stop_waiter, front_task, *back_tasks}, return_when=asyncio.FIRST_COMPLETED)
    front.should_exit = True
    await front_task
    for s in backs:
        s.should_exit = True
    await asyncio.gather(*back_tasks)
    stop_waiter.cancel()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.remove_signal_handler(sig)
    if any(not s.started for s in (front, *backs)):
        raise SystemExit(1)

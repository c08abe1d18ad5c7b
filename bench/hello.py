"""Hello-world references under the services' own uvicorn configuration.

`python -m bench.hello fastapi --port N` (a minimal FastAPI app) or `asgi` (bare ASGI).
"""

from __future__ import annotations

import argparse
from typing import Any

import uvicorn
from fastapi import FastAPI

from medrobotics import server
from medrobotics.config import Settings

app = FastAPI()


@app.get("/")
async def hello() -> dict[str, str]:
    return {"message": "Hello, World!"}


_BODY = b'{"message":"Hello, World!"}'
_HEADERS = [(b"content-type", b"application/json"), (b"content-length", b"27")]


async def bare(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": _HEADERS})
    await send({"type": "http.response.body", "body": _BODY})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("kind", choices=["fastapi", "asgi"])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    target: Any = app if args.kind == "fastapi" else bare
    # The same Config the services get (uvloop, httptools, one worker, no access log).
    config = server._config(target, Settings(), "127.0.0.1", args.port, lifespan="off")
    config.log_level = "warning"
    uvicorn.Server(config).run()


if __name__ == "__main__":
    main()

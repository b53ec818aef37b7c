"""The ASGI variant of ``child.py`` for ``uvicorn --reload``: the START line is printed at import."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

sys.dont_write_bytecode = True
sys.path.insert(0, os.environ["BENCH_TREE"])

import version  # noqa: E402

print(f"START {os.getpid()} {getattr(version, 'VERSION', None)} {time.monotonic_ns()}", flush=True)

Message = MutableMapping[str, Any]


async def app(
    scope: MutableMapping[str, Any],
    receive: Callable[[], Awaitable[Message]],
    send: Callable[[Message], Awaitable[None]],
) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    elif scope["type"] == "http":
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]}
        )
        await send({"type": "http.response.body", "body": str(version.VERSION).encode()})

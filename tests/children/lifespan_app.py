"""An ASGI app with lifespan events, served by uvicorn: shutdown must run on a reload."""

from __future__ import annotations

import os
from typing import Any

from _report import report, version


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
                report("READY", os.getpid(), version())
            elif message["type"] == "lifespan.shutdown":
                report("LIFESPAN-SHUTDOWN", os.getpid())
                await send({"type": "lifespan.shutdown.complete"})
                return

"""An ASGI app served by uvicorn under aioreload, with an endpoint that reloads it.

    pip install uvicorn
    PORT=8000 python examples/asgi_app.py

    curl http://127.0.0.1:8000/          -> the message, the pid and the reload reason
    curl -X POST http://127.0.0.1:8000/reload   -> the app asks aioreload to restart it

Edit MESSAGE and save: every module the app imported is watched, so the change reloads it.
Readiness is reported once uvicorn is accepting connections.
"""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any

import aioreload

MESSAGE = "hello from aioreload"


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        print(f"app[{os.getpid()}]: shutting down", flush=True)
        await send({"type": "lifespan.shutdown.complete"})
        return
    if scope["path"] == "/reload" and scope["method"] == "POST":
        await aioreload.trigger_reload()
        body: dict[str, object] = {"reloading": True}
    else:
        info = aioreload.last_reload()
        body = {"message": MESSAGE, "pid": os.getpid(), "reason": str(info.reason) if info else None}
    data = json.dumps(body).encode()
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]}
    )
    await send({"type": "http.response.body", "body": data})


async def serve() -> None:
    import uvicorn

    port = int(os.environ.get("PORT", "8000"))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    task = asyncio.create_task(server.serve())
    while not server.started and not task.done():  # noqa: ASYNC110 - uvicorn has no started event
        await asyncio.sleep(0.005)
    if server.started:
        print(f"app[{os.getpid()}]: serving on http://127.0.0.1:{port}", flush=True)
        await aioreload.ready()
    await task


if __name__ == "__main__":
    aioreload.run(serve)

"""Embedding: an existing asyncio application runs a supervisor next to its own tasks.

    python examples/embed.py

The application supervises ``examples/hello.py`` (restarted when files under ``examples/``
change), prints the supervisor's lifecycle events, and keeps its own heartbeat task going.
It also asks for a reload itself every 10 seconds, to show ``await sup.reload()``.
Stop it with Ctrl+C: the child is stopped gracefully and nothing keeps running.
"""

from __future__ import annotations

import sys
from pathlib import Path

import anyio

import aioreload

HERE = Path(__file__).parent


async def heartbeat() -> None:
    for beat in range(1, 1_000_000):
        await anyio.sleep(5)
        print(f"app: heartbeat {beat}", flush=True)


async def print_events(sup: aioreload.Supervisor) -> None:
    with sup.events() as events:
        async for event in events:
            print(f"app: {event.kind} generation={event.generation} pid={event.pid}", flush=True)


async def reload_now_and_then(sup: aioreload.Supervisor) -> None:
    while True:
        await anyio.sleep(10)
        started = await sup.reload()
        print(f"app: asked for a reload, new child started: {started}", flush=True)


async def main() -> None:
    command = [sys.executable, str(HERE / "hello.py")]
    async with aioreload.Supervisor(command, watch=[HERE]) as sup, anyio.create_task_group() as tg:
        tg.start_soon(heartbeat)
        tg.start_soon(print_events, sup)
        tg.start_soon(reload_now_and_then, sup)
        await sup.wait()
        tg.cancel_scope.cancel()


if __name__ == "__main__":
    try:
        anyio.run(main)
    except KeyboardInterrupt:
        print("app: stopped", flush=True)

"""Asks its supervisor for a reload: from a coroutine, or from a thread with argv ``thread``."""

from __future__ import annotations

import asyncio
import os
import sys
import threading

from _report import report, version

import aioreload


async def main() -> None:
    report("READY", os.getpid(), version(), "SUPERVISED", aioreload.is_supervised())
    info = aioreload.last_reload()
    report("INFO", info.reason.value if info else "-", info.generation if info else 0)
    if os.environ.get("TEST_TRIGGER_ONCE") and info is not None and info.generation == 1:
        if "thread" in sys.argv:
            threading.Thread(target=aioreload.request_reload).start()
        else:
            await aioreload.trigger_reload()
    await aioreload.ready()
    await asyncio.Event().wait()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)

"""A plain asyncio program to run under the reloader.

    aioreload -w examples -- python examples/hello.py

Edit MESSAGE and save: the program is stopped gracefully (watch the "cleaning up" line from
its finally block) and started again with the new text.
"""

from __future__ import annotations

import asyncio
import contextlib
import os

MESSAGE = "hello from aioreload"


async def main() -> None:
    print(f"[pid {os.getpid()}] {MESSAGE}", flush=True)
    try:
        for tick in range(1, 1_000_000):
            await asyncio.sleep(2)
            print(f"[pid {os.getpid()}] still running ({tick})", flush=True)
    finally:
        print(f"[pid {os.getpid()}] cleaning up", flush=True)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())

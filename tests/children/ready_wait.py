"""A plain asyncio program: READY after its handlers are in place, CLEANUP from its finally block.

Options (argv): ``slow-stop SECONDS`` sleeps that long in ``finally``; ``count-signals`` reports
each SIGINT it receives instead of stopping on the first one... until the second.
"""

from __future__ import annotations

import asyncio
import os
import sys

from _report import report, version


async def main() -> None:
    slow = float(sys.argv[sys.argv.index("slow-stop") + 1]) if "slow-stop" in sys.argv else 0.0
    report("READY", os.getpid(), version())
    try:
        await asyncio.Event().wait()
    finally:
        report("CLEANUP", os.getpid())
        if slow:
            await asyncio.sleep(slow)
        report("CLEANED", os.getpid())


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)

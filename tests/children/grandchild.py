"""Starts a grandchild in its process group and reports both pids.

With argv ``ignore`` the grandchild ignores SIGINT, so only the group kill can end it.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

from _report import report, version


async def main() -> None:
    ignore = "signal.signal(signal.SIGINT, signal.SIG_IGN)\n" if "ignore" in sys.argv else ""
    code = f"import signal, time\n{ignore}print('ok', flush=True)\ntime.sleep(3600)"
    grandchild = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    assert grandchild.stdout is not None
    grandchild.stdout.readline()  # its handlers are in place
    report("READY", os.getpid(), version(), "GRANDCHILD", grandchild.pid)
    await asyncio.Event().wait()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)

"""The program every tool runs: print one START line, then wait until asked to stop.

The line is ``START <pid> <version> <monotonic_ns>``; the version comes from ``version.py`` in
the tree named by ``$BENCH_TREE`` (imported, like application code). On SIGUSR1 it asks its
supervisor to reload it (aioreload's ``request_reload`` or hupper's ``trigger_reload``); under
aioreload (or with ``BENCH_IMPORT_AIORELOAD=1``) it imports aioreload before the START line. It
exits with status 0 on SIGINT or SIGTERM.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import Callable

# The version file changes several times a second; a stale .pyc (mtime has 1 s resolution)
# would make the child report the previous version.
sys.dont_write_bytecode = True
sys.path.insert(0, os.environ["BENCH_TREE"])

import version  # noqa: E402  (the point is to import it from the watched tree)


def start_line() -> str:
    return f"START {os.getpid()} {getattr(version, 'VERSION', None)} {time.monotonic_ns()}"


def _reload_hook() -> Callable[[], None] | None:
    """The in-process "reload me" call of the supervisor we run under, if it has one."""
    if "AIORELOAD_FD" in os.environ or os.environ.get("BENCH_IMPORT_AIORELOAD") == "1":
        import aioreload  # the second case measures the import alone, for the cold-start baseline

        return aioreload.request_reload if "AIORELOAD_FD" in os.environ else None
    hupper = sys.modules.get("hupper")
    if hupper is not None and hupper.is_active():
        return hupper.get_reloader().trigger_reload  # type: ignore[no-any-return]
    return None


async def main() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    hook = _reload_hook()
    if hook is not None:
        loop.add_signal_handler(signal.SIGUSR1, hook)
    # One write, newline included: under embedded.py the supervisor's EVENT lines share this pipe,
    # and print() writes the text and the newline separately (stdout is unbuffered here).
    sys.stdout.write(start_line() + "\n")
    sys.stdout.flush()
    await stop.wait()


if __name__ == "__main__":
    asyncio.run(main())

"""Checks, first thing, that no other copy of itself is alive beside it (same parent), and says so.

Reports ``READY <pid> <generation> OTHERS <n> <pid>...``: the live (non-zombie) processes that
run this script and share its parent, the supervisor. A correct supervisor reaps a child before
it spawns the next one, so ``n`` is always 0.
"""

from __future__ import annotations

import os
import signal

signal.signal(signal.SIGINT, lambda *_: os._exit(0))  # stopped while starting: leave quietly

import psutil  # noqa: E402
from _report import report  # noqa: E402


def others() -> list[int]:
    me = os.getpid()
    found = []
    for proc in psutil.Process(os.getppid()).children():
        if proc.pid == me:
            continue
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                continue
            argv = proc.cmdline()
            if len(argv) > 1 and argv[1].endswith("arch_alone.py"):
                found.append(proc.pid)
        except psutil.Error:
            continue  # gone meanwhile
    return found


seen = others()
report("READY", os.getpid(), os.environ.get("AIORELOAD_GENERATION", "0"), "OTHERS", len(seen), *seen)
while True:
    signal.pause()

"""Imports ``aioreload`` (so its imports are reported), reports READY, and waits for SIGUSR1.

On SIGUSR1, in its first generation only, it imports ``late_module`` (which the test creates
after READY, in a folder named by ``TEST_LATE_DIR``), reports ``IMPORTED <pid> <VALUE>``, then
asks for a reload through the same channel that carried the import report.
"""

from __future__ import annotations

import os
import signal
import sys

from _report import report

import aioreload

signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
signal.signal(signal.SIGINT, lambda *_: os._exit(0))
generation = os.environ.get("AIORELOAD_GENERATION", "0")
report("READY", os.getpid(), generation)
if generation == "1":
    signal.sigwait({signal.SIGUSR1})
    sys.path.insert(0, os.environ["TEST_LATE_DIR"])
    import late_module  # type: ignore[import-not-found]  # created by the test after READY

    report("IMPORTED", os.getpid(), late_module.VALUE)
    aioreload.request_reload()
while True:
    signal.pause()

"""Reports READY, answers each SIGUSR1 with ``PONG <pid>`` (so it is running), exits quietly on SIGINT."""

from __future__ import annotations

import os
import signal
import sys

from _report import report, version


def pong(*_: object) -> None:
    report("PONG", os.getpid())


def leave(*_: object) -> None:
    sys.exit(0)


signal.signal(signal.SIGUSR1, pong)
signal.signal(signal.SIGINT, leave)
report("READY", os.getpid(), version())
while True:
    signal.pause()

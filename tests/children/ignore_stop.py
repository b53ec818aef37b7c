"""Ignores SIGINT and SIGTERM, so only SIGKILL ends it."""

from __future__ import annotations

import os
import signal
import time

from _report import report, version

signal.signal(signal.SIGINT, lambda *_: report("GOT-SIGINT", os.getpid()))
signal.signal(signal.SIGTERM, lambda *_: report("GOT-SIGTERM", os.getpid()))
report("READY", os.getpid(), version())
while True:
    time.sleep(3600)

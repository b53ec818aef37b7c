"""Imports ``zipped`` from the zip archive named by ``TEST_ZIP`` (a sys.path entry), reports its VALUE.

It imports ``aioreload`` first, so a supervisor with ``watch_imports`` hears about the import.
"""

from __future__ import annotations

import os
import signal
import sys

from _report import report

import aioreload  # noqa: F401  # reports this process's imports to its supervisor

signal.signal(signal.SIGINT, lambda *_: os._exit(0))
sys.path.insert(0, os.environ["TEST_ZIP"])
import zipped  # type: ignore[import-not-found]  # noqa: E402

report("READY", os.getpid(), zipped.VALUE)
while True:
    signal.pause()

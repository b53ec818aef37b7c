"""Floods stdout with a few megabytes, closes it, then waits (for the no-deadlock test)."""

from __future__ import annotations

import os
import sys
import time

from _report import report, version

chunk = "x" * 65535 + "\n"
for _ in range(80):
    sys.stdout.write(chunk)
sys.stdout.flush()
os.close(1)
report("READY", os.getpid(), version())
while True:
    time.sleep(3600)

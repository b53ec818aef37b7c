"""Reports READY, then exits with the code given as its first argument (after argv[2] seconds)."""

from __future__ import annotations

import os
import sys
import time

from _report import report, version

report("READY", os.getpid(), version())
if len(sys.argv) > 2:
    time.sleep(float(sys.argv[2]))
sys.exit(int(sys.argv[1]))

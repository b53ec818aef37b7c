"""Reports READY, then exits with the code given as its first argument."""

from __future__ import annotations

import os
import sys

from _report import report, version

report("READY", os.getpid(), version())
sys.exit(int(sys.argv[1]))

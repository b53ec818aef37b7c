"""Turns the terminal's echo off (as a password prompt does) in the first generation, then waits."""

from __future__ import annotations

import os
import termios
import time

from _report import report, version

if os.environ.get("AIORELOAD_GENERATION") == "1":
    attrs = termios.tcgetattr(0)
    attrs[3] &= ~termios.ECHO
    termios.tcsetattr(0, termios.TCSANOW, attrs)
report("READY", os.getpid(), version())
while True:
    time.sleep(3600)

"""A group leader that exits at once on SIGINT, and a member of its group that takes 0.3 s.

Reports ``HELPER <pid>`` from the member once its handler is in place, then ``READY`` from the
leader; the member reports ``LINGERED <pid>`` just before it exits. With ``leader-exits`` the
leader exits (code 3) right after READY, leaving the member behind.
"""

from __future__ import annotations

import os
import signal
import sys
import time

from _report import report, version

LINGER = 0.3


def linger(*_: object) -> None:
    time.sleep(LINGER)
    report("LINGERED", os.getpid())
    os._exit(0)


read_end, write_end = os.pipe()
helper = os.fork()
if helper == 0:
    os.close(read_end)
    signal.signal(signal.SIGINT, linger)
    report("HELPER", os.getpid())
    os.close(write_end)  # tells the leader the handler is in place
    while True:
        signal.pause()
os.close(write_end)
os.read(read_end, 1)  # end of file once the helper is ready
signal.signal(signal.SIGINT, lambda *_: os._exit(0))
report("READY", os.getpid(), version())
if "leader-exits" in sys.argv:
    sys.exit(3)
while True:
    signal.pause()

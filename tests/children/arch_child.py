"""Says what its supervisor told it; its SIGINT handler reports ``GOT-SIGINT <pid>``, then lingers.

The linger (seconds) is ``argv[1]``, default 0: with 0.3 it is a program that takes 0.3 s to stop;
0.1 s into a linger it reports ``MIDWAY <pid>``. In its first generation, with
``TEST_EDIT_FROM`` and ``TEST_EDIT_TO`` set, it renames the first over the second right after its
READY line: an atomic save, which the reload it causes cannot cut in half.

Reports ``READY <pid> <version> <generation> <reason> <changes as JSON>`` (what its supervisor
told it in the environment); answers SIGUSR1 with ``PONG <pid> <1 if stopping else 0>``.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time

from _report import report, version

LINGER = float(sys.argv[1]) if len(sys.argv) > 1 else 0.0
stopping = False


def on_sigint(*_: object) -> None:
    global stopping
    stopping = True
    report("GOT-SIGINT", os.getpid())
    if LINGER:
        time.sleep(min(0.1, LINGER))
        report("MIDWAY", os.getpid())
        time.sleep(max(0.0, LINGER - 0.1))
    report("GONE", os.getpid())
    os._exit(0)


def on_sigusr1(*_: object) -> None:
    report("PONG", os.getpid(), int(stopping))


signal.signal(signal.SIGINT, on_sigint)
signal.signal(signal.SIGUSR1, on_sigusr1)
changes = json.loads(os.environ.get("AIORELOAD_CHANGES", "[]"))
report(
    "READY",
    os.getpid(),
    version(),
    os.environ.get("AIORELOAD_GENERATION", "0"),
    os.environ.get("AIORELOAD_REASON", "-"),
    json.dumps(changes, separators=(",", ":")),
)
edit_from, edit_to = os.environ.get("TEST_EDIT_FROM"), os.environ.get("TEST_EDIT_TO")
if edit_from and edit_to and os.environ.get("AIORELOAD_GENERATION") == "1":
    os.replace(edit_from, edit_to)
while True:
    signal.pause()

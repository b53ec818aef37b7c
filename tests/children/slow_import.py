"""Run by the "edit during import" test: reports, then imports ``fresh_module``, then takes a while."""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.environ["TEST_CHILDREN"])

from _report import report

import aioreload

report("IMPORTING", os.getpid())
import fresh_module  # type: ignore[import-not-found]  # noqa: E402  # written by the test

time.sleep(float(os.environ.get("TEST_IMPORT_DELAY", "0")))  # a program still importing


def main() -> None:
    report("READY", os.getpid(), fresh_module.VALUE)
    import threading

    threading.Event().wait()


if __name__ == "__main__":
    aioreload.run(main, quiet=True, debounce=0.02)

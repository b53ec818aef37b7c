"""A program that reloads itself with aioreload.run(); copied into the test's project folder.

It imports ``helper`` (next to it) and reports ``helper.VALUE``. With ``helper.VALUE`` set to
"exit-N" its main returns N; set to "crash" its main imports ``broken`` (which may not parse).
"""

from __future__ import annotations

import asyncio
import os
import sys

sys.path.insert(0, os.environ["TEST_CHILDREN"])

import helper  # type: ignore[import-not-found]
from _report import report

import aioreload


async def main() -> int | None:
    info = aioreload.last_reload()
    report("READY", os.getpid(), helper.VALUE, info.reason.value if info else "-")
    value = str(helper.VALUE)
    if value.startswith("exit-"):
        return int(value[5:])
    if value == "crash":
        import broken  # type: ignore[import-not-found]  # noqa: F401

    await aioreload.ready()
    await asyncio.Event().wait()
    return None


if __name__ == "__main__":
    aioreload.run(main, quiet=True, debounce=0.02, before_exit=lambda: report("BEFORE-EXIT"))

"""aioreload embedded: ``Supervisor([python, child.py], watch=[TREE])`` inside ``asyncio.run``.

Besides the child's START lines it prints ``EVENT <kind> <generation> <pid> <detail>
<monotonic_ns>`` for each supervisor event (``detail``: ``spare`` for a child started from the
warm spare, ``MODULES:MIB:PRELOAD_MS`` for ``spare-ready``, else ``-``), so the harness can tell
where an edit's latency goes and when the spare is ready.
Usage: ``python embedded.py TREE -- COMMAND...``
"""

from __future__ import annotations

import asyncio
import re
import sys
import time

import aioreload


async def main(tree: str, command: list[str]) -> int:
    supervisor = aioreload.Supervisor(command, watch=[tree])
    events = supervisor.events()

    async def report() -> None:
        with events:
            async for event in events:
                source = "spare" if event.message == "spare" else "-"
                if event.kind.value == "spare-ready":  # message "K modules, M MiB" → K:M:ms
                    numbers = [*re.findall(r"\d+", event.message or "")[:2], "-", "-"]
                    source = f"{numbers[0]}:{numbers[1]}:{(event.elapsed or 0) * 1000:.0f}"
                pid = event.pid if event.pid is not None else "-"
                # One write per line: the child's START lines share this pipe.
                stamp = time.monotonic_ns()
                sys.stdout.write(f"EVENT {event.kind.value} {event.generation} {pid} {source} {stamp}\n")
                sys.stdout.flush()

    reporter = asyncio.create_task(report())
    try:
        async with supervisor:
            return await supervisor.wait()
    finally:
        reporter.cancel()


if __name__ == "__main__":
    if len(sys.argv) < 4 or sys.argv[2] != "--":
        sys.exit("usage: embedded.py TREE -- COMMAND...")
    try:
        sys.exit(asyncio.run(main(sys.argv[1], sys.argv[3:])))
    except KeyboardInterrupt:
        sys.exit(130)

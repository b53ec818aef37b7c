"""aioreload embedded: ``Supervisor([python, child.py], watch=[TREE])`` inside ``asyncio.run``.

Besides the child's START lines it prints ``EVENT <kind> <generation> <monotonic_ns>`` for each
supervisor event, so the harness can tell where an edit's latency goes.
Usage: ``python embedded.py TREE -- COMMAND...``
"""

from __future__ import annotations

import asyncio
import sys
import time

import aioreload


async def main(tree: str, command: list[str]) -> int:
    supervisor = aioreload.Supervisor(command, watch=[tree])
    events = supervisor.events()

    async def report() -> None:
        with events:
            async for event in events:
                print(f"EVENT {event.kind.value} {event.generation} {time.monotonic_ns()}", flush=True)

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

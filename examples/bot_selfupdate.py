"""A bot that updates itself: pull, install, test, and reload only if the tests pass.

The 2012 story behind aioreload, for asyncio. Run it from a git checkout of your bot:

    python bot_selfupdate.py

It reads commands from stdin (a stand-in for chat messages):

    version   replies with the running version (from bot_version.py)
    update    git pull, pip install -r requirements.txt, run the tests in tests/;
              if they pass, reload into the new code; if not, roll the checkout back
              and keep running the old code, reporting what failed
    quit      stop the bot

The bot reloads only when it decides to (``watch_imports=False``): pulling new code does not
restart it by itself, so failing code never runs.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import aioreload

HERE = Path(__file__).resolve().parent


def say(text: str) -> None:
    print(f"bot[{os.getpid()}]: {text}", flush=True)


async def sh(*command: str) -> tuple[int, str]:
    """Run a command in the bot's folder; return its exit code and last output line."""
    process = await asyncio.create_subprocess_exec(
        *command, cwd=HERE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    output, _ = await process.communicate()
    lines = output.decode(errors="replace").strip().splitlines()
    return process.returncode or 0, lines[-1] if lines else ""


async def update() -> None:
    code, head = await sh("git", "rev-parse", "HEAD")
    if code:
        say(f"update failed: not a git checkout ({head})")
        return
    steps = [
        ("git pull", ["git", "pull", "--ff-only", "--quiet"]),
        ("pip install", [sys.executable, "-m", "pip", "install", "--quiet", "-r", "requirements.txt"]),
        ("tests", [sys.executable, "-m", "unittest", "discover", "--start-directory", "tests", "--quiet"]),
    ]
    for name, command in steps:
        if name == "pip install" and not (HERE / "requirements.txt").exists():
            continue
        code, last = await sh(*command)
        if code:
            await sh("git", "reset", "--hard", "--quiet", head)
            say(f"update failed: {name} exited with {code} ({last}); still running the old code")
            return
    _, new_head = await sh("git", "rev-parse", "HEAD")
    if new_head == head:
        say("update: already up to date")
        return
    say(f"update: tests passed at {new_head[:8]}, reloading")
    await aioreload.trigger_reload()


async def main() -> None:
    import bot_version  # the code that updates

    say(f"version {bot_version.VERSION} ready")
    await aioreload.ready()
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        command = line.strip()
        if not line or command == "quit":
            say("bye")
            return
        if command == "version":
            say(f"version {bot_version.VERSION}")
        elif command == "update":
            await update()
        elif command:
            say(f"unknown command {command!r}")


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    aioreload.run(main, watch_imports=False, quiet=True)

"""The examples, end to end: the self-updating bot and the ASGI app."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import anyio.abc
import pytest
from conftest import Project, stop_process

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


class Output:
    """Lines a process printed on stdout, collected in the background."""

    def __init__(self, process: anyio.abc.Process) -> None:
        self.process = process
        self.lines: list[str] = []
        self._cursor = 0
        self._arrived = anyio.Event()

    async def collect(self) -> None:
        assert self.process.stdout is not None
        buffer = b""
        async for chunk in self.process.stdout:
            buffer += chunk
            *complete, buffer = buffer.split(b"\n")
            self.lines.extend(line.decode() for line in complete)
            self._arrived.set()
            self._arrived = anyio.Event()

    async def expect(self, needle: str, timeout: float = 30) -> str:
        with anyio.fail_after(timeout):
            while True:
                for index in range(self._cursor, len(self.lines)):
                    if needle in self.lines[index]:
                        self._cursor = index + 1
                        return self.lines[index]
                await self._arrived.wait()


@asynccontextmanager
async def started(command: list[str], cwd: Path, env: dict[str, str]) -> AsyncIterator[Output]:
    process = await anyio.open_process(command, cwd=cwd, env=env, stderr=None)
    output = Output(process)
    async with process, anyio.create_task_group() as tg:
        tg.start_soon(output.collect)
        try:
            yield output
        finally:
            await stop_process(process, signal.SIGINT, grace=10)
            tg.cancel_scope.cancel()


def git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


def commit_version(upstream: Path, version: str, *, tests_pass: bool) -> None:
    (upstream / "bot_version.py").write_text(f'VERSION = "{version}"\n')
    (upstream / "tests" / "test_bot.py").write_text(
        "import unittest\n\n\nclass T(unittest.TestCase):\n"
        f"    def test_it(self) -> None:\n        self.assertTrue({tests_pass})\n"
    )
    git(upstream, "add", "-A")
    git(upstream, "commit", "-q", "-m", f"version {version}")


async def send(output: Output, line: str) -> None:
    assert output.process.stdin is not None
    await output.process.stdin.send(line.encode() + b"\n")


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
async def test_bot_updates_itself_only_when_tests_pass(project: Project) -> None:
    upstream = project.root / "upstream"
    (upstream / "tests").mkdir(parents=True)
    shutil.copy(EXAMPLES / "bot_selfupdate.py", upstream)
    (upstream / "requirements.txt").write_text("# nothing to install\n")
    git(upstream, "init", "-q", "-b", "main")
    commit_version(upstream, "1", tests_pass=True)
    work = project.root / "work"
    git(project.root, "clone", "-q", str(upstream), str(work))
    env = dict(
        project.env,
        GIT_AUTHOR_NAME="t",
        GIT_AUTHOR_EMAIL="t@example.invalid",
        GIT_COMMITTER_NAME="t",
        GIT_COMMITTER_EMAIL="t@example.invalid",
        PIP_DISABLE_PIP_VERSION_CHECK="1",
    )
    git_env = {k: env[k] for k in env if k.startswith("GIT_")}
    os.environ.update(git_env)  # for the commits this test makes

    async with started([sys.executable, "bot_selfupdate.py"], work, env) as bot:
        first = await bot.expect("version 1 ready")
        commit_version(upstream, "2", tests_pass=True)
        await send(bot, "update")
        await bot.expect("update: tests passed")
        second = await bot.expect("version 2 ready")
        assert second.split(":")[0] != first.split(":")[0]  # a new process

        commit_version(upstream, "3", tests_pass=False)
        await send(bot, "update")
        failed = await bot.expect("update failed: tests")
        assert "still running the old code" in failed
        await send(bot, "version")
        assert (await bot.expect("version ")).endswith("version 2")
        assert (work / "bot_version.py").read_text() == 'VERSION = "2"\n'  # rolled back
        await send(bot, "quit")
        await bot.expect("bye")
        with anyio.fail_after(10):
            assert await bot.process.wait() == 0
    assert not any("version 3" in line for line in bot.lines)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def http(method: str, url: str) -> dict[str, object]:
    request = urllib.request.Request(url, method=method)
    with urllib.request.urlopen(request, timeout=10) as response:
        body: dict[str, object] = json.loads(response.read())
        return body


async def test_asgi_app_reloads_on_edit_and_on_request(project: Project) -> None:
    pytest.importorskip("uvicorn")
    app = project.root / "asgi_app.py"
    shutil.copy(EXAMPLES / "asgi_app.py", app)
    port = free_port()
    env = dict(project.env, PORT=str(port))
    url = f"http://127.0.0.1:{port}/"
    async with started([sys.executable, "asgi_app.py"], project.root, env) as server:
        await server.expect("serving on")
        before = await anyio.to_thread.run_sync(http, "GET", url)
        assert before["message"] == "hello from aioreload"
        assert before["reason"] == "start"

        # Once: the app imported its modules before it served, so the edit cannot be lost.
        app.write_text(app.read_text().replace('MESSAGE = "hello', 'MESSAGE = "edited'))
        await server.expect("serving on")
        after_edit = await anyio.to_thread.run_sync(http, "GET", url)
        assert after_edit["message"] == "edited from aioreload"
        assert after_edit["reason"] == "change"
        assert after_edit["pid"] != before["pid"]

        assert (await anyio.to_thread.run_sync(http, "POST", url + "reload"))["reloading"] is True
        await server.expect("shutting down")  # lifespan shutdown ran in the old process
        await server.expect("serving on")
        after_trigger = await anyio.to_thread.run_sync(http, "GET", url)
        assert after_trigger["reason"] == "trigger"
        assert after_trigger["pid"] != after_edit["pid"]

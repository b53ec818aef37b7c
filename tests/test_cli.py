"""The ``aioreload`` command, run as a real process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import anyio.abc
import psutil
import pytest
from conftest import Lines, Project, child

pytestmark = pytest.mark.anyio


class Cli:
    """A running ``aioreload`` process and the status lines it printed."""

    def __init__(self, process: anyio.abc.Process) -> None:
        self.process = process
        self.stderr: list[str] = []
        self._arrived = anyio.Event()

    async def collect(self) -> None:
        assert self.process.stderr is not None
        buffer = b""
        async for chunk in self.process.stderr:
            buffer += chunk
            *complete, buffer = buffer.split(b"\n")
            self.stderr.extend(line.decode() for line in complete)
            self._arrived.set()
            self._arrived = anyio.Event()

    async def status(self, needle: str, timeout: float = 10) -> str:
        with anyio.fail_after(timeout):
            while True:
                for line in self.stderr:
                    if needle in line:
                        return line
                await self._arrived.wait()

    async def exit_code(self, timeout: float = 10) -> int:
        with anyio.fail_after(timeout):
            return await self.process.wait()


@asynccontextmanager
async def cli(project: Project, *args: str, ignore_sigint: bool = False) -> AsyncIterator[Cli]:
    command = [sys.executable, "-m", "aioreload", *args]
    if ignore_sigint:  # started like `nohup aioreload ... &`: SIGINT ignored from the start
        command = ["/bin/sh", "-c", 'trap "" INT; exec "$@"', "sh", *command]
    process = await anyio.open_process(
        command,
        stdin=subprocess.DEVNULL,
        stdout=None,
        stderr=subprocess.PIPE,
        env=project.env,
        cwd=project.root,
    )
    result = Cli(process)
    async with process, anyio.create_task_group() as tg:
        tg.start_soon(result.collect)
        try:
            yield result
        finally:
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
                with anyio.move_on_after(5):
                    await process.wait()
            if process.returncode is None:
                process.kill()
            tg.cancel_scope.cancel()
    if any("Traceback" in line for line in result.stderr):
        pytest.fail("aioreload printed a traceback:\n" + "\n".join(result.stderr))


async def change_until_restart(project: Project, lines: Lines, version: str) -> list[str]:
    """Write ``version`` until a child reports it: the first write may precede the watch."""
    for _ in range(20):
        project.set_version(version)
        with anyio.move_on_after(0.5):
            return await lines.next("READY", timeout=5)
    pytest.fail("no restart after 20 writes")


async def test_cli_restarts_on_change_and_stops_on_sigint(project: Project, lines: Lines) -> None:
    async with cli(project, "-d", "0.02", "--", *child("ready_wait")) as proc:
        first = await lines.next("READY")
        await proc.status("started")
        second = await change_until_restart(project, lines, "2")
        assert second[2] == "2"
        assert ["CLEANED", first[1]] in lines.all
        await proc.status("changed version.txt")
        proc.process.send_signal(signal.SIGINT)
        assert await proc.exit_code() == 0
        assert ["CLEANED", second[1]] in lines.all


async def test_cli_sighup_reloads(project: Project, lines: Lines) -> None:
    async with cli(project, "--", *child("ready_wait")) as proc:
        first = await lines.next("READY")
        proc.process.send_signal(signal.SIGHUP)
        second = await lines.next("READY")
        assert second[1] != first[1]
        await proc.status("trigger")


async def test_cli_second_sigint_kills_at_once(project: Project, lines: Lines) -> None:
    async with cli(project, "--stop-timeout", "30", "--", *child("ignore_stop")) as proc:
        await lines.next("READY")
        began = time.monotonic()
        proc.process.send_signal(signal.SIGINT)
        await lines.next("GOT-SIGINT")
        proc.process.send_signal(signal.SIGINT)
        code = await proc.exit_code()
        assert time.monotonic() - began < 5
        assert code == 128 + signal.SIGKILL


async def test_cli_exit_code_is_128_plus_signal(project: Project, lines: Lines) -> None:
    async with cli(project, "--stop-signal", "TERM", "--", *child("ignore_stop")) as proc:
        await lines.next("READY")
        proc.process.send_signal(signal.SIGTERM)
        await lines.next("GOT-SIGTERM")
        proc.process.send_signal(signal.SIGINT)
        assert await proc.exit_code() == 137


async def test_cli_killed_supervisor_takes_child_with_it(project: Project, lines: Lines) -> None:
    async with cli(project, "--", *child("grandchild", "ignore")) as proc:
        ready = await lines.next("READY")
        await proc.status("started")
        family = [psutil.Process(int(ready[1])), psutil.Process(int(ready[4]))]
        proc.process.kill()
        _, alive = psutil.wait_procs(family, timeout=1.0)
        assert not [p for p in alive if p.status() != psutil.STATUS_ZOMBIE]


async def test_cli_inherited_ignored_sigint_is_not_passed_on(project: Project, lines: Lines) -> None:
    async with cli(project, "--stop-timeout", "5", "--", *child("ready_wait"), ignore_sigint=True) as proc:
        first = await lines.next("READY")
        began = time.monotonic()
        proc.process.send_signal(signal.SIGHUP)
        await lines.next("READY")
        assert ["CLEANED", first[1]] in lines.all  # the child saw SIGINT and shut down itself
        assert time.monotonic() - began < 2.5  # not the 5 s stop timeout


async def test_cli_missing_command_is_one_line_exit_127(project: Project) -> None:
    async with cli(project, "--", "no-such-command-here") as proc:
        assert await proc.exit_code() == 127
    assert len(proc.stderr) == 1, proc.stderr
    assert "command not found" in proc.stderr[0]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--"], "no command given"),
        (["-w", "missing-folder", "--", "true"], "watch path does not exist"),
        (["--stop-signal", "NOPE", "--", "true"], "unknown signal"),
        (["--stop-timeout", "-1", "--", "true"], "must be >= 0"),
    ],
)
async def test_cli_bad_input_is_one_line(project: Project, args: list[str], needle: str) -> None:
    async with cli(project, *args) as proc:
        code = await proc.exit_code()
    assert code == 2
    assert any(needle in line for line in proc.stderr), proc.stderr
    assert not any("Traceback" in line for line in proc.stderr)


def test_cli_version_and_help() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "aioreload", "--version"], capture_output=True, text=True, check=True
    )
    assert out.stdout.startswith("aioreload ")
    helped = subprocess.run(
        [sys.executable, "-m", "aioreload", "--help"], capture_output=True, text=True, check=True
    )
    assert "exit codes" in helped.stdout
    assert "-- COMMAND" in helped.stdout


def test_console_script_is_installed() -> None:
    script = Path(sys.executable).with_name("aioreload" + (".exe" if os.name == "nt" else ""))
    assert script.exists()

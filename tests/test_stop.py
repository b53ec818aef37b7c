"""Stopping a child's process group: members that outlive their leader, and the look at /proc.

Each test starts real process groups through :class:`aioreload._process.Child`, the object the
supervisor stops its children with.
"""

from __future__ import annotations

import logging
import shlex
import shutil
import signal
import sys
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import anyio.to_thread
import psutil
import pytest
from conftest import Lines, Project, child

import aioreload._process
from aioreload._process import Child

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(sys.platform == "win32", reason="process groups and shell jobs are POSIX"),
]


def gone(pid: int) -> bool:
    """Whether ``pid`` has exited; a zombie counts as gone (some inits never reap)."""
    try:
        return bool(psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True


@asynccontextmanager
async def spawn(project: Project, argv: list[str]) -> AsyncIterator[Child]:
    """A child leading its own process group; killed with its group if the test fails."""
    proc = await Child.spawn(argv, env=project.env, cwd=str(project.root), stop_signal=signal.SIGINT)
    try:
        yield proc
    except BaseException:
        proc.kill()  # members whose leader is gone are nobody's children: only the group reaches them
        with anyio.CancelScope(shield=True):
            await proc.wait()
        raise


async def test_shell_background_job_is_killed_soon_and_named(
    project: Project, lines: Lines, caplog: pytest.LogCaptureFixture
) -> None:
    # POSIX starts `sleep` with SIGINT ignored: a non-interactive shell's background job.
    script = f"sleep 1000 & exec {shlex.join(child('ready_wait'))}"
    async with spawn(project, ["/bin/sh", "-c", script]) as proc:
        ready = await lines.next("READY")
        assert int(ready[1]) == proc.pid  # the shell exec'd the program: it leads the group
        (sleeper,) = psutil.Process(proc.pid).children()
        assert sleeper.name() == "sleep"
        began = time.monotonic()
        with caplog.at_level(logging.WARNING, logger="aioreload"):
            code, leader_killed = await proc.stop(signal.SIGINT, 3.0)
        elapsed = time.monotonic() - began
        assert elapsed < 1.5, f"waited {elapsed:.2f}s of the 3s stop timeout for a background job"
        assert (code, leader_killed) == (0, False)  # the program itself stopped on SIGINT
        await lines.seen("CLEANED", str(proc.pid))
        assert gone(sleeper.pid)
        warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
        assert len(warnings) == 1, warnings
        assert f"pid {sleeper.pid} (sleep) ignored SIGINT" in warnings[0]
        assert f"pid {proc.pid}" not in warnings[0]  # not the leader, which exited at once
        assert proc.killed_members == [(sleeper.pid, "sleep")]


async def test_a_leader_that_ignores_the_signal_is_named(
    project: Project, lines: Lines, caplog: pytest.LogCaptureFixture
) -> None:
    async with spawn(project, child("ignore_stop")) as proc:
        await lines.next("READY")
        with caplog.at_level(logging.WARNING, logger="aioreload"):
            code, leader_killed = await proc.stop(signal.SIGINT, 0.3)
        assert (code, leader_killed) == (-signal.SIGKILL, True)
        await lines.seen("GOT-SIGINT", str(proc.pid))
        warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
        assert any(f"pid {proc.pid} (python" in message for message in warnings), warnings


async def test_group_members_are_looked_for_off_the_loop_with_backoff(
    project: Project, lines: Lines, monkeypatch: pytest.MonkeyPatch
) -> None:
    looks: list[int] = []
    scan = aioreload._process._live_group_members

    def counted(pgid: int) -> bool:
        looks.append(threading.get_ident())
        return scan(pgid)

    monkeypatch.setattr(aioreload._process, "_live_group_members", counted)
    async with spawn(project, child("stop_linger")) as proc:
        helper = int((await lines.next("HELPER"))[1])
        await lines.next("READY")
        code, leader_killed = await proc.stop(signal.SIGINT, 3.0)
        assert (code, leader_killed) == (0, False)
        assert gone(helper)  # stop returned only once the member had gone...
        await lines.seen("LINGERED", str(helper))  # ...by itself, not killed
        loop_thread = threading.get_ident()
        assert looks, "the group was never looked at"
        assert loop_thread not in looks, "the /proc scan ran on the event loop"
        # The member lingers 0.3 s: every 5 ms would be 60 looks; the backoff needs about 8.
        assert len(looks) <= 15, len(looks)


async def test_members_left_by_a_leader_that_exited_get_the_signal(project: Project, lines: Lines) -> None:
    async with spawn(project, child("stop_linger", "leader-exits")) as proc:
        helper = int((await lines.next("HELPER"))[1])
        await lines.next("READY")
        assert await proc.wait() == 3  # the program ended by itself; its helper lives on
        assert not gone(helper)
        assert await proc.stop(signal.SIGINT, 3.0) == (3, False)
        await lines.seen("LINGERED", str(helper))  # it got SIGINT and left by itself
        assert gone(helper)
        assert proc.killed_members == []


@pytest.mark.skipif(shutil.which("ps") is None, reason="needs ps")
async def test_without_proc_ps_names_the_group_members(
    project: Project, lines: Lines, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The naming used where there is no /proc (macOS, the BSDs), run here through ps."""
    async with spawn(
        project, ["/bin/sh", "-c", f"sleep 1000 & exec {shlex.join(child('ready_wait'))}"]
    ) as proc:
        await lines.next("READY")
        (sleeper,) = psutil.Process(proc.pid).children()
        with monkeypatch.context() as patch:
            patch.setattr(aioreload._process, "_PROC_STAT", "/no/proc/here")
            members = dict(await anyio.to_thread.run_sync(aioreload._process._group_members, proc.pid))
        assert members == {proc.pid: psutil.Process(proc.pid).name(), sleeper.pid: "sleep"}
        await proc.stop(signal.SIGINT, 3.0)
        assert gone(sleeper.pid)

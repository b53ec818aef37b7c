"""The command in a terminal: job control in an interactive shell, and status output that fails.

The job-control tests drive a real ``bash -i`` in a pseudo-terminal, as a user types: they
synchronise on what the shell prints, on the lines the children report and on process states.
"""

from __future__ import annotations

import codecs
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from pathlib import Path

import anyio
import anyio.abc
import anyio.lowlevel
import psutil
import pytest
from conftest import Lines, Project, child

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.usefixtures("runtime_dir"),
    pytest.mark.skipif(sys.platform == "win32", reason="job control, pipes and sed are POSIX"),
]

BASH = shutil.which("bash")
PROMPT = "@prompt@ "
# Makes the pseudo-terminal bash's controlling terminal (stdin is its slave side), then runs it.
_CONTROLLING = (
    "import fcntl, os, sys, termios; "
    "fcntl.ioctl(0, termios.TIOCSCTTY, 0); os.execvp(sys.argv[1], sys.argv[1:])"
)


def aioreload_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "aioreload", *args]


def stopped(pid: int) -> bool:
    return bool(psutil.Process(pid).status() == psutil.STATUS_STOPPED)


def gone(pid: int) -> bool:
    """Whether ``pid`` has exited; a zombie counts as gone (this init may never reap it)."""
    try:
        return bool(psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True


async def eventually(check: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    """Wait until ``check()`` holds (a process state), looking between other tasks' steps."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout}s: {what}")
        await anyio.lowlevel.checkpoint()


class Shell:
    """An interactive bash in a pseudo-terminal: type into it, wait for what it prints."""

    def __init__(self, master: int) -> None:
        self.master = master
        self.text = ""
        self._cursor = 0
        self._decode = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._arrived = anyio.Event()

    async def read(self) -> None:
        while True:
            try:
                await anyio.wait_readable(self.master)
                chunk = os.read(self.master, 4096)
            except anyio.ClosedResourceError:  # we hung up
                return
            except OSError:  # EIO: the shell and its jobs closed the terminal
                return
            if not chunk:
                return
            self.text += self._decode.decode(chunk).replace("\r\n", "\n")
            self._arrived.set()
            self._arrived = anyio.Event()

    def type(self, keys: str) -> None:
        os.write(self.master, keys.encode())

    async def expect(self, needle: str, timeout: float = 10.0) -> None:
        """Wait until ``needle`` is printed after what the last ``expect`` matched."""
        try:
            with anyio.fail_after(timeout):
                while (found := self.text.find(needle, self._cursor)) < 0:
                    await self._arrived.wait()
        except TimeoutError:
            pytest.fail(f"the terminal never showed {needle!r}; it shows:\n{self.text[self._cursor :]}")
        self._cursor = found + len(needle)

    def foreground_group(self) -> int:
        return os.tcgetpgrp(self.master)

    def hang_up(self) -> None:
        """Close the terminal as a closed window does: the kernel hangs up its other side."""
        if self.master >= 0:
            anyio.notify_closing(self.master)
            os.close(self.master)
            self.master = -1


class Job:
    """``aioreload`` typed into the shell: its pid and its current child's."""

    def __init__(self, lines: Lines, ready: list[str]) -> None:
        self.lines = lines
        self.child = int(ready[1])
        self.pid = psutil.Process(self.child).ppid()

    async def reload(self) -> None:
        """SIGHUP reloads; the new child's READY proves aioreload is running, not stopped."""
        os.kill(self.pid, signal.SIGHUP)
        ready = await self.lines.next("READY")
        assert psutil.Process(int(ready[1])).ppid() == self.pid
        self.child = int(ready[1])

    async def child_runs(self) -> None:
        """The child answers SIGUSR1 only while it runs (a stopped one keeps it pending)."""
        os.kill(self.child, signal.SIGUSR1)
        await self.lines.next("PONG", str(self.child))

    async def end(self) -> None:
        for pid, signum in (
            (self.pid, signal.SIGCONT),
            (self.child, signal.SIGCONT),
            (self.pid, signal.SIGTERM),
        ):
            with suppress(ProcessLookupError):
                os.kill(pid, signum)
        await eventually(lambda: gone(self.pid), "aioreload has exited")


@pytest.fixture
async def shell(project: Project) -> AsyncIterator[Shell]:
    if BASH is None:
        pytest.skip("needs bash for an interactive shell with job control")
    master, slave = os.openpty()
    env = dict(
        project.env,
        PS1=PROMPT,
        PS2="",
        TERM="dumb",
        HISTFILE="/dev/null",
        XDG_RUNTIME_DIR=os.environ["XDG_RUNTIME_DIR"],
    )
    env.pop("PROMPT_COMMAND", None)
    bash = subprocess.Popen(
        [sys.executable, "-c", _CONTROLLING, BASH, "--norc", "--noprofile", "--noediting", "-i"],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        cwd=project.root,
        env=env,
        start_new_session=True,
    )
    os.close(slave)
    result = Shell(master)
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(result.read)
            await result.expect(PROMPT)
            result.type("set -b\n")  # report a job's stop at once, not at the next prompt
            await result.expect(PROMPT)
            yield result
            tg.cancel_scope.cancel()
    finally:
        # Whatever a failed test left behind would outlive bash, orphaned where no check sees it.
        left = psutil.Process(bash.pid).children(recursive=True)
        for proc in left:
            with suppress(psutil.NoSuchProcess):
                proc.send_signal(signal.SIGCONT)
                proc.terminate()
        _, alive = psutil.wait_procs(left, timeout=5)
        for proc in alive:
            with suppress(psutil.NoSuchProcess):
                proc.kill()
        bash.kill()
        bash.wait()
        result.hang_up()


async def start_job(shell: Shell, lines: Lines, *, background: bool = False) -> Job:
    command = shlex.join(aioreload_argv("--stop-timeout", "3", "--", *child("term_ping")))
    shell.type(command + (" &\n" if background else "\n"))
    return Job(lines, await lines.next("READY"))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads process states through /proc")
async def test_ctrl_z_stops_the_child_too_and_fg_or_bg_continue_both(shell: Shell, lines: Lines) -> None:
    job = await start_job(shell, lines)
    try:
        await shell.expect("started")
        assert shell.foreground_group() == job.pid  # the shell made it a job of its own
        shell.type("\x1a")  # Ctrl+Z
        await shell.expect("Stopped")
        assert stopped(job.pid)
        await eventually(lambda: stopped(job.child), "the child is stopped with aioreload")
        shell.type("fg\n")
        await job.child_runs()
        await job.reload()
        assert shell.foreground_group() == job.pid

        shell.type("\x1a")
        await shell.expect("Stopped")
        await eventually(lambda: stopped(job.child), "the new child is stopped with aioreload")
        shell.type("bg\n")
        await shell.expect(" &")
        await job.child_runs()
        # In the background now: each reload restores the terminal, which must not stop it.
        await job.reload()
        await job.reload()
        await job.child_runs()
        assert not stopped(job.pid)
        assert shell.foreground_group() != job.pid
    finally:
        await job.end()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads process states through /proc")
async def test_started_in_the_background_it_keeps_reloading(shell: Shell, lines: Lines) -> None:
    job = await start_job(shell, lines, background=True)
    try:
        await shell.expect("started")
        await job.reload()
        await job.reload()
        await job.child_runs()
        assert not stopped(job.pid)
        assert "Stopped" not in shell.text  # `set -b`: the shell would have said so at once
    finally:
        await job.end()


class StderrPipe:
    """aioreload's stderr as a pipe: the test reads it, and may close it as ``head -1`` does."""

    def __init__(self, read_end: int) -> None:
        self.read_end = read_end

    async def read_until(self, needle: bytes, timeout: float = 10.0) -> bytes:
        """Read until ``needle`` has arrived; return all that was read."""
        data = b""
        with anyio.fail_after(timeout):
            while needle not in data:
                await anyio.wait_readable(self.read_end)
                chunk = os.read(self.read_end, 4096)
                assert chunk, f"end of file before {needle!r}: {data!r}"
                data += chunk
        return data

    def close(self) -> None:
        if self.read_end >= 0:
            os.close(self.read_end)
            self.read_end = -1


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads process states through /proc")
async def test_closing_the_terminal_ends_it_and_its_child(shell: Shell, lines: Lines) -> None:
    """The hangup's SIGHUP stops aioreload; ``kill -HUP`` from elsewhere would reload it."""
    job = await start_job(shell, lines)
    try:
        await shell.expect("started")
        shell.hang_up()
        await lines.all_disconnected()  # the child exited
        await eventually(lambda: gone(job.pid), "aioreload has exited")
        assert lines.count("READY") == 1  # stopped, not reloaded
    finally:
        await job.end()


@asynccontextmanager
async def aioreload_piped(
    project: Project, *args: str
) -> AsyncIterator[tuple[anyio.abc.Process, StderrPipe]]:
    """``aioreload ARGS`` in the project, its stderr a pipe; ended on exit."""
    read_end, write_end = os.pipe()
    output = StderrPipe(read_end)
    try:
        process = await anyio.open_process(
            aioreload_argv(*args),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=write_end,
            cwd=project.root,
            env={**project.env, "XDG_RUNTIME_DIR": os.environ["XDG_RUNTIME_DIR"]},
        )
    finally:
        os.close(write_end)  # the process has its own copy: our reads see its end of file
    try:
        async with process:
            try:
                yield process, output
            finally:
                if process.returncode is None:
                    process.terminate()
                    with anyio.move_on_after(10):
                        await process.wait()
                if process.returncode is None:
                    process.kill()
    finally:
        output.close()


async def test_closed_stderr_does_not_stop_supervision(project: Project, lines: Lines) -> None:
    """``aioreload ... 2>&1 >/dev/null | head -1``: the reader goes away after one line."""
    async with aioreload_piped(project, "--", *child("term_ping")) as (process, stderr):
        assert b"started" in await stderr.read_until(b"\n")
        stderr.close()  # as head -1 exits: the next status line meets a broken pipe
        ready = await lines.next("READY")
        for _ in range(2):  # the first reload's status line fails; the second shows it went on
            process.send_signal(signal.SIGHUP)
            assert (await lines.next("READY"))[1] != ready[1]
        assert process.returncode is None
        process.terminate()
        with anyio.fail_after(10):
            assert await process.wait() == 0  # the child's own code: no error of ours


def inotify_watches(pid: int) -> set[int]:
    """The inodes of everything process ``pid`` watches with inotify (Linux: fdinfo lines)."""
    inodes = set()
    for info in Path(f"/proc/{pid}/fdinfo").iterdir():
        try:
            text = info.read_text()
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith("inotify wd:"):
                fields = dict(field.split(":", 1) for field in line.split()[1:] if ":" in field)
                inodes.add(int(fields["ino"], 16))
    return inodes


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="waits for the inotify watch")
async def test_sed_in_place_is_reported_under_the_edited_name(project: Project, lines: Lines) -> None:
    async with aioreload_piped(project, "-d", "0.05", "--", *child("term_ping")) as (_, stderr):
        ready = await lines.next("READY")
        supervisor = psutil.Process(int(ready[1])).ppid()
        root = project.root.stat().st_ino
        await eventually(lambda: root in inotify_watches(supervisor), "the project folder is watched")
        # sed writes a temporary sedXXXXXX beside the file and renames it over the file.
        await anyio.run_process(["sed", "-i", "s/1/2/", "version.txt"], cwd=project.root)
        assert (await lines.next("READY"))[2] == "2"
        output = await stderr.read_until(b"started in")
    changed = [line for line in output.decode().splitlines() if "changed" in line]
    assert len(changed) == 1, changed
    assert "changed version.txt" in changed[0], changed[0]

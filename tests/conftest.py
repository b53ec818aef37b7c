"""Shared test machinery: a line server the children report to, and a leak check.

Children send lines such as ``READY <pid> <version>`` over a Unix socket named in
``TEST_REPORT_SOCK``; tests wait for lines (bounded by ``fail_after``), never sleep.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import psutil
import pytest

from aioreload import EventKind, EventStream, Supervisor, SupervisorEvent

CHILDREN = Path(__file__).parent / "children"
# Every pid a child reported (children and grandchildren): all must be gone after a test.
REPORTED: set[int] = set()


def child(name: str, *args: str) -> list[str]:
    """The command that runs tests/children/<name>.py with this interpreter."""
    return [sys.executable, str(CHILDREN / f"{name}.py"), *args]


class Lines:
    """Lines received from children, in order of arrival."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.all: list[list[str]] = []
        self._cursor = 0
        self._arrived = anyio.Event()
        self.connected = 0
        self._disconnected = anyio.Event()

    def _add(self, line: str) -> None:
        words = line.split()
        if not words:
            return
        for i, word in enumerate(words):
            if word.isdigit() and i > 0 and words[i - 1] in ("READY", "GRANDCHILD"):
                REPORTED.add(int(word))
            if i == 1 and words[0] == "READY":
                REPORTED.add(int(word))
        self.all.append(words)
        self._arrived.set()
        self._arrived = anyio.Event()

    async def next(self, *prefix: str, timeout: float = 10.0) -> list[str]:
        """The next line (after the last one returned) that starts with ``prefix``."""
        with anyio.fail_after(timeout):
            while True:
                for index in range(self._cursor, len(self.all)):
                    if self.all[index][: len(prefix)] == list(prefix):
                        self._cursor = index + 1
                        return self.all[index]
                self._cursor = len(self.all)
                await self._arrived.wait()

    async def seen(self, *words: str, timeout: float = 5.0) -> None:
        """Wait until a line starting with ``words`` has arrived, at any time (no cursor).

        Each child reports on its own connection: a stopped child's last line may be read
        after the next child's first one.
        """
        with anyio.fail_after(timeout):
            while self.count(*words) == 0:
                await self._arrived.wait()

    def count(self, *prefix: str) -> int:
        """How many lines so far start with ``prefix``."""
        return sum(1 for words in self.all if words[: len(prefix)] == list(prefix))

    async def all_disconnected(self, timeout: float = 5.0) -> None:
        """Wait until every child that connected has closed its connection (it exited)."""
        with anyio.fail_after(timeout):
            while self.connected:
                await self._disconnected.wait()

    async def _serve(self, stream: anyio.abc.SocketStream) -> None:
        self.connected += 1
        try:
            await self._read(stream)
        finally:
            self.connected -= 1
            self._disconnected.set()
            self._disconnected = anyio.Event()

    async def _read(self, stream: anyio.abc.SocketStream) -> None:
        buffer = b""
        async with stream:
            while True:
                try:
                    data = await stream.receive()
                except (anyio.EndOfStream, anyio.BrokenResourceError):
                    return
                buffer += data
                *complete, buffer = buffer.split(b"\n")
                for line in complete:
                    self._add(line.decode())


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=["inotify", "native", "poll"])
def engine(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test with each change source: inotify (Linux), watchfiles' engine, the poller."""
    import aioreload._watch

    if request.param == "inotify" and not sys.platform.startswith("linux"):
        pytest.skip("inotify is Linux-only")
    monkeypatch.setattr(aioreload._watch, "ENGINE", request.param)
    return str(request.param)


@pytest.fixture
def runtime_dir(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A private XDG_RUNTIME_DIR for the control sockets (short: socket paths are limited)."""
    folder = Path(tempfile.mkdtemp(prefix="ar-run-"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(folder))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
async def lines() -> AsyncIterator[Lines]:
    if sys.platform == "win32":
        pytest.skip("the children report over a Unix socket; these tests run on POSIX")
    folder = tempfile.mkdtemp(prefix="ar-")  # short: Unix socket paths are limited to ~100 bytes
    path = os.path.join(folder, "lines.sock")
    try:
        listener = await anyio.create_unix_listener(path)
        result = Lines(path)
        async with listener, anyio.create_task_group() as tg:
            tg.start_soon(listener.serve, result._serve, tg)
            yield result
            tg.cancel_scope.cancel()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


async def stop_process(process: anyio.abc.Process, signum: signal.Signals, grace: float = 5.0) -> None:
    """Ask ``process`` to stop with ``signum``; kill it if it has not gone within ``grace`` s."""
    if process.returncode is None:
        process.send_signal(signum)
        with anyio.move_on_after(grace):
            await process.wait()
    if process.returncode is None:
        process.kill()


async def next_event(
    events: EventStream, kind: EventKind | None = None, timeout: float = 10.0
) -> SupervisorEvent:
    """The next event (of ``kind``, skipping others), bounded: a test never waits forever."""
    with anyio.fail_after(timeout):
        return await events.next(kind)


def pid_gone(pid: int | None) -> bool:
    """Whether process ``pid`` has exited (a zombie not reaped yet counts as gone)."""
    if pid is None:
        return True
    try:
        return not _alive(psutil.Process(pid))
    except psutil.NoSuchProcess:
        return True


def make_supervisor(project: Project, command: list[str], **options: Any) -> Supervisor:
    """A supervisor for ``project`` with short, test-friendly timings (overridable)."""
    options.setdefault("watch", [project.root])
    options.setdefault("stop_timeout", 3.0)
    options.setdefault("debounce", 0.02)
    options.setdefault("debounce_max", 0.5)
    return Supervisor(command, env=project.env, **options)


class Project:
    """A throwaway project folder with a version file the children print."""

    def __init__(self, root: Path, lines: Lines) -> None:
        self.root = root
        self.version_file = root / "version.txt"
        self.version_file.write_text("1")
        # A clean environment: the suite itself may run under a supervisor (aioreload -- pytest).
        base = {key: value for key, value in os.environ.items() if not key.startswith("AIORELOAD_")}
        self.env = dict(base, TEST_REPORT_SOCK=lines.path, TEST_VERSION_FILE=str(self.version_file))

    def set_version(self, value: object) -> None:
        self.version_file.write_text(str(value))


@pytest.fixture
def project(tmp_path: Path, lines: Lines) -> Project:
    root = tmp_path / "project"
    root.mkdir()
    return Project(root.resolve(), lines)


def _alive(proc: psutil.Process) -> bool:
    try:
        return bool(proc.status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


def _wait_gone(procs: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Bounded wait for processes to exit; zombies count as gone (some inits never reap)."""
    alive = [p for p in procs if _alive(p)]
    if alive:
        _, alive = psutil.wait_procs(alive, timeout=timeout)
    return [p for p in alive if _alive(p)]


@pytest.fixture(autouse=True)
def no_leaked_processes() -> Iterator[None]:
    """Fail a test that leaves any process it started (child, grandchild, watchdog) running."""
    me = psutil.Process()
    before = {p.pid for p in me.children(recursive=True)}
    REPORTED.clear()
    yield
    suspects = [p for p in me.children(recursive=True) if p.pid not in before]
    for pid in REPORTED:
        with contextlib.suppress(psutil.NoSuchProcess):
            suspects.append(psutil.Process(pid))
    leaked = _wait_gone(suspects, timeout=2.0)
    for proc in leaked:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    assert not leaked, f"processes left running: {[(p.pid, p.cmdline()) for p in leaked if _alive(p)]}"

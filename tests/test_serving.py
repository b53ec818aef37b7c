"""Held sockets and zero-downtime reloads: real processes, real sockets, real HTTP.

The server child (``children/serving_server.py``) answers every request with
``<pid> <generation> <version>``. Clients in threads send requests on new connections while
the supervisor reloads it, and every single request must succeed: none refused, reset, timed
out or answered with anything but ``200``. Real servers too: uvicorn behind ``--fd 3`` (which
drops a connection it accepted but had not read when it stops, see ``UVICORN_DROPS``) and
gunicorn, which finds the socket in ``LISTEN_FDS`` and says ``READY=1``. Synchronisation is on
supervisor events, status lines and responses, each bounded by a timeout; nothing sleeps.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import psutil
import pytest
from conftest import Project, child, pid_gone
from conftest import make_supervisor as make
from test_cli import cli, cli_process

import aioreload
import aioreload._process
from aioreload import ConfigError, EventKind, Supervisor, SupervisorEvent

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(sys.platform == "win32", reason="held sockets are POSIX-only"),
]

HAS_PROC = Path("/proc/self/fd").is_dir()
FORMS = "HOST:PORT, [IPv6]:PORT, :PORT or unix:PATH"


# -- the server child and its project --------------------------------------------------------


class Serving:
    """A project for the server child, and its config file (outside the watched folder)."""

    command = child("serving_server")

    def __init__(self, project: Project, config_file: Path) -> None:
        self.project = project
        self.root = project.root
        self.config_file = config_file
        project.env["TEST_SERVING_CONFIG"] = str(config_file)
        self.configure()

    def configure(self, **config: object) -> None:
        """What the next child started does (see serving_server.py)."""
        self.config_file.write_text(json.dumps(config))

    def edit(self, name: str, text: str) -> None:
        """Replace a file in the project at once (a single change event, never a half-written file)."""
        staging = self.config_file.with_name(f"staging-{name}")
        staging.write_text(text)
        os.replace(staging, self.root / name)


@pytest.fixture
def serving(project: Project, tmp_path: Path) -> Serving:
    return Serving(project, tmp_path / "serving.json")


@pytest.fixture(params=["bash", "python"])
def trampoline(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Spawn held-socket children through the bash shim, or through the Python trampoline."""
    if request.param == "python":
        monkeypatch.setenv("AIORELOAD_NO_BASH", "1")
    else:
        monkeypatch.delenv("AIORELOAD_NO_BASH", raising=False)
        if shutil.which("bash") is None:
            pytest.skip("no bash here")
    aioreload._process._bash.cache_clear()
    assert (aioreload._process._bash() is None) == (request.param == "python")
    yield str(request.param)
    aioreload._process._bash.cache_clear()


# -- HTTP clients ------------------------------------------------------------------------------


class HttpError(Exception):
    """A response that is not a complete ``200``."""


def connect(address: str, timeout: float) -> socket.socket:
    """A connected client socket for ``host:port``, ``[v6]:port`` or ``unix:path``."""
    target: Any
    if address.startswith("unix:"):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        target = address[5:]
    else:
        host, _, port = address.rpartition(":")
        sock = socket.socket(socket.AF_INET6 if host.startswith("[") else socket.AF_INET)
        target = (host.strip("[]"), int(port))
    sock.settimeout(timeout)
    try:
        sock.connect(target)
    except BaseException:
        sock.close()
        raise
    return sock


def get(address: str, path: str = "/", timeout: float = 5.0) -> str:
    """``GET path`` on a new connection; the body of a complete ``200`` response, else raises."""
    with connect(address, timeout) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n".encode())
        data = bytearray()
        while chunk := sock.recv(65536):
            data += chunk
    head, sep, body = bytes(data).partition(b"\r\n\r\n")
    if not sep:
        raise HttpError(f"no complete response: {bytes(data)[:100]!r}")
    status, *fields = head.decode("latin-1").split("\r\n")
    if status.split()[1:2] != ["200"]:
        raise HttpError(f"{status!r}: {body[:200]!r}")
    headers = {name.strip().lower(): value.strip() for name, _, value in (f.partition(":") for f in fields)}
    length = headers.get("content-length")
    if length is not None and int(length) != len(body):
        raise HttpError(f"body cut short: {len(body)} of {length} bytes")
    return body.decode()


async def aget(address: str, path: str = "/") -> str:
    return await anyio.to_thread.run_sync(get, address, path)


async def info(address: str) -> dict[str, Any]:
    """What the serving child says about itself (``GET /info``)."""
    return dict(json.loads(await aget(address, "/info")))


class Load:
    """Clients in threads, each sending requests on a new connection each, until stopped.

    Every response body is kept in order of arrival (``bodies``); every failure (refused,
    reset, timeout, incomplete or non-200 response) in ``failures``.
    """

    def __init__(
        self, address: str, clients: int = 4, timeout: float = 5.0, tolerate: tuple[str, ...] = ()
    ) -> None:
        self.address = address
        self.tolerate = tolerate  # failures (by their start) that do not end a wait early
        self.timeout = timeout
        self.bodies: list[str] = []
        self.failures: list[str] = []
        self._threads = [threading.Thread(target=self._client, daemon=True) for _ in range(clients)]
        self._stop = threading.Event()
        self._go = threading.Event()
        self._go.set()
        self._parked = 0
        self._changed = threading.Condition()

    async def __aenter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        self._stop.set()
        self._go.set()
        await anyio.to_thread.run_sync(self._join)

    def _join(self) -> None:
        for thread in self._threads:
            thread.join(self.timeout + 5)
        assert not any(thread.is_alive() for thread in self._threads)

    def _client(self) -> None:
        while not self._stop.is_set():
            if not self._go.is_set():
                with self._changed:
                    self._parked += 1
                    self._changed.notify_all()
                self._go.wait()
                with self._changed:
                    self._parked -= 1
                continue
            began = time.monotonic()
            try:
                body = get(self.address, timeout=self.timeout)
            except (OSError, HttpError) as exc:
                failure = f"{type(exc).__name__}: {exc} (after {time.monotonic() - began:.3f} s)"
                with self._changed:
                    self.failures.append(failure)
                    self._changed.notify_all()
                continue
            with self._changed:
                self.bodies.append(body)
                self._changed.notify_all()

    def untolerated(self) -> list[str]:
        return [failure for failure in self.failures if not failure.startswith(self.tolerate)]

    def mark(self) -> int:
        """A position in ``bodies``: see :meth:`since`."""
        with self._changed:
            return len(self.bodies)

    def since(self, mark: int) -> list[str]:
        with self._changed:
            return self.bodies[mark:]

    async def served(self, check: Callable[[str], bool], mark: int = 0, timeout: float = 10.0) -> str:
        """The first body from ``mark`` on that passes ``check`` (waiting for it, bounded)."""

        def wait() -> str | None:
            deadline = time.monotonic() + timeout
            with self._changed:
                while True:
                    for body in self.bodies[mark:]:
                        if check(body):
                            return body
                    left = deadline - time.monotonic()
                    if left <= 0 or self.untolerated():
                        return None
                    self._changed.wait(left)

        found = await anyio.to_thread.run_sync(wait)
        assert found is not None, f"none passed; last: {self.bodies[-3:]}, failures: {self.failures[:5]}"
        return found

    async def served_by(self, generation: int, mark: int = 0) -> str:
        """A response of generation ``generation`` (the server child's second word)."""
        return await self.served(lambda body: body.split()[1] == str(generation), mark)

    async def more(self, count: int) -> list[str]:
        """Wait for ``count`` more responses; return them."""
        mark = self.mark()
        await self.served(lambda _: len(self.bodies) >= mark + count, mark)
        return self.since(mark)[:count]

    @asynccontextmanager
    async def paused(self) -> AsyncIterator[None]:
        """Every client parked (no connection of theirs open) inside the block."""

        def park() -> bool:
            with self._changed:
                return self._changed.wait_for(lambda: self._parked == len(self._threads), self.timeout + 5)

        self._go.clear()
        try:
            assert await anyio.to_thread.run_sync(park), "the clients did not park"
            yield
        finally:
            self._go.set()


# -- watching the supervisor -------------------------------------------------------------------


def live_children(exclude: int | None = None) -> list[psutil.Process]:
    """This process's direct children that run (not zombies), but ``exclude``."""
    alive = []
    for proc in psutil.Process().children():
        with contextlib.suppress(psutil.NoSuchProcess):
            if proc.pid != exclude and proc.status() != psutil.STATUS_ZOMBIE:
                alive.append(proc)
    return alive


class EventLog:
    """Every event of one supervisor in order, and the most children it had at any event.

    Warm spares (processes not started as a child yet, see ``Supervisor(spare=...)``) are
    counted apart, in ``most_spares``. Of the children, ``most_children`` counts every one
    alive; ``most_active`` leaves out those being retired (a STOPPING event, no STOPPED yet):
    the serving one and its successor.
    """

    def __init__(self, sup: Supervisor) -> None:
        self.sup = sup
        self.events: list[SupervisorEvent] = []
        self.most_children = 0
        self.most_active = 0
        self.most_spares = 0
        self._arrived = anyio.Event()

    async def follow(self, stream: aioreload.EventStream) -> None:
        retiring: set[int | None] = set()
        started: set[int | None] = set()
        async for event in stream:
            self.events.append(event)
            if event.kind is EventKind.STOPPING:
                retiring.add(event.pid)
            if event.kind is EventKind.STARTED:
                started.add(event.pid)
            # The supervisor runs in this process: its children are ours, its watchdog aside.
            alive = {proc.pid for proc in live_children(exclude=self.sup.guardian_pid)}
            children = {pid for pid in alive if pid in started}
            self.most_spares = max(self.most_spares, len(alive - children))
            self.most_children = max(self.most_children, len(children))
            self.most_active = max(self.most_active, len(children - retiring))
            self._arrived.set()
            self._arrived = anyio.Event()

    async def wait(self, kind: EventKind, generation: int, timeout: float = 10.0) -> SupervisorEvent:
        """The event ``kind`` of ``generation``, once it has arrived."""
        with anyio.fail_after(timeout):
            while True:
                for event in self.events:
                    if event.kind is kind and event.generation == generation:
                        return event
                await self._arrived.wait()

    def position(self, kind: EventKind, generation: int) -> int:
        for index, event in enumerate(self.events):
            if event.kind is kind and event.generation == generation:
                return index
        raise AssertionError(f"no {kind} event for generation {generation}: {self.summary()}")

    def before(self, first: tuple[EventKind, int], then: tuple[EventKind, int]) -> bool:
        """Whether event ``first`` (kind, generation) came before ``then``."""
        return self.position(*first) < self.position(*then)

    def kinds(self, kind: EventKind) -> list[int]:
        """The generations with a ``kind`` event, in order."""
        return [event.generation for event in self.events if event.kind is kind]

    def summary(self) -> list[str]:
        return [f"{event.kind}:{event.generation}" for event in self.events]


@asynccontextmanager
async def running(sup: Supervisor) -> AsyncIterator[EventLog]:
    """Enter ``sup`` with every one of its events logged from the first on."""
    log = EventLog(sup)
    with sup.events() as stream:
        async with anyio.create_task_group() as tg:
            tg.start_soon(log.follow, stream)
            async with sup:
                yield log
            tg.cancel_scope.cancel()


def open_fds() -> dict[int, str]:
    """This process's descriptors and what they are."""
    found = {}
    for name in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            found[int(name)] = os.readlink(f"/proc/self/fd/{name}")
    return found


def fd_growth(before: dict[int, str], after: dict[int, str]) -> dict[int, str]:
    """What ``after`` has in excess of ``before`` (nothing when the counts match)."""
    if len(after) <= len(before):
        return {}
    return {fd: what for fd, what in after.items() if before.get(fd) != what}


async def quiet_fds(load: Load, log: EventLog, retired: int) -> dict[int, str]:
    """The descriptors once generation ``retired`` is stopped and every client is parked."""
    await log.wait(EventKind.STOPPED, retired)
    await anyio.wait_all_tasks_blocked()  # its follower has closed its channel
    async with load.paused():
        return open_fds()


# -- the held socket as a child sees it ----------------------------------------------------


@pytest.mark.slow
async def test_child_gets_the_socket_at_fd_3(serving: Serving, trampoline: str) -> None:
    sup = make(serving.project, serving.command, watch=[], sockets=["127.0.0.1:0"])
    async with running(sup) as log:
        (address,) = sup.sockets
        host, _, port = address.rpartition(":")
        assert host == "127.0.0.1"
        assert int(port) > 0  # port 0: the port the kernel chose
        await log.wait(EventKind.READY, 1)
        seen = await info(address)
        assert seen["pid"] == sup.pid
        assert seen["listen_fds"] == "1"
        assert seen["listen_pid"] == str(sup.pid)  # the shim exec'd the command in its own pid
        assert seen["listen_fdnames"] == f"127.0.0.1_{port}"  # systemd's names have no ':'
        assert seen["sockets"] == [3]  # aioreload.sockets()
        assert seen["fds"] == [
            {"fd": 3, "family": "AF_INET", "address": [host, int(port)], "listening": True}
        ]
        assert await sup.reload(wait_ready=True)
        again = await info(address)
        assert again["pid"] == sup.pid != seen["pid"]
        assert again["listen_pid"] == str(sup.pid)
        assert again["fds"] == seen["fds"]  # the same socket, handed to the next child


@pytest.mark.slow
async def test_two_sockets_tcp_and_unix_at_fds_3_and_4(
    serving: Serving, trampoline: str, tmp_path: Path
) -> None:
    path = str(tmp_path / "app.sock")
    sup = make(serving.project, serving.command, watch=[], sockets=["127.0.0.1:0", f"unix:{path}"])
    async with running(sup) as log:
        tcp, unix = sup.sockets
        assert unix == f"unix:{path}"
        await log.wait(EventKind.READY, 1)
        by_tcp, by_unix = await info(tcp), await info(unix)
        assert by_tcp == by_unix  # one child behind both
        assert by_tcp["listen_fds"] == "2"
        assert by_tcp["listen_fdnames"] == f"{tcp.replace(':', '_')}:unix_{path}"
        assert by_tcp["sockets"] == [3, 4]
        assert [(fd["fd"], fd["family"], fd["listening"]) for fd in by_tcp["fds"]] == [
            (3, "AF_INET", True),
            (4, "AF_UNIX", True),
        ]
        assert by_tcp["fds"][1]["address"] == path
        body = await aget(unix)
        assert body.split()[:2] == [str(sup.pid), "1"]
    assert not os.path.exists(path)  # the supervisor bound it, so it removed it


@pytest.mark.slow
async def test_ipv6_socket(serving: Serving) -> None:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback here")
    sup = make(serving.project, serving.command, watch=[], sockets=["[::1]:0"])
    async with running(sup) as log:
        (address,) = sup.sockets
        assert re.fullmatch(r"\[::1\]:[1-9]\d*", address), address
        await log.wait(EventKind.READY, 1)
        seen = await info(address)
        assert seen["fds"][0]["family"] == "AF_INET6"
        assert seen["listen_pid"] == str(sup.pid)


@pytest.mark.slow
async def test_a_socket_of_the_caller_is_handed_on_and_left_open(serving: Serving) -> None:
    with socket.socket() as mine:
        mine.bind(("127.0.0.1", 0))
        mine.listen(64)
        address = f"127.0.0.1:{mine.getsockname()[1]}"
        sup = make(serving.project, serving.command, watch=[], sockets=[mine])
        async with running(sup) as log:
            assert sup.sockets == (address,)
            await log.wait(EventKind.READY, 1)
            assert (await aget(address)).split()[0] == str(sup.pid)
        assert mine.fileno() != -1  # the caller's to close
        # Still listening: a connection is queued although nothing accepts it.
        with connect(address, timeout=5):
            pass


@pytest.mark.slow
@pytest.mark.parametrize("how", ["env", "environ"])
async def test_child_gets_a_private_notify_socket_never_the_supervisors(
    serving: Serving, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, how: str
) -> None:
    fake = str(tmp_path / "systemd-notify")
    if how == "env":  # the supervisor's own variable reaches it through env=
        sup = Supervisor(
            serving.command, env={**serving.project.env, "NOTIFY_SOCKET": fake}, sockets=["127.0.0.1:0"]
        )
    else:  # the supervising process's environment, passed on by default
        for name, value in serving.project.env.items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("NOTIFY_SOCKET", fake)
        sup = Supervisor(serving.command, sockets=["127.0.0.1:0"])
    async with running(sup) as log:
        await log.wait(EventKind.READY, 1)
        seen = await info(sup.sockets[0])
    assert seen["notify_socket"]
    assert seen["notify_socket"] != fake
    assert seen["notify"] == {"is_socket": True, "folder_mode": "0o700"}


@pytest.mark.parametrize(
    ("address", "needle"),
    [
        ("nonsense", FORMS),
        ("127.0.0.1", FORMS),
        ("127.0.0.1:65536", FORMS),
        ("127.0.0.1:http", FORMS),
        ("", FORMS),
        ("unix:", FORMS),
        ("::1:8000", "in brackets"),
        ("[localhost]:8000", "not an IPv6 address"),
    ],
    ids=lambda value: repr(value) if value != FORMS else "forms",
)
def test_a_bad_address_is_one_line(address: str, needle: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Supervisor(Serving.command, sockets=[address])
    assert "\n" not in str(caught.value)
    assert needle in str(caught.value)


def test_sockets_given_as_one_string_is_one_line() -> None:
    with pytest.raises(ConfigError, match=r"use \['127.0.0.1:0'\]") as caught:
        Supervisor(Serving.command, sockets="127.0.0.1:0")
    assert "\n" not in str(caught.value)


async def test_an_address_in_use_fails_on_entering(serving: Serving) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        before = open_fds() if HAS_PROC else {}
        sup = make(serving.project, serving.command, sockets=[address])  # not bound yet: no error
        with pytest.raises(ConfigError) as caught:
            async with sup:
                pytest.fail("entered although the address is in use")
        assert str(caught.value) == f"cannot listen on {address}: Address already in use"
        assert not live_children()  # nothing was started, not even the watchdog
        if HAS_PROC:
            assert not fd_growth(before, open_fds())
        with pytest.raises(aioreload.SupervisorClosedError):
            await sup.reload()


async def test_state_is_closed_after_an_address_in_use(serving: Serving) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        sup = make(serving.project, serving.command, sockets=[f"127.0.0.1:{taken.getsockname()[1]}"])
        with pytest.raises(ConfigError):
            async with sup:
                pass
    assert sup.state == "closed"


# -- zero failed requests across reloads ---------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.parametrize("overlap", [True, False], ids=["overlap", "stop-first"])
async def test_100_reloads_under_load_fail_no_request(serving: Serving, overlap: bool) -> None:
    """4 clients, a new connection per request, throughout 100 reloads: every request succeeds.

    Every tenth reload is a file edit, the others ``reload(wait_ready=True)``. Each reload
    makes a new generation, which answers requests before the next reload begins.
    """
    children_before = {proc.pid for proc in psutil.Process().children(recursive=True)}
    fds_before = open_fds() if HAS_PROC else {}
    sup = make(serving.project, serving.command, sockets=["127.0.0.1:0"], overlap=overlap)
    async with running(sup) as log:
        (address,) = sup.sockets
        await log.wait(EventKind.READY, 1)
        async with Load(address) as load:
            await load.served_by(1)
            assert await sup.reload(wait_ready=True) is True
            await load.served_by(2)
            fds_after_one = await quiet_fds(load, log, retired=1) if HAS_PROC else {}
            for generation in range(3, 102):
                mark = load.mark()
                if generation % 10 == 0:
                    serving.edit("version.txt", str(generation))
                    await log.wait(EventKind.READY, generation)
                    body = await load.served_by(generation, mark)
                    assert body.split()[2] == str(generation)  # the edit is served
                else:
                    assert await sup.reload(wait_ready=True) is True
                    await load.served_by(generation, mark)
                assert sup.generation == generation
            fds_after_100 = await quiet_fds(load, log, retired=100) if HAS_PROC else {}
            assert len(load.bodies) > 500  # the clients really ran throughout
        assert load.failures == []
    assert sup.state == "closed"
    # Every generation started once, became ready, served, and was stopped by the supervisor.
    assert log.kinds(EventKind.STARTED) == list(range(1, 102))
    assert log.kinds(EventKind.READY) == list(range(1, 102))
    assert sorted(log.kinds(EventKind.STOPPED)) == list(range(1, 102))
    assert not log.kinds(EventKind.RELOAD_FAILED)
    assert not log.kinds(EventKind.EXITED)
    for generation in range(2, 102):
        if overlap:  # blue-green: the new one was ready before the old one got its stop signal
            assert log.before((EventKind.READY, generation), (EventKind.STOPPING, generation - 1))
        else:  # the old one was gone before the new one started
            assert log.before((EventKind.STOPPED, generation - 1), (EventKind.STARTED, generation))
    # The serving child and its successor; a retired one may still be finishing (see
    # test_overlapping_reloads_keep_at_most_two_children).
    assert log.most_active <= (2 if overlap else 1), log.most_active
    assert log.most_spares <= 2, log.most_spares  # the spare, and one being thrown away
    if not overlap:
        assert log.most_children == 1
    if HAS_PROC:
        assert not fd_growth(fds_after_one, fds_after_100), "descriptors grew while reloading"
        assert not fd_growth(fds_before, open_fds()), "descriptors left after the supervisor closed"
    left = [proc for proc in psutil.Process().children(recursive=True) if proc.pid not in children_before]
    _, alive = psutil.wait_procs(left, timeout=2)
    assert not [proc for proc in alive if proc.status() != psutil.STATUS_ZOMBIE]


@pytest.mark.slow
async def test_overlapping_reloads_keep_at_most_two_children(serving: Serving) -> None:
    """Back-to-back reloads of children that take a while to drain must not pile them up."""
    serving.configure(linger=1.5)
    sup = make(serving.project, serving.command, watch=[], sockets=["127.0.0.1:0"])
    async with running(sup) as log:
        await log.wait(EventKind.READY, 1)
        for generation in range(2, 6):
            assert await sup.reload(wait_ready=True) is True
            assert sup.generation == generation
    assert log.most_children <= 2, f"{log.most_children} children at once"


@pytest.mark.slow
@pytest.mark.parametrize("overlap", [True, False], ids=["overlap", "stop-first"])
async def test_a_request_in_flight_is_finished_by_the_old_child(serving: Serving, overlap: bool) -> None:
    sup = make(serving.project, serving.command, watch=[], sockets=["127.0.0.1:0"], overlap=overlap)
    async with running(sup) as log:
        (address,) = sup.sockets
        first = await log.wait(EventKind.READY, 1)
        async with anyio.create_task_group() as tg:
            answers: list[str] = []

            async def slow() -> None:
                answers.append(await aget(address, "/slow?1.0"))

            tg.start_soon(slow)
            with anyio.fail_after(5):  # until the old child has accepted it
                while await aget(address, "/inflight") != "1":
                    pass
            assert await sup.reload(wait_ready=True) is True
        stopped = await log.wait(EventKind.STOPPED, 1)
    assert answers[0].split()[:2] == [str(first.pid), "1"]  # answered by the old child, in full
    assert stopped.returncode == 0
    assert not stopped.killed


@pytest.mark.slow
async def test_a_child_that_never_says_ready_is_replaced_stop_first(serving: Serving) -> None:
    """Overlap needs readiness: without it the old child stops first, and no request is lost."""
    serving.configure(mode="silent")
    sup = make(serving.project, serving.command, watch=[], sockets=["127.0.0.1:0"], overlap=True)
    async with running(sup) as log:
        (address,) = sup.sockets
        async with Load(address) as load:
            await load.served_by(1)
            for generation in range(2, 12):
                mark = load.mark()
                assert await sup.reload() is True
                await load.served_by(generation, mark)
        assert load.failures == []
    assert not log.kinds(EventKind.READY)
    for generation in range(2, 12):
        assert log.before((EventKind.STOPPED, generation - 1), (EventKind.STARTED, generation))
    assert log.most_children <= 1


# -- overlapping reloads that fail ---------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("failure", ["syntax-error", "never-ready", "exit-0"])
async def test_a_failed_overlap_keeps_the_old_child_serving(serving: Serving, failure: str) -> None:
    serving.edit("serving_app.py", "MARK = 1\n")
    serving.configure(module="serving_app")
    ready_timeout = 1.0 if failure == "never-ready" else 30.0
    sup = make(
        serving.project, serving.command, watch=[], sockets=["127.0.0.1:0"], ready_timeout=ready_timeout
    )
    async with running(sup) as log:
        (address,) = sup.sockets
        old = await log.wait(EventKind.READY, 1)
        async with Load(address) as load:
            await load.served_by(1)
            mark = load.mark()
            if failure == "syntax-error":  # the module the child imports is broken
                serving.edit("serving_app.py", "MARK = (\n")
            else:
                serving.configure(module="serving_app", mode="never" if failure == "never-ready" else "exit0")
            assert await sup.reload() is False
            failed = await log.wait(EventKind.RELOAD_FAILED, 2)
            assert failed.pid is not None
            assert failed.pid != old.pid
            assert pid_gone(failed.pid)
            why = {
                "syntax-error": "the new child exited with code 1 before it was ready",
                "never-ready": "the new child was not ready after 1 s",
                "exit-0": "the new child exited with code 0 before it was ready",
            }[failure]
            assert failed.message == f"{why}; still serving [pid {old.pid}]"
            assert failed.returncode == (1 if failure == "syntax-error" else 0)
            assert (sup.pid, sup.generation) == (old.pid, 2)
            await load.more(20)  # the old child goes on serving...
            during = load.since(mark)
            assert {body.split()[0] for body in during} == {str(old.pid)}  # ... alone
            assert not log.kinds(EventKind.STOPPING)
            # The next good change swaps a new generation in.
            serving.edit("serving_app.py", "MARK = 2\n")
            serving.configure(module="serving_app")
            mark = load.mark()
            assert await sup.reload(wait_ready=True) is True
            assert sup.generation == 3
            await load.served_by(3, mark)
            await log.wait(EventKind.STOPPED, 1)
        assert load.failures == []
    assert log.before((EventKind.READY, 3), (EventKind.STOPPING, 1))
    assert log.kinds(EventKind.RELOAD_FAILED) == [2]


@pytest.mark.slow
async def test_ready_through_notify_socket_alone_overlaps(serving: Serving) -> None:
    """A program that never imports aioreload, but sends READY=1 as to systemd, is overlapped."""
    serving.configure(mode="notify")
    sup = make(serving.project, serving.command, watch=[], sockets=["127.0.0.1:0"])
    async with running(sup) as log:
        (address,) = sup.sockets
        await log.wait(EventKind.READY, 1)
        seen = await info(address)
        assert seen["aioreload_imported"] is False
        assert seen["listen_pid"] == str(seen["pid"])
        async with Load(address) as load:
            for generation in range(2, 7):
                mark = load.mark()
                assert await sup.reload(wait_ready=True) is True
                await load.served_by(generation, mark)
            await log.wait(EventKind.STOPPED, 5)
        assert load.failures == []
    assert log.kinds(EventKind.READY) == [1, 2, 3, 4, 5, 6]
    for generation in range(2, 7):
        assert log.before((EventKind.READY, generation), (EventKind.STOPPING, generation - 1))


# -- the command line ------------------------------------------------------------------------------


def held_address(line: str) -> str:
    """The address in a ``holding ADDRESS`` status line."""
    match = re.search(r"holding (\S+?)(?:,| ·|$)", line)
    assert match, line
    return match.group(1)


@pytest.mark.slow
@pytest.mark.usefixtures("runtime_dir")
async def test_cli_overlap_survives_a_broken_edit(serving: Serving) -> None:
    serving.edit("serving_app.py", "MARK = 1\n")
    serving.configure(module="serving_app")
    async with cli(serving.project, "--socket", "127.0.0.1:0", "-d", "0.02", "--", *serving.command) as proc:
        address = held_address(await proc.status("holding "))
        await proc.status("ready in")
        async with Load(address) as load:
            first = (await load.served_by(1)).split()[0]
            serving.edit("version.txt", "2")
            await proc.status(f"previous child [pid {first}] stopped in")
            second = (await load.served_by(2)).split()[0]
            serving.edit("serving_app.py", "MARK = (\n")
            line = await proc.status("error:")
            assert line == (
                "aioreload: error: the new child exited with code 1 before it was ready; "
                f"still serving [pid {second}] · waiting for changes"
            )
            mark = load.mark()
            await load.more(20)
            assert {body.split()[0] for body in load.since(mark)} == {second}
            serving.edit("serving_app.py", "MARK = 2\n")
            line = await proc.status(f"previous child [pid {second}] stopped in")
            assert line.endswith("(SIGINT)")
            await load.served_by(4, load.mark())
        assert load.failures == []


ASGI_APP = """\
import os

VERSION = {version!r}


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({{"type": "lifespan.startup.complete"}})
            elif message["type"] == "lifespan.shutdown":
                await send({{"type": "lifespan.shutdown.complete"}})
                return
    body = f"{{os.getpid()}} {{VERSION}}".encode()
    headers = [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]
    await send({{"type": "http.response.start", "status": 200, "headers": headers}})
    await send({{"type": "http.response.body", "body": body}})
"""

UVICORN = [sys.executable, "-m", "uvicorn", "--fd", "3", "--no-access-log", "app:app"]
# uvicorn's shutdown closes the connections it accepted whose request it has not read yet
# (``aioreload serve`` answers them instead): a client connected at that moment sees a reset
# or an empty reply; at most one per client per reload, since the next connection waits in
# the backlog. Refused connections and timeouts are never tolerated.
UVICORN_DROPS = ("ConnectionResetError", "HttpError: no complete response")


def versioned(version: str) -> Callable[[str], bool]:
    return lambda body: body.split()[-1] == version


@pytest.mark.slow
@pytest.mark.usefixtures("runtime_dir")
async def test_cli_socket_with_uvicorn_fd_3(serving: Serving) -> None:
    """uvicorn says nothing of readiness: reloads stop it first, and requests wait meanwhile."""
    serving.edit("app.py", ASGI_APP.format(version="1"))
    async with cli(serving.project, "--socket", "127.0.0.1:0", "-d", "0.02", "--", *UVICORN) as proc:
        address = held_address(await proc.status("holding "))
        async with Load(address, tolerate=UVICORN_DROPS) as load:
            first = await load.served(versioned("1"))
            for version in ("2", "3"):
                mark = load.mark()
                serving.edit("app.py", ASGI_APP.format(version=version))
                line = await proc.status("changed app.py · stopped in")
                await load.served(versioned(version), mark)
                proc.stderr.remove(line)
        assert load.untolerated() == []
        assert len(load.failures) <= 4 * 2, load.failures
    assert first.split()[0] != load.bodies[-1].split()[0]
    assert not [line for line in proc.stderr if "previous child" in line]  # no overlap


SOCKET_ACTIVATION = """\
import os, sys
fd = int(sys.argv[1])
if fd != 3:
    os.dup2(fd, 3)
    os.close(fd)
os.environ["LISTEN_FDS"] = "1"
os.environ["LISTEN_PID"] = str(os.getpid())
os.execv(sys.argv[2], sys.argv[2:])
"""


@pytest.mark.slow
@pytest.mark.usefixtures("runtime_dir")
async def test_cli_started_by_socket_activation_passes_the_socket_on(serving: Serving) -> None:
    """As systemd starts it: a listening socket at fd 3, LISTEN_FDS=1, LISTEN_PID = its own pid."""
    serving.edit("app.py", ASGI_APP.format(version="1"))
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(128)
        address = f"127.0.0.1:{listener.getsockname()[1]}"
        aioreload_cli = [sys.executable, "-m", "aioreload", "-w", str(serving.root), "-d", "0.02", "--"]
        command = [sys.executable, "-c", SOCKET_ACTIVATION, str(listener.fileno()), *aioreload_cli, *UVICORN]
        process = await anyio.open_process(
            command,
            stdin=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env={**serving.project.env, "XDG_RUNTIME_DIR": os.environ["XDG_RUNTIME_DIR"]},
            cwd=serving.root,
            pass_fds=(listener.fileno(),),
        )
        async with cli_process(process, None) as proc:
            line = await proc.status("holding ")
            assert held_address(line) == address  # not bound again: the socket it was given
            listener.close()  # from now on, only aioreload and its child hold it
            async with Load(address, tolerate=UVICORN_DROPS) as load:
                await load.served(versioned("1"))
                mark = load.mark()
                serving.edit("app.py", ASGI_APP.format(version="2"))
                await proc.status("changed app.py")
                await load.served(versioned("2"), mark)
                await load.more(10)
            assert load.untolerated() == []
            assert len(load.failures) <= 4, load.failures
            child = psutil.Process(int(load.bodies[-1].split()[0]))
            assert child.ppid() == process.pid  # aioreload's child, handed the socket anew:
            assert child.environ()["LISTEN_PID"] == str(child.pid)
            assert child.environ()["LISTEN_FDS"] == "1"


# -- other servers --------------------------------------------------------------------------------

WSGI_APP = """\
import os

VERSION = {version!r}


def app(environ, start_response):
    body = f"{{os.getpid()}} {{os.getppid()}} {{VERSION}}".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
"""


@pytest.mark.slow
@pytest.mark.timeout(90)
async def test_gunicorn_reads_listen_fds_and_overlaps_on_its_ready(serving: Serving) -> None:
    """gunicorn takes the socket from LISTEN_FDS and sends READY=1 on NOTIFY_SOCKET: overlap.

    ``--preload`` imports the app before READY=1 (else READY comes before the workers have
    imported it); SIGTERM is its graceful stop (SIGINT drops requests in flight);
    ``--no-control-socket``: two masters side by side would share the default control path.
    """
    config = pytest.importorskip("gunicorn.config")
    serving.edit("wsgi_app.py", WSGI_APP.format(version="1"))
    # Recent gunicorn (27 here) binds a control socket at one default path per user.
    no_control = ["--no-control-socket"] if hasattr(config, "ControlSocketDisable") else []
    command = [
        sys.executable, "-m", "gunicorn", "--preload", *no_control, "--workers", "2",
        "--graceful-timeout", "5", "wsgi_app:app",
    ]  # fmt: skip
    sup = make(
        serving.project, command, watch=[], cwd=serving.root, sockets=["127.0.0.1:0"], stop_signal="SIGTERM"
    )
    async with running(sup) as log:
        (address,) = sup.sockets
        await log.wait(EventKind.READY, 1)
        async with Load(address) as load:
            masters = {1: sup.pid}
            await load.served(lambda body: body.split()[1] == str(masters[1]))
            for generation in range(2, 6):
                mark = load.mark()
                serving.edit("wsgi_app.py", WSGI_APP.format(version=str(generation)))
                assert await sup.reload(wait_ready=True) is True
                masters[generation] = sup.pid
                body = await load.served(versioned(str(generation)), mark)
                assert body.split()[1] == str(sup.pid)  # a worker of the new master
            # A broken app fails the new master before READY=1: the old one keeps serving.
            serving.edit("wsgi_app.py", "VERSION = (\n")
            assert await sup.reload() is False
            failed = await log.wait(EventKind.RELOAD_FAILED, 6)
            assert f"still serving [pid {masters[5]}]" in failed.message
            mark = load.mark()
            await load.more(20)
            assert {body.split()[1] for body in load.since(mark)} == {str(masters[5])}
            await log.wait(EventKind.STOPPED, 4)
        assert load.failures == []
    for generation in range(2, 6):
        assert log.before((EventKind.READY, generation), (EventKind.STOPPING, generation - 1))


# -- command-line errors -------------------------------------------------------------------------


@pytest.mark.usefixtures("runtime_dir")
@pytest.mark.parametrize("address", ["nonsense", "127.0.0.1", "localhost:99999", "unix:"])
async def test_cli_bad_socket_is_one_line_exit_2(project: Project, address: str) -> None:
    async with cli(project, "--socket", address, "--", "true") as proc:
        assert await proc.exit_code() == 2
    assert len(proc.stderr) == 1, proc.stderr
    assert proc.stderr[0].startswith("aioreload: error: ")
    assert FORMS in proc.stderr[0]


@pytest.mark.usefixtures("runtime_dir")
async def test_cli_socket_in_use_is_one_line_exit_2(project: Project) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        async with cli(project, "--socket", address, "--", *child("ready_wait")) as proc:
            assert await proc.exit_code() == 2
    assert proc.stderr == [f"aioreload: error: cannot listen on {address}: Address already in use"]


@pytest.mark.usefixtures("runtime_dir")
@pytest.mark.parametrize("program", ["no-such-program-here", "./not-here.sh"])
async def test_cli_socket_with_a_missing_command_is_one_line_exit_127(project: Project, program: str) -> None:
    """Held sockets start the child through a shim: a missing program is still named, as exec would."""
    async with cli(project, "--socket", "127.0.0.1:0", "--", program) as proc:
        assert await proc.exit_code() == 127
    assert proc.stderr == [
        f"aioreload: error: command not found: {program!r} (is it installed and on PATH?)"
    ], proc.stderr

"""Under systemd: the notify protocol, reload-only mode, and socket activation, for real.

A datagram socket bound by the test stands in for systemd's ``NOTIFY_SOCKET`` (a path, and
Linux's abstract namespace); messages are read in the order aioreload sent them, so "not
before" is proven by order, never by a timed window. The last test uses Debian's real
``systemd-socket-activate`` when it is installed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from conftest import Lines, Project, child
from test_serving import get

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="systemd is Linux's"),
    pytest.mark.usefixtures("runtime_dir"),
]

TIMEOUT = 15.0


class Systemd:
    """The test's stand-in for systemd: a datagram socket aioreload notifies."""

    def __init__(self, sock: socket.socket, address: str) -> None:
        self.sock = sock
        self.address = address  # as NOTIFY_SOCKET spells it
        self.messages: list[dict[str, str]] = []

    def next(self, timeout: float = TIMEOUT, *, watchdog: bool = False) -> dict[str, str]:
        """The next message (``WATCHDOG=1`` pings skipped unless asked for)."""
        deadline = time.monotonic() + timeout
        while True:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                pytest.fail(f"no notify message in {timeout} s; so far: {self.messages}")
            fields = dict(line.partition("=")[::2] for line in data.decode().splitlines())
            self.messages.append(fields)
            if watchdog or fields != {"WATCHDOG": "1"}:
                return fields

    def until(self, key: str, value: str | None = None) -> tuple[dict[str, str], list[dict[str, str]]]:
        """Read until a message with ``key`` (``=value``); it, and the messages before it."""
        before: list[dict[str, str]] = []
        while True:
            message = self.next()
            if key in message and (value is None or message[key] == value):
                return message, before
            before.append(message)


@pytest.fixture(params=["path", "abstract"])
def systemd(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Systemd]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if request.param == "path":
        address = str(tmp_path / "notify")
        sock.bind(address)
    else:
        name = f"aioreload-test-{uuid.uuid4().hex}"
        sock.bind("\0" + name)
        address = "@" + name
    with sock:
        yield Systemd(sock, address)


@contextlib.contextmanager
def aioreload(
    project: Project, systemd: Systemd, *args: str, **env: str
) -> Iterator[subprocess.Popen[bytes]]:
    """``aioreload ARGS`` in the project, as systemd starts it; stopped and reaped at the end."""
    process = subprocess.Popen(
        [sys.executable, "-m", "aioreload", *args],
        cwd=project.root,
        env={
            **project.env,
            "XDG_RUNTIME_DIR": os.environ["XDG_RUNTIME_DIR"],
            "NOTIFY_SOCKET": systemd.address,
            **env,
        },
        stdin=subprocess.DEVNULL,
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def write_module(project: Project, text: str) -> None:
    staging = project.root.parent / f"staging-{project.root.name}.py"
    staging.write_text(text)
    staging.replace(project.root / "bot.py")


BOT = """\
import asyncio, json, os, sys
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _report import report

async def main():
    report("BOT", os.getpid(), os.environ["AIORELOAD_GENERATION"], os.environ["AIORELOAD_REASON"],
           json.dumps({k: os.environ.get(k) for k in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")}))
    await asyncio.Event().wait()
"""


@pytest.fixture
def bot(project: Project) -> Project:
    shutil.copy(Path(child("arch_child")[1]).parent / "_report.py", project.root / "_report.py")
    write_module(project, BOT)
    return project


@pytest.mark.slow
@pytest.mark.timeout(60)
async def test_ready_reloading_ready_stopping_in_order(bot: Project, systemd: Systemd, lines: Lines) -> None:
    with aioreload(bot, systemd, "--no-watch", "bot:main") as process:
        first = await lines.next("BOT")
        _ready, before = await anyio.to_thread.run_sync(systemd.until, "READY", "1")
        assert any(m.get("STATUS", "").startswith("started bot:main") for m in before), before
        # The child never sees systemd's socket, nor the watchdog's variables.
        seen = " ".join(first[4:])
        assert systemd.address not in seen
        assert '"WATCHDOG_USEC": null' in seen
        assert '"NOTIFY_SOCKET": "/' in seen  # its own private one

        # A reload asked by systemd (ExecReload=kill -HUP, or Type=notify-reload's SIGHUP).
        sent = time.monotonic_ns() // 1000
        process.send_signal(signal.SIGHUP)
        reloading, _ = await anyio.to_thread.run_sync(systemd.until, "RELOADING", "1")
        assert abs(int(reloading["MONOTONIC_USEC"]) - sent) < 1_000_000
        _ready_again, between = await anyio.to_thread.run_sync(systemd.until, "READY", "1")
        second = await lines.next("BOT")
        assert second[2:4] == ["2", "trigger"]
        assert any("reload requested" in m.get("STATUS", "") for m in between), between

        # A reload that fails (the new code does not import): READY=1 all the same, saying so.
        write_module(bot, BOT + "\ndef broken(:\n")
        process.send_signal(signal.SIGHUP)
        await anyio.to_thread.run_sync(systemd.until, "RELOADING", "1")
        failed, _ = await anyio.to_thread.run_sync(systemd.until, "READY", "1")
        assert failed.get("STATUS", "").startswith("reload failed: the new code did not import"), failed

        process.send_signal(signal.SIGTERM)
        await anyio.to_thread.run_sync(systemd.until, "STOPPING", "1")
        await anyio.to_thread.run_sync(process.wait, TIMEOUT)  # exits with its child's code


@pytest.mark.slow
@pytest.mark.timeout(60)
async def test_no_watch_reloads_only_when_asked(bot: Project, systemd: Systemd, lines: Lines) -> None:
    with aioreload(bot, systemd, "--no-watch", "bot:main") as process:
        assert (await lines.next("BOT"))[2:4] == ["1", "start"]
        await anyio.to_thread.run_sync(systemd.until, "READY", "1")
        write_module(bot, BOT + "\n# edited\n")  # no reload for this...
        process.send_signal(signal.SIGHUP)  # ...so the next child is the one SIGHUP asked for
        assert (await lines.next("BOT"))[2:4] == ["2", "trigger"]


@pytest.mark.slow
@pytest.mark.timeout(60)
async def test_watchdog_pings_while_healthy(bot: Project, systemd: Systemd) -> None:
    with aioreload(bot, systemd, "--no-watch", "bot:main", WATCHDOG_USEC="100000"):
        await anyio.to_thread.run_sync(systemd.until, "READY", "1")
        pings = 0
        while pings < 3:
            if await anyio.to_thread.run_sync(lambda: systemd.next(watchdog=True)) == {"WATCHDOG": "1"}:
                pings += 1


@pytest.mark.timeout(30)
async def test_no_watchdog_for_another_process(bot: Project, systemd: Systemd) -> None:
    """WATCHDOG_PID names someone else: no pings, proven by the next message being the reload's."""
    with aioreload(
        bot, systemd, "--no-watch", "bot:main", WATCHDOG_USEC="50000", WATCHDOG_PID="1"
    ) as process:
        await anyio.to_thread.run_sync(systemd.until, "READY", "1")
        process.send_signal(signal.SIGHUP)
        message = await anyio.to_thread.run_sync(lambda: systemd.next(watchdog=True))
        assert message.get("RELOADING") == "1", message


APP = """\
import asyncio, os

async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                while not os.path.exists("go"):  # the test says when startup may complete
                    await asyncio.sleep(0.01)
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    body = str(os.getpid()).encode()
    headers = [(b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})
"""


@pytest.mark.slow
@pytest.mark.timeout(60)
async def test_serve_is_ready_for_systemd_only_after_lifespan_startup(
    project: Project, systemd: Systemd
) -> None:
    (project.root / "app.py").write_text(APP)
    with aioreload(project, systemd, "--no-watch", "--socket", "127.0.0.1:0", "serve", "app:app"):
        started, _ = await anyio.to_thread.run_sync(systemd.until, "STATUS")
        assert "holding 127.0.0.1:" in started["STATUS"]
        address = started["STATUS"].split("holding ")[1].split(" ")[0]
        (project.root / "go").touch()
        _, before = await anyio.to_thread.run_sync(systemd.until, "READY", "1")
        # Status lines come before their READY=1: the child's readiness was reported first.
        assert any(m.get("STATUS", "").startswith("ready in") for m in before), before
        assert (await anyio.to_thread.run_sync(get, address)).isdigit()


UVICORN_APP = """\
import os

async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    body = str(os.getpid()).encode()
    headers = [(b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})
"""


@pytest.mark.slow
@pytest.mark.timeout(60)
@pytest.mark.skipif(
    shutil.which("systemd-socket-activate") is None, reason="systemd-socket-activate is not installed"
)
async def test_real_systemd_socket_activate_and_a_reload(project: Project, systemd: Systemd) -> None:
    """systemd's own launcher binds the port; aioreload hands it to `uvicorn --fd 3`."""
    (project.root / "app.py").write_text(UVICORN_APP)
    with socket.socket() as probe:  # a free port for the launcher to bind
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    address = f"127.0.0.1:{port}"
    command = [
        "systemd-socket-activate", "-l", address, "-E", f"NOTIFY_SOCKET={systemd.address}",
        sys.executable, "-m", "aioreload", "--no-watch", "--",
        sys.executable, "-m", "uvicorn", "--fd", "3", "app:app",
    ]  # fmt: skip
    process = subprocess.Popen(
        command,
        cwd=project.root,
        env={**project.env, "XDG_RUNTIME_DIR": os.environ["XDG_RUNTIME_DIR"]},
        stdin=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    drain = threading.Thread()
    try:
        assert process.stderr is not None
        said = await anyio.to_thread.run_sync(process.stderr.readline)  # "Listening on ... as 3."
        assert b"Listening on" in said, said
        drain = threading.Thread(target=process.stderr.read, daemon=True)  # the rest: read, dropped
        drain.start()
        # The launcher execs aioreload on the first connection, which waits in the backlog.
        first = await anyio.to_thread.run_sync(lambda: get(address, timeout=TIMEOUT))
        _, before = await anyio.to_thread.run_sync(systemd.until, "READY", "1")
        assert any(f"holding 127.0.0.1:{port}" in m.get("STATUS", "") for m in before), before
        process.send_signal(signal.SIGHUP)  # the launcher exec'd aioreload: same pid
        await anyio.to_thread.run_sync(systemd.until, "RELOADING", "1")
        await anyio.to_thread.run_sync(systemd.until, "READY", "1")
        second = await anyio.to_thread.run_sync(
            lambda: get(address, timeout=TIMEOUT)
        )  # never refused: the socket stayed open
        assert second != first
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if drain.ident is not None:
            drain.join(TIMEOUT)  # end of file once every writer is gone
        if process.stderr is not None:
            process.stderr.close()

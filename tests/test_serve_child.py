"""The child of ``aioreload serve``: ``python -m aioreload._serve MODULE:APP`` on held sockets.

The test plays the supervisor: it binds a listening socket, hands it over as descriptor 3
with ``LISTEN_FDS``/``LISTEN_PID`` (a tiny launcher moves it to 3, names its own pid and
execs, so the pid it names is the server's), and gives the child a private channel
(``AIORELOAD_FD``) to read ``{"op":"ready"}`` from. Real processes, real sockets, real HTTP.

Synchronisation is on lines and sockets, never on sleeps: the app prints what it does, waits
for a line on its stdin where the test must act in between, and uvicorn logs
``Shutting down`` in the same step in which it asks every connection to stop.
"""

from __future__ import annotations

import contextlib
import fcntl
import http.client
import importlib.util
import os
import re
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest

from aioreload._serve import FIRST_REQUEST_GRACE, NO_SOCKETS, NO_UVICORN

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(sys.platform == "win32", reason="socket activation passes descriptors (POSIX)"),
    pytest.mark.skipif(importlib.util.find_spec("uvicorn") is None, reason="needs uvicorn"),
]

WAIT = 10.0  # bound of every wait for the child; the tests take well under a second each

# Moves the listening socket to descriptor 3, names its own pid in LISTEN_PID, then execs the
# server: the pid stays, as under a supervisor's fork + exec.
LAUNCH = """\
import os, sys
fd = int(sys.argv[1])
if fd != 3:
    os.dup2(fd, 3)
    os.close(fd)
os.environ["LISTEN_PID"] = str(os.getpid())
os.execv(sys.executable, [sys.executable, *sys.argv[2:]])
"""

APP = """\
import asyncio
import os
import sys


def say(*words):
    print(*words, flush=True)


async def stdin_line():
    return await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)


async def app(scope, receive, send):
    if scope["type"] == "websocket":
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        while (await receive())["type"] != "websocket.disconnect":
            pass
        return
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                say("startup: begun")
                if os.environ.get("TEST_HOLD_STARTUP"):
                    await stdin_line()
                if os.environ.get("TEST_FAIL_STARTUP"):
                    # as Starlette and FastAPI do: report the failure, then raise
                    await send({"type": "lifespan.startup.failed", "message": "startup failed on purpose"})
                    raise RuntimeError("startup failed on purpose")
                say("startup: complete")
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                say("shutdown: complete")
                await send({"type": "lifespan.shutdown.complete"})
                return
    path = scope["path"]
    if path == "/slow":
        say("slow: started")
        await stdin_line()
    loaded = sorted(
        name.rsplit(".", 1)[1][: -len("_impl")]
        for name in sys.modules
        if name.startswith("uvicorn.protocols.http.") and name.endswith("_impl")
    )
    body = f"{path} {','.join(loaded)}".encode()
    headers = [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})
"""


def _clean_env(**extra: str) -> dict[str, str]:
    """This environment less anything a supervisor of the test run itself may have set."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("AIORELOAD_", "LISTEN_", "TEST_"))
    }
    env.update(extra)
    return env


def _python_path(first: Path) -> str:
    """``PYTHONPATH`` with ``first`` in front of what the test run has."""
    return os.pathsep.join(filter(None, [str(first), os.environ.get("PYTHONPATH")]))


def _high_fd(sock: socket.socket) -> int:
    """A copy of ``sock``'s descriptor at 10 or above: never the 3 the launcher writes over."""
    return fcntl.fcntl(sock.fileno(), fcntl.F_DUPFD_CLOEXEC, 10)


class _Output:
    """The lines of one of the child's output streams, read by a thread as they come."""

    def __init__(self, stream: IO[str]) -> None:
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()

    def wait_for(self, text: str, timeout: float = WAIT) -> None:
        """Wait until a line containing ``text`` has arrived (at any time)."""
        with self._changed:
            found = self._changed.wait_for(lambda: any(text in line for line in self.lines), timeout)
        assert found, f"no line with {text!r} within {timeout} s"

    def join(self) -> None:
        self._thread.join(WAIT)

    @property
    def text(self) -> str:
        with self._changed:
            return "\n".join(self.lines)


class Served:
    """``python -m aioreload._serve app:app`` started as ``aioreload serve`` starts it."""

    def __init__(self, folder: Path, protocol: str | None = None, **env: str) -> None:
        if protocol == "httptools" and importlib.util.find_spec("httptools") is None:
            pytest.skip("httptools is not installed")
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address = self.listener.getsockname()
        self.channel, child_end = socket.socketpair()
        self._clients: list[socket.socket] = []
        listener_fd, channel_fd = _high_fd(self.listener), _high_fd(child_end)
        child_end.close()
        if protocol == "h11":  # uvicorn's "auto" picks httptools whenever it imports: hide it
            hidden = folder.parent / "hide-httptools"
            hidden.mkdir(exist_ok=True)
            (hidden / "httptools.py").write_text("raise ImportError('hidden by the test')\n")
            env["PYTHONPATH"] = _python_path(hidden)
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", LAUNCH, str(listener_fd), "-m", "aioreload._serve", "app:app"],
                cwd=folder,
                env=_clean_env(LISTEN_FDS="1", AIORELOAD_FD=str(channel_fd), **env),
                pass_fds=(listener_fd, channel_fd),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        finally:
            os.close(listener_fd)
            os.close(channel_fd)  # the child's end is the child's alone: its exit is our EOF
        assert self.proc.stdout is not None
        assert self.proc.stderr is not None
        self.stdout = _Output(self.proc.stdout)
        self.stderr = _Output(self.proc.stderr)

    def output(self) -> str:
        """Everything the child printed, for failure messages."""
        return f"--- stdout\n{self.stdout.text}\n--- stderr\n{self.stderr.text}"

    def ready(self) -> None:
        """Wait for the child's readiness report: exactly one ``ready`` message."""
        self.channel.settimeout(WAIT)
        data = b""
        while not data.endswith(b"\n"):
            chunk = self.channel.recv(4096)
            assert chunk, f"the child closed its channel without reporting ready\n{self.output()}"
            data += chunk
        assert data == b'{"op":"ready"}\n', self.output()

    def channel_rest(self) -> bytes:
        """What else the child sent on its channel until it closed it (it has exited)."""
        self.channel.settimeout(WAIT)
        rest = b""
        while chunk := self.channel.recv(4096):
            rest += chunk
        return rest

    def release(self) -> None:
        """Release the app where it waits for a line on its stdin."""
        assert self.proc.stdin is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()

    def connect(self) -> socket.socket:
        client = socket.create_connection(self.address, timeout=WAIT)
        self._clients.append(client)
        return client

    def wait(self, timeout: float = WAIT) -> int:
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the child did not exit within {timeout} s\n{self.output()}")
        self.stdout.join()
        self.stderr.join()
        return code

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(WAIT)
        self.stdout.join()
        self.stderr.join()
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        for sock in (self.listener, self.channel, *self._clients):
            sock.close()


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[type[Served]]:
    """Start served children (``serve(folder, protocol, **env)``); all are killed at the end."""
    started: list[Served] = []

    class Tracked(Served):
        def __init__(self, folder: Path, protocol: str | None = None, **env: str) -> None:
            super().__init__(folder, protocol, **env)
            started.append(self)

    yield Tracked
    for child in started:
        child.close()


@pytest.fixture
def project(tmp_path: Path) -> Path:
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "app.py").write_text(APP)
    return folder


def get(client: socket.socket, path: str) -> tuple[http.client.HTTPResponse, bytes]:
    """Send ``GET path`` on ``client``; the response and its body."""
    client.sendall(f"GET {path} HTTP/1.1\r\nHost: test\r\n\r\n".encode())
    response = http.client.HTTPResponse(client, method="GET")
    response.begin()
    return response, response.read()


def assert_closed_by_server(client: socket.socket) -> None:
    """The server closed ``client``'s connection (end of file, within the wait bound)."""
    client.settimeout(WAIT)
    assert client.recv(1) == b""


PROTOCOLS = pytest.mark.parametrize("protocol", ["h11", "httptools"])


# == starting ==============================================================================


@pytest.mark.timeout(30)
def test_serves_and_reports_ready_only_after_lifespan_startup(serve: type[Served], project: Path) -> None:
    child = serve(project, "h11", TEST_HOLD_STARTUP="1")
    child.stdout.wait_for("startup: begun")
    # Lifespan startup is held until we release it: nothing may have been reported yet.
    assert select.select([child.channel], [], [], 0)[0] == [], child.output()
    child.release()
    child.ready()
    child.stdout.wait_for("startup: complete")  # printed just before completing (another pipe)
    host, port = child.address
    child.stderr.wait_for(f"Uvicorn running on http://{host}:{port}")

    client = child.connect()
    response, body = get(client, "/hello")
    assert (response.status, body) == (200, b"/hello h11"), child.output()

    child.proc.send_signal(signal.SIGINT)
    assert child.wait() == 0, child.output()
    assert "shutdown: complete" in child.stdout.text, child.output()
    assert child.channel_rest() == b"", "readiness is reported once"


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    ("name", "source", "expected"),
    [
        pytest.param(
            "app.py",
            "x = 1\ndef broken(:\n    pass\n",
            [r'File ".*[/\\]broken[/\\]app\.py", line 2', r"^SyntaxError: "],
            id="syntax-error",
        ),
        pytest.param(
            "app.py",
            "import no_such_module_here\n",
            [r'File ".*app\.py", line 1', r"^ModuleNotFoundError: No module named 'no_such_module_here'"],
            id="import-error",
        ),
        pytest.param("other.py", "", [r'Could not import module "app"'], id="no-module"),
        pytest.param("app.py", "", [r'Attribute "app" not found in module "app"'], id="no-attribute"),
    ],
)
def test_an_app_that_does_not_import_exits_1_with_the_reason_and_is_never_ready(
    serve: type[Served], tmp_path: Path, name: str, source: str, expected: list[str]
) -> None:
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / name).write_text(source)
    child = serve(folder)
    assert child.wait() == 1, child.output()
    for pattern in expected:
        assert re.search(pattern, child.stderr.text, re.MULTILINE), child.output()
    assert child.channel_rest() == b"", f"reported ready\n{child.output()}"


@pytest.mark.timeout(30)
def test_a_failed_lifespan_startup_exits_3_and_is_never_ready(serve: type[Served], project: Path) -> None:
    child = serve(project, TEST_FAIL_STARTUP="1")
    assert child.wait() == 3, child.output()
    assert "startup failed on purpose" in child.stderr.text, child.output()
    assert child.channel_rest() == b"", f"reported ready\n{child.output()}"


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    "env", [{}, {"LISTEN_FDS": "1", "LISTEN_PID": "1"}], ids=["no-variables", "another-pid"]
)
def test_without_sockets_exits_2_with_one_line_naming_the_fix(project: Path, env: dict[str, str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "aioreload._serve", "app:app"],
        cwd=project,
        env=_clean_env(**env),
        capture_output=True,
        text=True,
        timeout=WAIT,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [NO_SOCKETS]
    assert "aioreload serve" in NO_SOCKETS
    assert "LISTEN_FDS" in NO_SOCKETS


@pytest.mark.timeout(30)
def test_without_uvicorn_exits_2_with_the_install_hint(project: Path, tmp_path: Path) -> None:
    missing = tmp_path / "no-uvicorn"
    missing.mkdir()
    (missing / "uvicorn.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'uvicorn'\", name='uvicorn')\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "aioreload._serve", "app:app"],
        cwd=project,
        env=_clean_env(PYTHONPATH=_python_path(missing)),
        capture_output=True,
        text=True,
        timeout=WAIT,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [NO_UVICORN]
    assert "pip install 'aioreload[serve]'" in NO_UVICORN


# == stopping ==============================================================================


@pytest.mark.timeout(30)
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_an_idle_server_exits_0_soon_after_the_stop_signal(
    serve: type[Served], project: Path, signum: signal.Signals
) -> None:
    child = serve(project)
    child.ready()
    child.proc.send_signal(signum)
    assert child.wait(timeout=3.0) == 0, child.output()
    assert "shutdown: complete" in child.stdout.text, child.output()
    assert "Traceback" not in child.stderr.text, child.output()


@pytest.mark.timeout(30)
@PROTOCOLS
def test_a_connection_accepted_before_the_stop_is_answered_if_its_request_comes_late(
    serve: type[Served], project: Path, protocol: str
) -> None:
    child = serve(project, protocol)
    child.ready()
    fresh = child.connect()  # sends nothing until the stop has begun
    # A request on a second connection: the kernel hands connections over in order, so once
    # it is answered, the server has accepted `fresh` too.
    probe = child.connect()
    response, body = get(probe, "/probe")
    assert (response.status, body) == (200, f"/probe {protocol}".encode()), child.output()
    assert response.getheader("connection") is None  # kept alive

    child.proc.send_signal(signal.SIGINT)
    # uvicorn closes idle keep-alive connections in the same step in which it asks `fresh`
    # to stop: from here on, the stop has reached `fresh`.
    assert_closed_by_server(probe)

    response, body = get(fresh, "/late")
    assert (response.status, body) == (200, f"/late {protocol}".encode()), child.output()
    assert response.getheader("connection") == "close", response.getheaders()
    assert_closed_by_server(fresh)
    assert child.wait() == 0, child.output()


@pytest.mark.timeout(30)
@PROTOCOLS
def test_a_connection_that_never_sends_is_closed_after_the_grace(
    serve: type[Served], project: Path, protocol: str
) -> None:
    child = serve(project, protocol)
    child.ready()
    fresh = child.connect()
    probe = child.connect()
    assert get(probe, "/probe")[0].status == 200  # `fresh` is accepted (see above)

    started = time.monotonic()
    child.proc.send_signal(signal.SIGINT)
    assert_closed_by_server(probe)  # idle keep-alive: closed at once
    assert_closed_by_server(fresh)
    waited = time.monotonic() - started
    assert waited >= FIRST_REQUEST_GRACE, f"closed after {waited:.2f} s, before the grace ended"
    assert child.wait() == 0, child.output()


@pytest.mark.timeout(30)
@PROTOCOLS
def test_a_request_in_flight_during_the_stop_completes(
    serve: type[Served], project: Path, protocol: str
) -> None:
    child = serve(project, protocol)
    child.ready()
    client = child.connect()
    client.sendall(b"GET /slow HTTP/1.1\r\nHost: test\r\n\r\n")
    child.stdout.wait_for("slow: started")

    child.proc.send_signal(signal.SIGINT)
    child.stderr.wait_for("Shutting down")  # logged in the step that asks connections to stop
    assert child.proc.poll() is None
    child.release()

    response = http.client.HTTPResponse(client, method="GET")
    response.begin()
    assert response.status == 200, child.output()
    assert response.read() == f"/slow {protocol}".encode()
    assert response.getheader("connection") == "close", response.getheaders()
    assert_closed_by_server(client)
    assert child.wait() == 0, child.output()


@pytest.mark.timeout(30)
@PROTOCOLS
def test_a_connection_upgraded_to_a_websocket_in_the_grace_is_closed_with_1012(
    serve: type[Served], project: Path, protocol: str
) -> None:
    if not any(importlib.util.find_spec(name) for name in ("websockets", "wsproto")):
        pytest.skip("no WebSocket library is installed (websockets or wsproto)")
    child = serve(project, protocol)
    child.ready()
    fresh = child.connect()
    probe = child.connect()
    assert get(probe, "/probe")[0].status == 200  # `fresh` is accepted (see above)
    child.proc.send_signal(signal.SIGINT)
    assert_closed_by_server(probe)

    fresh.sendall(
        b"GET /ws HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    reader = fresh.makefile("rb")
    assert reader.readline().startswith(b"HTTP/1.1 101 "), child.output()
    while reader.readline() not in (b"\r\n", b""):
        pass
    opcode, length = reader.read(2)
    assert opcode == 0x88, f"a close frame, not {opcode:#x}"  # FIN + close, unmasked
    assert int.from_bytes(reader.read(length)[:2], "big") == 1012  # "service restart"
    assert reader.read(1) == b""
    reader.close()
    assert child.wait() == 0, child.output()

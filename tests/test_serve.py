"""``aioreload serve``: uvicorn on held sockets, reloaded without refusing or dropping a request.

The child itself (``aioreload._serve``) is tested alone in ``test_serve_child.py``; here it
runs under a real supervisor, with real HTTP clients throughout (helpers from
``test_serving.py``).
"""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import anyio
import pytest
from conftest import Project
from conftest import make_supervisor as make
from test_cli import cli
from test_serving import Load, connect, get, running

from aioreload import EventKind, Supervisor

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(sys.platform == "win32", reason="held sockets are POSIX-only"),
]

SERVE = [sys.executable, "-m", "aioreload._serve", "app:app"]

APP = """\
import os

VERSION = {version!r}
FAIL_STARTUP = {fail!r}


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                if FAIL_STARTUP:
                    await send({{"type": "lifespan.startup.failed", "message": "no database"}})
                    return
                await send({{"type": "lifespan.startup.complete"}})
            else:
                await send({{"type": "lifespan.shutdown.complete"}})
                return
    body = f"{{os.getpid()}} {{os.environ['AIORELOAD_GENERATION']}} {{VERSION}}".encode()
    headers = [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]
    await send({{"type": "http.response.start", "status": 200, "headers": headers}})
    await send({{"type": "http.response.body", "body": body}})
"""


def write_app(root: Path, version: str, *, fail: bool = False, broken: bool = False) -> None:
    """Replace app.py at once (a single change event, never a half-written file)."""
    text = APP.format(version=version, fail=fail) + ("\ndef broken(:\n" if broken else "")
    staging = root.parent / f"staging-{root.name}.py"
    staging.write_text(text)
    staging.replace(root / "app.py")


@pytest.fixture
def app_project(project: Project) -> Project:
    write_app(project.root, "v1")
    return project


def serving_sup(project: Project, **options: object) -> Supervisor:
    return make(project, SERVE, watch=[project.root], sockets=["127.0.0.1:0"], cwd=project.root, **options)


@pytest.mark.slow
@pytest.mark.timeout(60)
async def test_a_connection_accepted_before_the_stop_is_answered_by_the_old_child(
    app_project: Project,
) -> None:
    """Connect, reload, then send the request: the old child answers it (and only then exits)."""
    sup = serving_sup(app_project)
    async with running(sup) as log:
        (address,) = sup.sockets
        first = await log.wait(EventKind.READY, 1)
        with connect(address, timeout=10) as quiet:
            # Accept queues are first in, first out: once a later connection is answered,
            # the old child has accepted the quiet one.
            assert (await anyio.to_thread.run_sync(get, address)).split()[:2] == [str(first.pid), "1"]
            async with anyio.create_task_group() as tg:
                tg.start_soon(sup.reload)
                await log.wait(EventKind.STOPPING, 1, timeout=20)  # the old child was told to stop
                quiet.sendall(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")
                data = bytearray()
                while chunk := await anyio.to_thread.run_sync(quiet.recv, 65536):
                    data += chunk
        stopped = await log.wait(EventKind.STOPPED, 1, timeout=20)
    head, _, body = bytes(data).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), data[:200]
    assert body.decode().split()[:2] == [str(first.pid), "1"]  # the old child's answer
    assert stopped.returncode == 0
    assert not stopped.killed


@pytest.mark.slow
@pytest.mark.timeout(90)
@pytest.mark.parametrize("failure", ["syntax-error", "lifespan-failure"])
async def test_a_broken_save_keeps_the_old_child_serving(app_project: Project, failure: str) -> None:
    sup = serving_sup(app_project)
    async with running(sup) as log:
        (address,) = sup.sockets
        first = await log.wait(EventKind.READY, 1)
        async with Load(address) as load:
            await load.served(lambda body: body.endswith(" v1"))
            write_app(
                app_project.root, "v2", fail=failure == "lifespan-failure", broken=failure == "syntax-error"
            )
            failed = await log.wait(EventKind.RELOAD_FAILED, 2, timeout=30)
            mark = load.mark()
            await load.more(20)  # the old child keeps answering after the failure
            assert {body.split()[0] for body in load.since(mark)} == {str(first.pid)}
            write_app(app_project.root, "v3")
            await log.wait(EventKind.READY, 3, timeout=30)
            await load.served(lambda body: body.endswith(" v3"), mark)
        assert load.failures == []
    code = 1 if failure == "syntax-error" else 3
    assert f"exited with code {code} before it was ready" in failed.message
    assert f"still serving [pid {first.pid}]" in failed.message


@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.parametrize("overlap", [True, False], ids=["overlap", "stop-first"])
async def test_reloads_under_load_fail_no_request(app_project: Project, overlap: bool) -> None:
    sup = serving_sup(app_project, overlap=overlap)
    reloads = 15
    async with running(sup) as log:
        (address,) = sup.sockets
        await log.wait(EventKind.READY, 1)
        async with Load(address) as load:
            for generation in range(2, reloads + 2):
                assert await sup.reload(wait_ready=True) is True
                await load.served_by(generation, load.mark())
        assert load.failures == [], load.failures[:5]
        assert len(load.bodies) > 4 * reloads
    assert log.kinds(EventKind.RELOAD_FAILED) == []


@pytest.mark.usefixtures("runtime_dir")
async def test_serve_needs_module_colon_app(project: Project) -> None:
    async with cli(project, "serve", "app") as proc:
        assert await proc.exit_code() == 2
    lines = [line for line in proc.stderr if line.strip()]
    assert len(lines) == 1, lines
    assert "serve takes one ASGI app as MODULE:APP" in lines[0]


@pytest.mark.usefixtures("runtime_dir")
async def test_serve_of_a_missing_module_is_one_line(project: Project) -> None:
    async with cli(project, "--socket", "127.0.0.1:0", "serve", "nosuchapp:app") as proc:
        assert await proc.exit_code() == 2
    lines = [line for line in proc.stderr if line.strip()]
    assert len(lines) == 1, lines
    assert "cannot run nosuchapp:app" in lines[0]


async def test_sockets_are_free_after_the_supervisor(app_project: Project) -> None:
    """The held socket is closed when the supervisor ends: its port can be bound again."""
    sup = serving_sup(app_project)
    async with running(sup) as log:
        await log.wait(EventKind.READY, 1)
        address = sup.sockets[0]
    host, _, port = address.rpartition(":")
    with socket.socket() as again:
        again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        again.bind((host, int(port)))
        again.listen()

"""A tiny asyncio HTTP server on the sockets its supervisor holds (standard library + aioreload).

Every request is answered ``200`` with the body ``<pid> <generation> <version>`` and
``Connection: close``; ``GET /info`` answers a JSON object describing this process (its
socket-activation variables, descriptors 3.., NOTIFY_SOCKET, whether aioreload was imported);
``GET /slow?SECONDS`` answers after that long (an in-flight request across a stop), and
``GET /inflight`` how many requests are in flight besides itself.

Behaviour comes from the JSON file named in ``TEST_SERVING_CONFIG`` (read once, at start):

* ``mode``: ``ok`` (default: serve, then ``aioreload.ready()``), ``silent`` (serve, never say
  ready), ``never`` (neither serve nor say ready; wait to be stopped), ``exit0`` / ``exit1``
  (exit with that code before serving), ``notify`` (serve, then ``READY=1`` on NOTIFY_SOCKET
  with ``socket.sendto``; aioreload is never imported, the sockets are found by hand).
* ``delay``: seconds to wait before serving and saying ready.
* ``linger``: seconds to wait after the stop signal before exiting (a slow drain).
* ``module``: a module imported from the folder of ``TEST_VERSION_FILE`` before anything else
  (a syntax error there exits 1 with its traceback, as a real app would).

The version is the content of ``TEST_VERSION_FILE`` (read at start). On SIGINT or SIGTERM:
stop accepting, finish the requests in flight, exit 0.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import signal
import socket
import stat
import sys

CONFIG = os.environ.get("TEST_SERVING_CONFIG", "")
VERSION_FILE = os.environ.get("TEST_VERSION_FILE", "")


def read_config() -> dict[str, object]:
    if CONFIG and os.path.exists(CONFIG):
        with open(CONFIG) as f:
            return dict(json.load(f))
    return {}


def read_version() -> str:
    if not VERSION_FILE:
        return "-"
    with open(VERSION_FILE) as f:
        return f.read().strip() or "-"


config = read_config()
mode = str(config.get("mode", "ok"))
if config.get("module"):  # first: a broken module fails the start the way a real app's would
    sys.path.insert(0, os.path.dirname(VERSION_FILE))
    importlib.import_module(str(config["module"]))

GENERATION = os.environ.get("AIORELOAD_GENERATION", "0")
VERSION = read_version()


LISTENERS: list[socket.socket] = []
IN_FLIGHT: set[asyncio.Task[None]] = set()


def listening_sockets() -> list[socket.socket]:
    if mode != "notify":
        import aioreload

        return aioreload.sockets()
    # By hand, as any socket-activated program does (sd_listen_fds).
    if os.environ.get("LISTEN_PID") != str(os.getpid()):
        return []
    count = int(os.environ.get("LISTEN_FDS", "0"))
    return [socket.socket(fileno=fd) for fd in range(3, 3 + count)]


def say_ready() -> None:
    if mode == "notify":
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.sendto(b"STATUS=serving\nREADY=1", os.environ["NOTIFY_SOCKET"])
        return
    import aioreload

    aioreload.report_ready()


def describe_fd(fd: int) -> dict[str, object]:
    try:
        sock = socket.socket(fileno=os.dup(fd))
    except OSError as exc:
        return {"fd": fd, "error": str(exc)}
    with sock:
        name = sock.getsockname()
        listening = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1
        return {"fd": fd, "family": sock.family.name, "address": name, "listening": listening}


def info() -> dict[str, object]:
    count = os.environ.get("LISTEN_FDS", "")
    fds = [describe_fd(fd) for fd in range(3, 3 + int(count))] if count.isdigit() else []
    notify = os.environ.get("NOTIFY_SOCKET")
    notify_info: dict[str, object] = {}
    if notify and os.path.exists(notify):
        folder = os.path.dirname(notify)
        notify_info = {
            "is_socket": stat.S_ISSOCK(os.stat(notify).st_mode),
            "folder_mode": oct(os.stat(folder).st_mode & 0o777),
        }
    return {
        "pid": os.getpid(),
        "generation": GENERATION,
        "version": VERSION,
        "listen_fds": os.environ.get("LISTEN_FDS"),
        "listen_pid": os.environ.get("LISTEN_PID"),
        "listen_fdnames": os.environ.get("LISTEN_FDNAMES"),
        "fds": fds,
        "sockets": [s.fileno() for s in LISTENERS],
        "notify_socket": notify,
        "notify": notify_info,
        "aioreload_imported": "aioreload" in sys.modules,
    }


async def handle(conn: socket.socket) -> None:
    loop = asyncio.get_running_loop()
    try:
        conn.setblocking(False)
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = await asyncio.wait_for(loop.sock_recv(conn, 65536), 5)
            if not chunk:
                return
            head += chunk
        target = head.split(b"\r\n", 1)[0].split(b" ")[1].decode()
        path, _, query = target.partition("?")
        if path == "/info":
            body = json.dumps(info()).encode()
        elif path == "/inflight":  # requests in flight besides this one
            body = str(len(IN_FLIGHT) - 1).encode()
        else:
            if path == "/slow":
                await asyncio.sleep(float(query))
            body = f"{os.getpid()} {GENERATION} {VERSION}".encode()
        response = (
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        await loop.sock_sendall(conn, response)
    except (OSError, asyncio.TimeoutError):
        pass
    finally:
        conn.close()


async def main() -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    delay = float(str(config.get("delay", 0)))
    if delay:
        await asyncio.sleep(delay)
    if mode in ("exit0", "exit1"):
        return int(mode[-1])
    if mode == "never":
        await stop.wait()
        return 0
    LISTENERS.extend(listening_sockets())
    listeners = LISTENERS
    if not listeners:
        print("serving_server: no sockets were handed to this process", file=sys.stderr)
        return 2

    def accept(listener: socket.socket) -> None:
        # Accept and register in one callback: a connection taken from the queue always has
        # its task before a stop can look at IN_FLIGHT (and the old and the new child may
        # both be woken for one connection: the loser gets EAGAIN).
        while True:
            try:
                conn, _ = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            task = loop.create_task(handle(conn))
            IN_FLIGHT.add(task)
            task.add_done_callback(IN_FLIGHT.discard)

    for listener in listeners:
        listener.setblocking(False)
        loop.add_reader(listener.fileno(), accept, listener)
    if mode != "silent":
        say_ready()
    await stop.wait()
    for listener in listeners:  # stop accepting: what waits in the queue is the next child's
        loop.remove_reader(listener.fileno())
        listener.close()
    while IN_FLIGHT:
        await asyncio.gather(*IN_FLIGHT, return_exceptions=True)
    await asyncio.sleep(float(str(config.get("linger", 0))))
    return 0


if __name__ == "__main__":
    try:
        code = asyncio.run(main())
    except KeyboardInterrupt:  # a stop signal before the handlers were in place
        code = 0
    sys.exit(code)

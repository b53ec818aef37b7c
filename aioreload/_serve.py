"""The child of ``aioreload serve MODULE:APP``: uvicorn on the sockets the supervisor holds.

Run as ``python -m aioreload._serve MODULE:APP`` in the user's working folder. The listening
sockets arrive as inherited descriptors 3, 4, ... (``LISTEN_FDS``, read by
:func:`aioreload.sockets`); the supervisor keeps its own copies open across reloads, so a
client that connects while no child runs waits in the kernel's accept queue for the next
child instead of being refused. Stopping is uvicorn's: SIGINT or SIGTERM (SIGKILL after the
supervisor's ``stop_timeout``).

Choices, and why:

* **uvicorn through its public API.** ``Config`` + a ``Server`` subclass + ``run(sockets=...)``,
  the path gunicorn's uvicorn worker takes. ``uvicorn --fd`` takes a single descriptor and
  assumes a Unix socket. uvicorn is optional (``aioreload[serve]``): without it, a one-line
  error and exit 2. Its defaults are kept (``http``/``loop``/``lifespan`` "auto", its logging):
  it is the user's dev server and should behave as ``uvicorn MODULE:APP`` does. So with
  lifespan "auto", an app whose lifespan *raises* (rather than sending
  ``lifespan.startup.failed``, as Starlette and FastAPI do) is served anyway, as uvicorn does.
* **Import first, then serve.** ``config.load()`` imports the app before anything is
  served. An exception there (a ``SyntaxError`` in the user's module...) is printed with
  its traceback and exits 1; uvicorn's own load errors (module or attribute not found) are
  logged by uvicorn and also exit 1, not its 3: 3 stays "lifespan startup failed". SIGINT
  during a slow import ends it quietly with 130 (SIGTERM has its default action there).
* **Ready means serving.** :func:`aioreload.report_ready` is called after uvicorn's
  ``Server.startup()`` returned: lifespan startup is complete and ``create_server`` accepts
  on every socket. A failed lifespan startup exits there (uvicorn's ``sys.exit(3)``) and is
  never reported ready.
* **Exit 0 after a stop signal.** uvicorn's ``capture_signals`` restores the previous
  handlers after serving and re-raises the signal it caught: with Python's defaults that is
  a ``KeyboardInterrupt`` for SIGINT and death by SIGTERM. Handlers of ours are installed
  before serving, so the re-raised signal lands in them (and one arriving before uvicorn's
  own are in place still stops the server: they set ``should_exit``).
* **A stop never drops a request that reached us.** uvicorn's ``Server.shutdown()`` calls
  ``shutdown()`` on each connection, and uvicorn's HTTP protocols close at once a connection
  whose ``cycle`` is ``None``: also one accepted a moment ago whose request is still on the
  wire, which the client sees as a reset or an empty reply. On a reload that is exactly the
  request the held sockets exist to save. So the protocol class is replaced by a subclass
  (:class:`_AnswerFirstRequest` mixed in before ``config.http_protocol_class``) that defers
  ``shutdown()`` for a connection whose first request has not arrived yet: its request is
  answered if its head arrives within :data:`FIRST_REQUEST_GRACE`, with ``Connection:
  close``, and then closed; at the end of the grace it is closed. Idle keep-alive
  connections are closed at once, as uvicorn does: a client must already retry a request
  sent on a keep-alive connection the server closes (RFC 9112, 9.3.1), the same race as
  uvicorn's keep-alive timeout. In-flight requests finish as uvicorn lets them, and their
  response, if not started yet, gets ``Connection: close`` too (uvicorn's httptools protocol
  says so already; its h11 protocol closes after the response without saying it). A fresh
  connection upgraded to a WebSocket within the grace is stopped at its end as uvicorn
  stops WebSockets (close code 1012).

Coupling to uvicorn internals (checked against uvicorn 0.54; both ``H11Protocol`` and
``HttpToolsProtocol`` have all of it): ``config.http_protocol_class`` (set by
``config.load()``, instantiated by ``Server.startup()``); on a protocol object ``cycle``
(``None`` until a request head has been parsed, then the newest request's cycle),
``transport``, ``shutdown()``, ``data_received()``, ``connection_made()`` and
``connection_lost()``; on a cycle ``response_started`` and ``default_headers`` (the list the
response headers start from); ``shutdown()`` on the WebSocket protocol an upgrade hands the
transport to (``transport.get_protocol()``). :class:`_HTTPProtocol` and :class:`_Cycle`
spell the HTTP side out.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys
from collections.abc import Sequence
from types import FrameType
from typing import TYPE_CHECKING, Protocol, cast

from ._types import NotSupervisedError
from .child import _prepared, report_ready, sockets

__all__ = ["FIRST_REQUEST_GRACE", "main"]

FIRST_REQUEST_GRACE = 1.0
"""Seconds a connection accepted before the stop signal has to deliver its first request."""

USAGE = "usage: python -m aioreload._serve MODULE:APP  (run by `aioreload serve MODULE:APP`)"
NO_UVICORN = "aioreload: error: serve needs uvicorn; install it with: pip install 'aioreload[serve]'"
NO_SOCKETS = (
    "aioreload: error: no listening sockets were handed to this process; run it through "
    "`aioreload serve MODULE:APP`, or pass descriptors 3, 4, ... with LISTEN_FDS=N and "
    "LISTEN_PID=<its pid>"
)
_STARTUP_FAILURE = 3  # uvicorn.config.STARTUP_FAILURE: its exit code for load and lifespan failures
_CLOSE = (b"connection", b"close")

logger = logging.getLogger(__name__)


class _Cycle(Protocol):
    """What is used of uvicorn's ``RequestResponseCycle`` (h11 and httptools alike)."""

    response_started: bool
    default_headers: list[tuple[bytes, bytes]]


if TYPE_CHECKING:

    class _HTTPProtocol(asyncio.Protocol):
        """What is used of uvicorn's ``H11Protocol`` and ``HttpToolsProtocol``."""

        transport: asyncio.Transport
        cycle: _Cycle | None

        def shutdown(self) -> None: ...

else:
    _HTTPProtocol = object  # a mixin: uvicorn's class follows it in the MRO


class _Stopping(Protocol):
    should_exit: bool


class _AnswerFirstRequest(_HTTPProtocol):
    """Mixed in before uvicorn's HTTP protocol: a fresh connection is answered, not reset.

    ``shutdown()`` (uvicorn's graceful stop, once per connection) is deferred while the
    connection has no request cycle yet; the first request head that arrives (or the end of
    :data:`FIRST_REQUEST_GRACE`) completes it with uvicorn's own ``shutdown()``.
    """

    _server: _Stopping  # set on the generated class; ``should_exit`` is public uvicorn API
    _grace: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        # Accepted after uvicorn asked its connections to stop (accept and connection_made
        # are separate loop callbacks): it would otherwise be served as keep-alive.
        if self._server.should_exit:
            self.shutdown()

    def shutdown(self) -> None:
        if self.cycle is None and not self.transport.is_closing():
            if self._grace is None:
                self._grace = asyncio.get_running_loop().call_later(FIRST_REQUEST_GRACE, self._end_grace)
            return
        self._stop()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._grace is not None and self.cycle is not None:
            self._stop()  # the first request's head is in: its response closes the connection

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_grace()
        super().connection_lost(exc)

    def _end_grace(self) -> None:
        self._grace = None
        if self.transport.is_closing():
            return
        successor = self.transport.get_protocol()
        if successor is not self:
            # Upgraded to a WebSocket in the grace (our connection_lost will not come): it was
            # made after uvicorn's shutdown() went round, so stop it as that would (code 1012).
            successor.shutdown()  # type: ignore[attr-defined]  # all uvicorn's protocols have it
        else:
            self._stop()  # no complete request head: uvicorn's shutdown closes it

    def _stop(self) -> None:
        self._cancel_grace()
        cycle = self.cycle
        if cycle is not None and not cycle.response_started:
            # uvicorn's h11 protocol closes after the response without saying so; say it.
            # A new list: the one a cycle starts with is shared by every connection.
            cycle.default_headers = [*cycle.default_headers, _CLOSE]
        super().shutdown()

    def _cancel_grace(self) -> None:
        if self._grace is not None:
            self._grace.cancel()
            self._grace = None


def _graceful_protocol(base: type[asyncio.Protocol], server: _Stopping) -> type[asyncio.Protocol]:
    """``base`` (uvicorn's resolved HTTP protocol class) with :class:`_AnswerFirstRequest`."""
    namespace = {"_server": server, "__module__": __name__}
    return cast("type[asyncio.Protocol]", type(base.__name__, (_AnswerFirstRequest, base), namespace))


def _describe(sock: socket.socket) -> str:
    """A listening socket as a URL (or path), for the "running on" line."""
    address = sock.getsockname()
    if sock.family == socket.AF_INET:
        return f"http://{address[0]}:{address[1]}"
    if sock.family == socket.AF_INET6:
        return f"http://[{address[0]}]:{address[1]}"
    return f"unix socket {address!r}" if address else "an unnamed socket"


def _print_user_traceback(exc: BaseException) -> None:
    """Print ``exc`` from the user's first frame: uvicorn's loading machinery left out."""
    import uvicorn

    from ._modules import print_user_traceback

    print_user_traceback(exc, os.path.dirname(uvicorn.__file__))


def _serve(app: str, listeners: list[socket.socket]) -> int:
    import uvicorn  # present: main() checked

    class Server(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets=sockets)  # exits 3 if lifespan startup fails
            # uvicorn logs where it listens only for sockets it bound itself.
            for sock in listeners:
                logging.getLogger("uvicorn.error").info(
                    "Uvicorn running on %s (socket held by aioreload)", _describe(sock)
                )
            if self.started and not self.should_exit:
                try:
                    report_ready()
                except NotSupervisedError as exc:  # the supervisor is gone; serve on regardless
                    logger.warning("aioreload: could not report ready: %s", exc)

    config = uvicorn.Config(app)
    try:
        config.load()  # imports the app; what goes wrong here is the user's to read
    except SystemExit as exc:
        if exc.code == _STARTUP_FAILURE:
            return 1  # uvicorn logged why (module or attribute not found, factory failed)
        raise
    except KeyboardInterrupt:
        return 128 + signal.SIGINT  # stopped during a slow import: the stop was asked for
    except Exception as exc:
        _print_user_traceback(exc)
        return 1
    try:
        _prepared()  # told to prepare: the app imported; wait for the word to go
    except KeyboardInterrupt:
        return 128 + signal.SIGINT  # stopped before it was told to go
    server = Server(config)
    config.http_protocol_class = _graceful_protocol(config.http_protocol_class, server)

    def stop(signum: int, frame: FrameType | None) -> None:
        server.should_exit = True

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, stop)
    server.run(sockets=listeners)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Serve the ASGI app named in ``argv`` (``["MODULE:APP"]``); returns the exit code."""
    args = sys.argv[1:] if argv is None else list(argv)
    if len(args) != 1 or ":" not in args[0] or args[0].startswith("-"):
        print(USAGE, file=sys.stderr)
        return 2
    try:
        import uvicorn  # noqa: F401
    except ModuleNotFoundError as exc:
        if exc.name != "uvicorn":
            raise  # installed but broken: its traceback says more than advice to install it
        print(NO_UVICORN, file=sys.stderr)
        return 2
    listeners = sockets()
    if not listeners:
        print(NO_SOCKETS, file=sys.stderr)
        return 2
    cwd = os.getcwd()
    if sys.path[:1] != [cwd]:
        sys.path.insert(0, cwd)  # the user's modules, as `python -m uvicorn` finds them
    return _serve(args[0], listeners)


if __name__ == "__main__":
    sys.exit(main())

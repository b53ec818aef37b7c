"""The private channel between a supervisor and its child. Standard library only.

Choice: one ``socketpair`` per child, the child's end passed at spawn (``pass_fds``) and named
in ``AIORELOAD_FD``. Options were a TCP port (any local user can connect), a named socket or
FIFO (needs a private folder and cleanup) or an inherited descriptor: only processes that
inherit it can speak, nothing is left on disk, and the supervisor sees end-of-file when the
child is gone. A pair per child means a late message from an old child can never be taken
for its successor's. Messages are JSON objects, one per line, child → supervisor:

    {"op": "reload"}                     reload me
    {"op": "ready"}                      I am serving
    {"op": "files", "files": {path: ns}} source files I have imported, with the modification
                                         time each had when loaded (-1: unknown)
    {"op": "exit", "code": N}            my program finished for good; end the supervisor
    {"op": "prepared"}                   my program's own module imported; waiting for "go"

and supervisor → child (a spare, or a child told to prepare in ``AIORELOAD_PREPARE``):
``preload``, ``start`` (see ``_sparechild``) and ``go``.

Windows has no ``pass_fds``; there the channel is not offered yet and the child-side API
reports that it is not supervised.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
from typing import Any, final

__all__ = [
    "ENV_CHANGES",
    "ENV_FD",
    "ENV_GENERATION",
    "ENV_PREPARE",
    "ENV_REASON",
    "ENV_SPAWNED",
    "ENV_TRACK",
    "ChildChannel",
    "decode",
    "encode",
    "make_pair",
]

ENV_FD = "AIORELOAD_FD"
ENV_REASON = "AIORELOAD_REASON"
ENV_CHANGES = "AIORELOAD_CHANGES"
ENV_GENERATION = "AIORELOAD_GENERATION"
ENV_SPAWNED = "AIORELOAD_SPAWNED_NS"
ENV_TRACK = "AIORELOAD_TRACK"  # "1": report imported modules (children of aioreload.run)
ENV_PREPARE = "AIORELOAD_PREPARE"  # "1": import the program, say "prepared", wait for "go"
SUPPORTED = sys.platform != "win32"


def encode(op: str, **fields: Any) -> bytes:
    """One message as a line of JSON."""
    return json.dumps({"op": op, **fields}, separators=(",", ":")).encode() + b"\n"


def decode(line: bytes) -> dict[str, Any] | None:
    """Parse one line; ``None`` for anything that is not a message object."""
    try:
        msg = json.loads(line)
    except ValueError:
        return None
    return msg if isinstance(msg, dict) and isinstance(msg.get("op"), str) else None


def make_pair() -> tuple[socket.socket, socket.socket]:
    """A connected pair: (supervisor's end, child's end). Both close on exec."""
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)


@final
class ChildChannel:
    """The child's end of the channel. Thread-safe; sends never wait for an answer."""

    def __init__(self, fd: int) -> None:
        self._sock = socket.socket(fileno=fd)
        os.set_inheritable(fd, False)  # our own children must not speak for us
        self._lock = threading.Lock()

    @classmethod
    def from_environ(cls) -> ChildChannel | None:
        """Open the channel named in the environment, or ``None`` when there is none."""
        value = os.environ.get(ENV_FD)
        if not SUPPORTED or not value or not value.isdigit():
            return None
        fd = int(value)
        try:
            kind = socket.socket(fileno=os.dup(fd))
        except OSError:
            return None  # the descriptor is not open here (a grandchild that inherited the env)
        try:
            if kind.family != socket.AF_UNIX:
                return None
        finally:
            kind.close()
        return cls(fd)

    def send(self, op: str, **fields: Any) -> None:
        """Send one message; raises ``OSError`` when the supervisor is gone."""
        data = encode(op, **fields)
        with self._lock:
            self._sock.sendall(data)

    def receive(self) -> dict[str, Any] | None:
        """Wait for the supervisor's next message; ``None`` when it is gone."""
        buffer = b""
        while b"\n" not in buffer:
            try:
                data = self._sock.recv(65536)
            except OSError:
                return None
            if not data:
                return None
            buffer += data
        return decode(buffer.partition(b"\n")[0])

    def close(self) -> None:
        """Close the child's end."""
        self._sock.close()

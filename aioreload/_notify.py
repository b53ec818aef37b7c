"""The notify protocol (``sd_notify``), both ways: a private socket per child, and systemd's.

A server that already tells systemd ``READY=1`` (gunicorn, anything built on libsystemd or
``sdnotify``) tells its supervisor the same way, unchanged: each child gets a datagram socket
of its own in ``NOTIFY_SOCKET``, bound in a folder only this user can enter, so no other
local user can claim readiness for it (an abstract address could not be protected), and a
message on it can only be about that child. The supervisor's own ``NOTIFY_SOCKET`` (systemd's)
is never passed on.

Messages are newline-separated ``KEY=VALUE`` assignments in one datagram.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import sys
import tempfile
from collections.abc import Iterator
from typing import final

__all__ = ["ENV", "NotifyListener", "PrivateFolder", "parse"]

logger = logging.getLogger(__name__)

ENV = "NOTIFY_SOCKET"
SUPPORTED = sys.platform != "win32"
_MAX_DATAGRAM = 4096


def parse(datagram: bytes) -> dict[str, str]:
    r"""``b"READY=1\nSTATUS=up"`` as ``{"READY": "1", "STATUS": "up"}``; junk lines are skipped."""
    fields = {}
    for line in datagram.decode("utf-8", "replace").splitlines():
        key, sep, value = line.partition("=")
        if sep and key:
            fields[key] = value
    return fields


@final
class PrivateFolder:
    """A folder only this user can enter, for the children's notify sockets; removed on close."""

    def __init__(self) -> None:
        self.path: str | None = None
        self._count = 0

    def next_path(self) -> str | None:
        """A fresh socket path in the folder (created on first use); ``None`` if unavailable."""
        if not SUPPORTED:
            return None
        if self.path is None:
            try:
                self.path = tempfile.mkdtemp(prefix="aioreload-")  # mode 0700
            except OSError as exc:
                logger.warning("no private folder for notify sockets (%s); children get none", exc)
                return None
        self._count += 1
        return os.path.join(self.path, f"n{self._count}")

    def close(self) -> None:
        """Remove the folder and whatever is left in it."""
        if self.path is not None:
            shutil.rmtree(self.path, ignore_errors=True)
            self.path = None


@final
class NotifyListener:
    """One child's notify socket: bound before the child starts, closed and removed after it exits."""

    def __init__(self, sock: socket.socket, path: str) -> None:
        self.socket = sock
        self.path = path

    @classmethod
    def bind(cls, path: str) -> NotifyListener | None:
        """Bind a datagram socket at ``path``; ``None`` (and a debug line) when that fails."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            sock.bind(path)
        except OSError as exc:
            sock.close()
            logger.debug("cannot bind notify socket %s: %s", path, exc)
            return None
        sock.setblocking(False)
        return cls(sock, path)

    def messages(self) -> Iterator[dict[str, str]]:
        """Every message waiting now, parsed; stops when none is left."""
        while True:
            try:
                data = self.socket.recv(_MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            yield parse(data)

    def close(self) -> None:
        """Close the socket and remove its file."""
        self.socket.close()
        with contextlib.suppress(OSError):
            os.unlink(self.path)

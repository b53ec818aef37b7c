"""Tiny helper the test children use to send lines to the test (a Unix socket named in the env)."""

from __future__ import annotations

import os
import socket

_sock: socket.socket | None = None


def report(*words: object) -> None:
    """Send one line (words joined by spaces) to the test's line server."""
    global _sock
    if _sock is None:
        _sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        _sock.connect(os.environ["TEST_REPORT_SOCK"])
    _sock.sendall((" ".join(str(w) for w in words) + "\n").encode())


def version() -> str:
    """The content of the file named by TEST_VERSION_FILE, or '-'."""
    path = os.environ.get("TEST_VERSION_FILE")
    if not path:
        return "-"
    with open(path) as f:
        return f.read().strip() or "-"

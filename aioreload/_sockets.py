"""Held sockets: bound once by the supervisor, handed to every child as descriptors 3, 4, ...

A server restarted by a reloader closes its port between the old process and the new one,
and every connection attempted in that gap is refused. Holding the listening socket in the
supervisor closes the gap: the kernel queues connections in its backlog while no child
accepts, and the old and the new child can even accept side by side (the overlap in
``_loop``). The child finds the sockets the way systemd hands them over (``LISTEN_FDS``,
``LISTEN_PID``, ``LISTEN_FDNAMES``, descriptors from 3), so ``uvicorn --fd 3``, hypercorn's
``fd://3``, gunicorn and :func:`aioreload.sockets` take them without knowing about us.

Addresses: ``HOST:PORT``, ``[IPv6]:PORT``, ``:PORT`` (all interfaces) and ``unix:PATH``.
When aioreload was itself started by socket activation, those sockets are passed on instead
(:func:`inherited`).

Putting a socket at descriptor 3 in the child, and ``LISTEN_PID`` in its environment, both
need the child's side of ``fork``: see ``_process.Child.spawn``.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import socket
import stat
import sys
from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from typing import final

from ._types import ConfigError

__all__ = ["FIRST_FD", "Address", "HeldSocket", "bind", "inherited", "listen_env", "name_of", "parse"]

FIRST_FD = 3  # SD_LISTEN_FDS_START
_BACKLOG = 2048  # the kernel caps it at net.core.somaxconn; a reload's queue must fit in it
_LISTEN_VARS = ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES")


@final
@dataclass(frozen=True)
class Address:
    """Where to listen: a TCP host and port, or a Unix socket path."""

    host: str | None = None
    port: int = 0
    path: str | None = None

    def __str__(self) -> str:
        if self.path is not None:
            return f"unix:{self.path}"
        host = self.host or ""
        return f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"


def parse(text: str) -> Address:
    """``127.0.0.1:8000``, ``[::1]:8000``, ``:8000`` or ``unix:/run/app.sock`` as an address.

    Raises:
        ConfigError: anything else, with the accepted forms.
    """
    forms = "use HOST:PORT, [IPv6]:PORT, :PORT or unix:PATH"
    if not isinstance(text, str) or not text.strip():
        raise ConfigError(f"socket address must be a non-empty string ({forms}), got {text!r}")
    text = text.strip()
    if text.startswith("unix:"):
        path = text[5:]
        if not path:
            raise ConfigError(f"socket address {text!r} has no path ({forms})")
        if sys.platform == "win32":
            raise ConfigError(f"unix sockets are not available on Windows: {text!r}")
        return Address(path=os.path.abspath(path))
    host, sep, port_text = text.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ConfigError(f"socket address {text!r} needs a port from 0 to 65535 ({forms})")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ConfigError(f"socket address {text!r}: {host!r} is not an IPv6 address") from None
    elif ":" in host:
        raise ConfigError(f"socket address {text!r}: put an IPv6 host in brackets, as [::1]:8000")
    return Address(host=host or None, port=int(port_text))


@final
class HeldSocket:
    """One listening socket the supervisor owns; closed (and its file removed) by :meth:`close`."""

    def __init__(self, sock: socket.socket, name: str, *, unlink: str | None = None) -> None:
        self.socket = sock
        self.name = name
        self._unlink = unlink

    def __repr__(self) -> str:
        return f"<HeldSocket {self.name} fd={self.socket.fileno()}>"

    def close(self) -> None:
        """Close it; a Unix socket file we created goes too."""
        self.socket.close()
        if self._unlink is not None:
            with contextlib.suppress(OSError):
                os.unlink(self._unlink)
            self._unlink = None


def bind(address: Address) -> HeldSocket:
    """Bind and listen on ``address``.

    Raises:
        ConfigError: the address is in use, not available here, or not allowed.
    """
    try:
        if address.path is not None:
            return _bind_unix(address.path)
        return _bind_tcp(address)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ConfigError(f"cannot listen on {address}: {reason}") from None


def _bind_tcp(address: Address) -> HeldSocket:
    infos = socket.getaddrinfo(address.host, address.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, kind, proto, _, sockaddr = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        if sys.platform != "win32":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6 and address.host:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(sockaddr)
        sock.listen(_BACKLOG)
    except BaseException:
        sock.close()
        raise
    return HeldSocket(sock, name_of(sock))


def name_of(sock: socket.socket) -> str:
    """A listening socket's address: ``127.0.0.1:8000``, ``[::1]:8000``, ``unix:/run/app.sock``."""
    try:
        name = sock.getsockname()
    except OSError:
        return f"fd{sock.fileno()}"
    if isinstance(name, tuple):
        host, port = name[:2]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return f"unix:{name}" if name else f"fd{sock.fileno()}"


def _bind_unix(path: str) -> HeldSocket:
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISSOCK(os.lstat(path).st_mode) and not _answers(path):
            os.unlink(path)  # left by a run that was killed
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        sock.listen(_BACKLOG)
    except BaseException:
        sock.close()
        raise
    return HeldSocket(sock, name_of(sock), unlink=path)


def _answers(path: str) -> bool:
    """Whether something listens on the Unix socket ``path`` (then it is not ours to remove)."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError:
        return False
    finally:
        probe.close()
    return True


def inherited(environ: MutableMapping[str, str]) -> list[HeldSocket]:
    """The sockets this process was started with by socket activation (systemd), if any.

    They are taken only when ``LISTEN_PID`` names this process, as the protocol says; the
    variables are then removed from ``environ``, so they are not passed on as they are.
    """
    count = environ.get("LISTEN_FDS", "")
    mine = environ.get("LISTEN_PID") == str(os.getpid())
    names = environ.get("LISTEN_FDNAMES", "").split(":")
    for name in _LISTEN_VARS:
        environ.pop(name, None)
    if not mine or not count.isdigit() or sys.platform == "win32":
        return []
    held = []
    for index in range(int(count)):
        fd = FIRST_FD + index
        try:
            sock = socket.socket(fileno=fd)
        except OSError:
            continue
        os.set_inheritable(fd, False)  # handed on explicitly, at the child's own descriptor 3...
        name = names[index] if index < len(names) and names[index] else f"fd{fd}"
        held.append(HeldSocket(sock, name))
    return held


def listen_env(env: Mapping[str, str], held: Sequence[HeldSocket]) -> dict[str, str]:
    """``env`` with the socket-activation variables for ``held`` (none when there are none).

    ``LISTEN_PID`` is not set here: only the child knows its pid (see ``_process``).
    """
    out = {key: value for key, value in env.items() if key not in _LISTEN_VARS}
    if held:
        out["LISTEN_FDS"] = str(len(held))
        out["LISTEN_FDNAMES"] = ":".join(_fdname(h.name) for h in held)
    return out


def _fdname(name: str) -> str:
    """A name systemd would accept: printable ASCII without ``:``, at most 255 characters."""
    cleaned = "".join(c if c.isascii() and c.isprintable() and c != ":" else "_" for c in name)
    return cleaned[:255] or "socket"

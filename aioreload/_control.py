"""``aioreload reload``: ask the supervisor running in a folder to reload, from another terminal.

OS-level choices, with the options considered:

* **Transport.** A signal (SIGHUP already reloads) needs the supervisor's pid, hence a pid
  file, and gives no answer. A TCP port on localhost can be reached by every local user. A
  Unix socket is guarded by file permissions, lets the server read the peer's uid (Linux) and
  answers on the same connection. We use a Unix socket; there is none on Windows, where this
  command is not available.

* **Location.** ``$XDG_RUNTIME_DIR`` when set (per user, mode 0700, emptied at logout), else
  the temporary folder. In it, a folder ``aioreload-<uid>`` (mode 0700) holds one socket
  (mode 0600) per supervisor, named from a hash of the supervisor's working folder: the path
  stays short (Unix socket paths are limited to about 100 bytes) and reveals nothing.

* **Trust.** In a shared temporary folder another user may create ``aioreload-<uid>`` first,
  to listen in or to answer in our place. Both sides therefore check, without following
  symlinks, that the folder and the socket belong to the current user and grant nothing to
  group or others, and refuse otherwise. Some kernels ignore a socket file's own mode, so the
  folder's mode is the real gate; the socket's mode and, on Linux, the peer's uid
  (``SO_PEERCRED``) are checked as well.

* **Stale sockets.** A supervisor killed with SIGKILL leaves its socket file behind. A new
  supervisor for the same folder connects to it first: refused means stale (it is replaced);
  an answer means another supervisor serves this folder, and we leave it to that one.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import stat
import struct
import sys
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, final

from ._types import AioreloadError

if TYPE_CHECKING:  # the client side (`aioreload reload`) needs the standard library only
    import anyio.abc

__all__ = [
    "ControlError",
    "ControlServer",
    "NotRunningError",
    "UnsafeError",
    "control_dir",
    "request_reload",
    "socket_path",
]

SUPPORTED = hasattr(socket, "AF_UNIX") and hasattr(os, "getuid")
# How long a connection may take to send its one request line.
_REQUEST_TIMEOUT = 5.0


class ControlError(AioreloadError):
    """The control socket cannot be used."""


class UnsafeError(ControlError):
    """The control folder or socket belongs to someone else or is open to others."""


class NotRunningError(ControlError):
    """No supervisor serves the folder."""


def control_dir() -> Path:
    """The private folder holding this user's control sockets."""
    base = os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()
    return Path(base) / f"aioreload-{os.getuid()}"


def socket_path(folder: str | os.PathLike[str]) -> Path:
    """The control socket of the supervisor whose working folder is ``folder``."""
    digest = hashlib.sha256(os.fsencode(os.path.realpath(folder))).hexdigest()[:16]
    return control_dir() / f"{digest}.sock"


def check_private(path: Path, *, is_socket: bool) -> None:
    """Check that ``path`` is our own folder (or socket) that no one else may use.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        UnsafeError: it is something else, someone else's, or open to group or others.
    """
    info = os.lstat(path)
    what = "socket" if is_socket else "folder"
    if not (stat.S_ISSOCK(info.st_mode) if is_socket else stat.S_ISDIR(info.st_mode)):
        raise UnsafeError(f"{path} is not a {what}; refusing to use it")
    if info.st_uid != os.getuid():
        raise UnsafeError(
            f"{path} is owned by uid {info.st_uid}, not by you (uid {os.getuid()}); refusing to use it"
        )
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o077:
        wanted = "0600" if is_socket else "0700"
        raise UnsafeError(
            f"{path} is open to group or others (mode {mode:04o}, wanted {wanted}); refusing to use it"
        )


def _ask(path: Path, timeout: float) -> str | None:
    """Send ``reload`` to one socket; ``None`` when nothing listens there (a stale file)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(os.fspath(path))
        except (ConnectionRefusedError, FileNotFoundError):
            return None
        except OSError as exc:
            raise ControlError(f"cannot connect to {path}: {exc.strerror or exc}") from None
        try:
            sock.sendall(b"reload\n")
            reply = b""
            while not reply.endswith(b"\n"):
                chunk = sock.recv(1024)
                if not chunk:
                    break
                reply += chunk
        except TimeoutError:
            raise ControlError(f"the supervisor did not answer within {timeout:g} s") from None
        except OSError as exc:
            raise ControlError(f"lost the supervisor's answer: {exc}") from None
    return reply.decode(errors="replace").strip()


def request_reload(folder: Path, *, timeout: float = 30.0) -> tuple[Path, int]:
    """Ask the supervisor of ``folder`` (or of the closest folder above it) to reload.

    Returns once the new child has started.

    Returns:
        The supervisor's working folder and the new child's process id.

    Raises:
        NotRunningError: no supervisor runs there.
        UnsafeError: the control folder or socket is not private; nothing was sent.
        ControlError: the supervisor answered with an error, or not at all.
    """
    if not SUPPORTED:
        raise ControlError("`aioreload reload` needs Unix sockets; send SIGHUP to the supervisor instead")
    folder = Path(os.path.realpath(folder))
    try:
        check_private(control_dir(), is_socket=False)
    except FileNotFoundError:
        raise NotRunningError(f"no aioreload is running in {folder}") from None
    for candidate in (folder, *folder.parents):
        path = socket_path(candidate)
        try:
            check_private(path, is_socket=True)
        except FileNotFoundError:
            continue
        reply = _ask(path, timeout)
        if reply is None:
            continue
        word, _, detail = reply.partition(" ")
        if word == "ok" and detail.isdigit():
            return candidate, int(detail)
        raise ControlError(f"the supervisor in {candidate} did not reload: {detail or reply or 'no answer'}")
    raise NotRunningError(f"no aioreload is running in {folder} or a folder above it")


def _peer_uid(stream: anyio.abc.SocketStream) -> int | None:
    """The connecting process's uid (Linux only; ``None`` where the kernel does not tell)."""
    if not sys.platform.startswith("linux"):
        return None
    from anyio.abc import SocketAttribute

    raw = stream.extra(SocketAttribute.raw_socket)
    _pid, uid, _gid = struct.unpack("iII", raw.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
    return int(uid)


@final
class ControlServer:
    """The supervisor's end: a private socket that answers ``reload`` requests.

    Create it with :meth:`bind`, use it as an async context manager (leaving it closes the
    socket and removes its file) and run :meth:`serve` in a task inside.
    """

    def __init__(self, path: Path, listener: anyio.abc.SocketListener) -> None:
        self.path = path
        self._listener = listener
        info = os.lstat(path)
        self._identity = (info.st_dev, info.st_ino)

    @classmethod
    async def bind(cls, folder: str | os.PathLike[str]) -> ControlServer:
        """Create the control socket for the supervisor working in ``folder``.

        Raises:
            UnsafeError: the control folder or an existing socket is not private.
            ControlError: another supervisor already serves ``folder``, or the OS said no.
        """
        if not SUPPORTED:
            raise ControlError("Unix sockets are not available on this platform")
        directory = control_dir()
        try:
            directory.mkdir(mode=0o700)
        except FileExistsError:
            pass
        except OSError as exc:
            raise ControlError(f"cannot create {directory}: {exc.strerror}") from None
        else:
            os.chmod(directory, 0o700)  # in case the umask took the owner's bits too
        check_private(directory, is_socket=False)
        path = socket_path(folder)
        with contextlib.suppress(FileNotFoundError):
            check_private(path, is_socket=True)
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
                probe.settimeout(1.0)
                try:
                    probe.connect(os.fspath(path))
                except OSError:
                    os.unlink(path)  # stale: its supervisor is gone
                else:
                    raise ControlError(f"another aioreload already serves {os.fspath(folder)}")
        import anyio

        try:
            listener = await anyio.create_unix_listener(path, mode=0o600, backlog=16)
        except OSError as exc:
            raise ControlError(f"cannot listen on {path}: {exc.strerror}") from None
        return cls(path, listener)

    async def __aenter__(self) -> ControlServer:
        return self

    async def __aexit__(self, *_: object) -> None:
        with contextlib.suppress(OSError):
            info = os.lstat(self.path)
            if (info.st_dev, info.st_ino) == self._identity:
                os.unlink(self.path)
        import anyio

        with anyio.CancelScope(shield=True):
            await self._listener.aclose()

    async def serve(self, reload: Callable[[], Awaitable[int]]) -> None:
        """Answer requests until cancelled; ``reload`` restarts the child and returns its pid."""
        import anyio

        async def handle(stream: anyio.abc.SocketStream) -> None:
            async with stream:
                with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
                    await stream.send(await self._answer(stream, reload))

        await self._listener.serve(handle)

    async def _answer(self, stream: anyio.abc.SocketStream, reload: Callable[[], Awaitable[int]]) -> bytes:
        import anyio

        request = b""
        with anyio.move_on_after(_REQUEST_TIMEOUT):
            while not request.endswith(b"\n") and len(request) < 64:
                try:
                    request += await stream.receive(64)
                except (anyio.EndOfStream, anyio.BrokenResourceError):
                    break
        uid = _peer_uid(stream)
        if uid is not None and uid != os.getuid():
            return b"error refused: the request came from another user\n"
        if request.strip() != b"reload":
            return b"error unknown request\n"
        try:
            pid = await reload()
        except AioreloadError as exc:
            return f"error {exc}\n".encode()
        return f"ok {pid}\n".encode()

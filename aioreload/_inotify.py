"""A minimal inotify binding for Linux (ctypes, no dependencies), read from the event loop.

Why not only watchfiles' engine: it checks for news in a worker thread every ``step``
milliseconds, so a change is noticed 1-2 steps late and an idle supervisor still wakes 20 times
a second. inotify's descriptor becomes readable the moment something changes; awaiting that
with ``anyio.wait_readable`` costs nothing while idle and nothing in latency. Other platforms,
polling, and a refused inotify fall back to watchfiles (see ``_watch``).

We ask for content and name changes only. ``IN_ATTRIB`` is left out on purpose: reading a file
can update its access time, which would make a child's own imports look like edits.
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct
from collections.abc import Iterator
from typing import final

import anyio

__all__ = ["IN_ISDIR", "IN_Q_OVERFLOW", "Inotify", "WatchLimitError"]

IN_MODIFY = 0x00000002
IN_CLOSE_WRITE = 0x00000008
IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_DELETE_SELF = 0x00000400
IN_MOVE_SELF = 0x00000800
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000
IN_ONLYDIR = 0x01000000
IN_EXCL_UNLINK = 0x04000000
IN_ISDIR = 0x40000000
IN_NONBLOCK = 0o4000
IN_CLOEXEC = 0o2000000

_MASK = (
    IN_MODIFY
    | IN_CLOSE_WRITE
    | IN_MOVED_FROM
    | IN_MOVED_TO
    | IN_CREATE
    | IN_DELETE
    | IN_DELETE_SELF
    | IN_MOVE_SELF
    | IN_ONLYDIR
    | IN_EXCL_UNLINK
)
_HEADER = struct.Struct("iIII")


class WatchLimitError(OSError):
    """The kernel refused another inotify instance or watch (a per-user limit)."""


def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.inotify_init1.argtypes = [ctypes.c_int]
    libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
    libc.inotify_rm_watch.argtypes = [ctypes.c_int, ctypes.c_int]
    return libc


@final
class Inotify:
    """One inotify descriptor watching folders; owned and closed by its creator."""

    def __init__(self) -> None:
        self._libc = _libc()
        fd = self._libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            code = ctypes.get_errno()
            raise WatchLimitError(code, f"inotify_init1: {os.strerror(code)}")
        self.fd: int = fd
        self._paths: dict[int, str] = {}
        self._wds: dict[str, int] = {}

    def __enter__(self) -> Inotify:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def __len__(self) -> int:
        return len(self._wds)

    def __contains__(self, folder: object) -> bool:
        return folder in self._wds

    def close(self) -> None:
        """Close the descriptor (idempotent); the kernel drops every watch with it."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def add(self, folder: str) -> bool:
        """Watch ``folder``; ``False`` when it vanished or is not a folder.

        Raises:
            WatchLimitError: the per-user watch limit is reached.
            PermissionError: the folder cannot be read.
        """
        wd = self._libc.inotify_add_watch(self.fd, os.fsencode(folder), _MASK)
        if wd < 0:
            code = ctypes.get_errno()
            if code in (errno.ENOENT, errno.ENOTDIR):
                return False
            if code == errno.ENOSPC:
                raise WatchLimitError(code, "inotify watch limit reached (fs.inotify.max_user_watches)")
            if code == errno.EACCES:
                raise PermissionError(code, os.strerror(code), folder)
            raise OSError(code, os.strerror(code), folder)
        self._paths[wd] = folder
        self._wds[folder] = wd
        return True

    def watched(self) -> list[str]:
        """The folders watched now."""
        return list(self._wds)

    def discard(self, folder: str) -> None:
        """Stop watching ``folder`` if watched."""
        wd = self._wds.pop(folder, None)
        if wd is not None:
            self._paths.pop(wd, None)
            self._libc.inotify_rm_watch(self.fd, wd)

    async def read(self) -> list[tuple[str, int]]:
        """Wait for events; return ``(path, mask)`` pairs (``("", IN_Q_OVERFLOW)`` on overflow)."""
        while True:
            await anyio.wait_readable(self.fd)
            try:
                data = os.read(self.fd, 256 * 1024)
            except BlockingIOError:
                continue
            return list(self._parse(data))

    def _parse(self, data: bytes) -> Iterator[tuple[str, int]]:
        offset = 0
        while offset + _HEADER.size <= len(data):
            wd, mask, _cookie, length = _HEADER.unpack_from(data, offset)
            offset += _HEADER.size
            name = data[offset : offset + length].rstrip(b"\0")
            offset += length
            if mask & IN_Q_OVERFLOW:
                yield "", IN_Q_OVERFLOW
                continue
            folder = self._paths.get(wd)
            if folder is None:
                continue
            if mask & IN_IGNORED:  # the kernel dropped this watch (folder deleted or unmounted)
                self._paths.pop(wd, None)
                if self._wds.get(folder) == wd:
                    del self._wds[folder]
                continue
            yield (os.path.join(folder, os.fsdecode(name)) if name else folder), mask

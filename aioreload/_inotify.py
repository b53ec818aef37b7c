"""A minimal ctypes binding for inotify, read from the event loop (Linux).

The change source built on it is ``_inotify_source``; which folder each watch is, through
moves and overflows, is ``_tree``'s business.

OS-level choices, and why:

- One non-blocking inotify descriptor, awaited with ``anyio.wait_readable``: an idle source costs
  nothing, and a change is seen the moment the kernel queues it (no polling step).
- inotify is not recursive: one watch per folder, ignored folders never watched. Which folder a
  watch descriptor is, through scans, moves, renames, deletions and overflows, is the business of
  :class:`~aioreload._tree.FolderTree`.
- The mask asks for name changes (create, delete, move), content changes (``IN_MODIFY``,
  ``IN_CLOSE_WRITE``) and ``IN_ATTRIB``. ``IN_ACCESS`` is left out: reading is not changing (and
  on Linux a read gives ``IN_ACCESS``, never ``IN_ATTRIB``).
- What a file event means (``IN_CLOSE_WRITE`` without a write, ``IN_ATTRIB`` without a new
  modification time) is decided in ``_inotify_source``.
- ``IN_EXCL_UNLINK``: no events from files that were deleted but are still open.
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct
from typing import NamedTuple, final

import anyio
import anyio.abc

from ._sources import WatchLimitError

__all__ = ["MASK", "Inotify", "RawEvent", "WatchLimitError"]

IN_MODIFY = 0x00000002
IN_ATTRIB = 0x00000004
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

NAME_CHANGES = IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO
MASK = (
    IN_MODIFY
    | IN_ATTRIB
    | IN_CLOSE_WRITE
    | NAME_CHANGES
    | IN_DELETE_SELF
    | IN_MOVE_SELF
    | IN_ONLYDIR
    | IN_EXCL_UNLINK
)
_HEADER = struct.Struct("iIII")
_READ_SIZE = 256 * 1024


class RawEvent(NamedTuple):
    """One inotify event as the kernel reported it (``name`` empty for the watched folder itself)."""

    wd: int
    mask: int
    cookie: int
    name: str


def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.inotify_init1.argtypes = [ctypes.c_int]
    libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
    libc.inotify_rm_watch.argtypes = [ctypes.c_int, ctypes.c_int]
    return libc


@final
class Inotify:
    """One inotify descriptor; watches are added and removed by descriptor number.

    ``add`` and ``discard`` may be called from a worker thread while the loop reads.
    """

    def __init__(self) -> None:
        """Open the descriptor.

        Raises:
            WatchLimitError: the kernel refused (``fs.inotify.max_user_instances`` reached).
        """
        self._libc = _libc()
        fd = self._libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            code = ctypes.get_errno()
            raise WatchLimitError(code, f"inotify_init1: {os.strerror(code)}")
        self.fd: int = fd

    def close(self) -> None:
        """Close the descriptor (idempotent); the kernel drops every watch with it."""
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            os.close(fd)

    async def aclose(self) -> None:
        """Close the descriptor in a worker thread.

        With thousands of watches the kernel takes tens of milliseconds to drop them, which
        must not stall the event loop.
        """
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(os.close, fd)

    def add(self, folder: str, mask: int = MASK) -> int:
        """Watch ``folder``; its watch descriptor, or -1 when it vanished or is not a folder.

        The kernel gives the same descriptor again for a folder (inode) already watched, under
        whatever path it is reached by.

        Raises:
            WatchLimitError: the per-user watch limit is reached.
            PermissionError: the folder cannot be read.
        """
        wd: int = self._libc.inotify_add_watch(self.fd, os.fsencode(folder), mask)
        if wd >= 0:
            return wd
        code = ctypes.get_errno()
        if code in (errno.ENOENT, errno.ENOTDIR):
            return -1
        if code == errno.ENOSPC:
            raise WatchLimitError(code, "inotify watch limit reached (fs.inotify.max_user_watches)")
        if code == errno.EACCES:
            raise PermissionError(code, os.strerror(code), folder)
        raise OSError(code, os.strerror(code), folder)

    def discard(self, wd: int) -> None:
        """Remove a watch; one the kernel already dropped is no error."""
        if self.fd >= 0:
            self._libc.inotify_rm_watch(self.fd, wd)

    async def read(self) -> list[RawEvent]:
        """Wait for events and return them (``IN_Q_OVERFLOW`` comes with ``wd`` -1)."""
        while True:
            await anyio.wait_readable(self.fd)
            events = self.read_now()
            if events:
                return events

    def read_now(self) -> list[RawEvent]:
        """The events queued now, without waiting (empty when there are none)."""
        try:
            data = os.read(self.fd, _READ_SIZE)
        except BlockingIOError:
            return []
        events = []
        offset = 0
        while offset + _HEADER.size <= len(data):
            wd, mask, cookie, length = _HEADER.unpack_from(data, offset)
            offset += _HEADER.size
            name = data[offset : offset + length].rstrip(b"\0")
            offset += length
            events.append(RawEvent(wd, mask, cookie, os.fsdecode(name)))
        return events

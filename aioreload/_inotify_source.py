"""The Linux change source: inotify read from the event loop, folders kept by ``_tree``.

What an event means (the descriptor, the mask and why live in ``_inotify``):

- ``IN_CLOSE_WRITE`` counts only after an ``IN_MODIFY`` on that path since its last close: opening
  a file for writing and closing it unwritten (SQLite does this, so does ``open(p, "r+b")``)
  changes nothing, and must not reload anything.
- ``IN_ATTRIB`` counts only when the modification time changed: ``touch``, ``os.utime`` and
  build tools bumping mtimes set both times, which the kernel reports as ``IN_ATTRIB`` (a new
  mtime alone, as from ``touch -m``, comes as ``IN_MODIFY``). chmod, chown, extended
  attributes and link counts do not count. See :func:`_mtime_changed` for how we tell.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import final

import anyio
import anyio.abc

from ._filter import PathFilter
from ._inotify import (
    IN_ATTRIB,
    IN_CLOSE_WRITE,
    IN_CREATE,
    IN_DELETE,
    IN_ISDIR,
    IN_MODIFY,
    IN_MOVED_FROM,
    IN_MOVED_TO,
    NAME_CHANGES,
    Inotify,
)
from ._sources import Emit
from ._tree import FolderTree

__all__ = ["InotifySource"]

# Above this many IN_ATTRIB paths in one read, their stat calls go to a worker thread.
_INLINE_STATS = 16
# How many modification times we remember for IN_ATTRIB (oldest forgotten first).
_MTIME_MEMORY = 50_000


def _times(paths: Sequence[str]) -> dict[str, tuple[int, int]]:
    """``(st_mtime_ns, st_ctime_ns)`` of each path that can be read (blocking: many go to a thread)."""
    times = {}
    for path in paths:
        try:
            st = os.stat(path)
        except OSError:
            continue
        times[path] = (st.st_mtime_ns, st.st_ctime_ns)
    return times


def _mtime_changed(before: int | None, mtime: int, ctime: int) -> bool:
    """Whether an ``IN_ATTRIB`` on a file was a new modification time.

    ``IN_ATTRIB`` says some metadata changed: permissions, owner, link count, extended
    attributes, or both timestamps at once (``touch``, ``os.utime``; the kernel reports a new
    modification time alone, as from ``touch -m``, as ``IN_MODIFY``). Only a new modification
    time is worth a reload. When we know the file's previous modification time (``before``: read
    by :meth:`InotifySource.watch_files`, at an earlier ``IN_ATTRIB``, or after a write to a file
    we knew), we compare with it. For a file we know nothing about we read the kernel's own
    bookkeeping: setting the modification time sets the change time in the same call, to the
    same instant when the new time is "now", while chmod, chown, xattrs and links move only the
    change time, leaving mtime < ctime. So mtime == ctime means the last metadata change set the
    modification time. Its blind spot: a file we never read given an explicit past or future
    time (``touch -d``); its false alarm (a chmod within the same clock tick as a write) follows
    a real change anyway.
    """
    return mtime != before if before is not None else mtime == ctime


@final
class InotifySource:
    """The Linux change source: folders and files watched with inotify, read from the loop.

    Args:
        roots: Absolute, resolved paths to watch. A folder is watched with everything below it
            (ignored folders left out, symlinked folders followed); a file is watched through
            its folder, where only that file counts.
        path_filter: Decides which changed paths count and which folders are never entered.
    """

    def __init__(self, roots: Sequence[str], path_filter: PathFilter) -> None:
        self._mtimes: dict[str, int] = {}
        self._tree: FolderTree = FolderTree(roots, path_filter, self._remember)
        # Paths with an IN_MODIFY since their last close: their IN_CLOSE_WRITE counts.
        self._writing: set[str] = set()
        self._started = False
        self._early: set[str] = set()
        self._emit: Emit | None = None

    def __repr__(self) -> str:
        return f"<InotifySource watches={self.watch_count}>"

    @property
    def watch_count(self) -> int:
        """How many inotify watches this source holds now."""
        return self._tree.watch_count

    def watched_folders(self) -> list[str]:
        """The paths of the folders watched now, sorted."""
        return self._tree.watched_folders()

    def watch_files(self, files: Mapping[str, int]) -> None:
        """Also watch these files (path → ``st_mtime_ns`` the child loaded; -1: unknown)."""
        self._tree.watch_files(files)

    async def settled(self) -> None:
        """Return once no scan, rescan or file check is in progress."""
        await self._tree.busy.wait()

    async def run(
        self, emit: Emit, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Arm every watch, call ``task_status.started()``, then report changes until cancelled.

        Raises:
            WatchLimitError: the kernel refused the descriptor or a watch, at start or later.
        """
        self._emit = emit
        self._started = False
        ino = Inotify()
        tree = self._tree
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._close_tree_on_exit)
                # Events are read while the first scan runs (a long scan must not overflow the
                # queue); what they report is held back until the source is started.
                tg.start_soon(self._read, ino)
                if await tree.arm(ino, tg, self._report):
                    self._started = True
                    if self._early:
                        early, self._early = frozenset(self._early), set()
                        emit(early)
                    task_status.started()
        finally:
            tree.close()
            await ino.aclose()
        if tree.failure is not None:
            raise tree.failure

    async def _close_tree_on_exit(self) -> None:
        # Tells a running scan thread to stop at once, so cancelling run() never waits for it.
        try:
            await anyio.sleep_forever()
        finally:
            self._tree.close()

    def _report(self, paths: frozenset[str]) -> None:
        if self._tree.closed:
            return  # shutting down: whoever listened may be gone
        if not self._started:
            self._early |= paths
        elif self._emit is not None:
            self._emit(paths)

    async def _read(self, ino: Inotify) -> None:
        tree = self._tree
        while True:
            wait = tree.move_wait()
            if wait is None:
                events = await ino.read()
            else:  # a folder left through IN_MOVED_FROM: its IN_MOVED_TO may be in the next read
                events = []
                with anyio.move_on_after(wait):
                    events = await ino.read()
                if not events:
                    events = ino.read_now()
            changed, attrib, known = self._classify(tree.feed(events))
            if attrib or known:
                paths = [*attrib, *known]
                if len(paths) > _INLINE_STATS:
                    times = await anyio.to_thread.run_sync(_times, paths)
                else:
                    times = _times(paths)
                changed.update(
                    path
                    for path in attrib
                    if path in times and _mtime_changed(self._mtimes.get(path), *times[path])
                )
                self._remember({path: mtime for path, (mtime, _) in times.items()})
            if changed:
                self._report(frozenset(changed))

    def _remember(self, mtimes: Mapping[str, int]) -> None:
        """Record files' modification times, for telling a timestamp change from a chmod."""
        self._mtimes.update(mtimes)
        while len(self._mtimes) > _MTIME_MEMORY:
            del self._mtimes[next(iter(self._mtimes))]

    def _classify(self, events: list[tuple[str, int]]) -> tuple[set[str], list[str], list[str]]:
        """Apply ``events`` (in order) to what we know of each file.

        Returns:
            The paths changed; those with an ``IN_ATTRIB`` to check; and those written whose
            modification time we knew (to be read again, so the next check compares right).
        """
        changed: set[str] = set()
        attrib: dict[str, None] = {}
        known: dict[str, None] = {}
        for path, mask in events:
            if mask & IN_MODIFY:
                self._writing.add(path)
                changed.add(path)
            if mask & IN_CLOSE_WRITE and path in self._writing:
                self._writing.discard(path)
                changed.add(path)
            if mask & NAME_CHANGES:
                changed.add(path)
            if mask & (IN_DELETE | IN_MOVED_FROM):
                self._writing.discard(path)
                self._mtimes.pop(path, None)
                known.pop(path, None)
            elif mask & (IN_MODIFY | IN_CLOSE_WRITE | IN_CREATE | IN_MOVED_TO) and path in self._mtimes:
                known[path] = None
            if mask & IN_ATTRIB and not mask & IN_ISDIR:
                attrib[path] = None
        return changed, [path for path in attrib if path not in changed], list(known)

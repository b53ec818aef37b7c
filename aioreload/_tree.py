"""Folder bookkeeping for the inotify source: which folder each watch is, kept true.

inotify watches inodes but reports names: an event says "watch 7: x.py changed", and only our
table says watch 7 is ``/proj/pkg``. Whatever moves, renames or deletes folders must keep that
table true, or edits are reported under phantom paths, lost, or leak watches against the user's
limit (``fs.inotify.max_user_watches``). Choices:

- Scans (the first one, new folders, rescans) run in a worker thread, one at a time: jobs queue
  up and one task drains them, so the event loop is never blocked and keeps reading events.
- A folder is armed (``inotify_add_watch``) before it is listed, so an entry made while we list
  it gives an event. Arming and recording happen under one lock; the loop, meeting a watch it
  does not know yet, looks it up again under that lock.
- A folder's ``IN_MOVED_FROM`` and ``IN_MOVED_TO`` share a cookie. Matched, the watches of the
  whole subtree are re-keyed to the new path: same inodes, no gap. The partner may be in the
  next read, so an unmatched ``IN_MOVED_FROM`` waits for one more read and :data:`MOVE_WAIT`
  (events from inside that folder are held meanwhile); still alone, the folder moved out of the
  tree and its watches are removed.
- ``IN_IGNORED`` forgets a watch. A deleted or moved root is looked for every
  :data:`ROOT_RECHECK` seconds, only while it is missing: its parent is not watched.
- On ``IN_Q_OVERFLOW`` everything is rescanned: folders that appeared are armed, watches whose
  path no longer leads to their folder are dropped; then the roots and the watched files are
  reported as changed.
- Symlinked folders are followed. The kernel gives one watch per inode, whatever path reaches
  it, so we keep one path per watch: a scan visits real folders before symlinked ones (a folder
  reachable both ways is known by its real path) and each ``(st_dev, st_ino)`` once, so a loop
  (``ln -s .. loop``) is entered once.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import final

import anyio
import anyio.abc

from ._filter import PathFilter
from ._inotify import (
    IN_CREATE,
    IN_DELETE,
    IN_IGNORED,
    IN_ISDIR,
    IN_MOVE_SELF,
    IN_MOVED_FROM,
    IN_MOVED_TO,
    IN_Q_OVERFLOW,
    Inotify,
    RawEvent,
)
from ._poll import folder_key
from ._scans import Job, Scans, folder_link
from ._sources import Emit, WatchLimitError
from ._wdtable import WatchTable

__all__ = ["MOVE_WAIT", "FolderTree"]

logger = logging.getLogger(__name__)

MOVE_WAIT = 0.05
"""Seconds an unmatched ``IN_MOVED_FROM`` of a folder waits for its ``IN_MOVED_TO``."""


@dataclass
class _Move:
    """A folder's ``IN_MOVED_FROM`` waiting for its ``IN_MOVED_TO``."""

    path: str
    deadline: float
    link: bool
    reads: int = 0


@final
class FolderTree:
    """Every folder watch of the inotify source, and what each event means for them.

    Args:
        roots: Absolute, resolved paths: a folder is watched with all below it; a file through
            its folder, where only that file counts.
        path_filter: Which changed paths count; which folders are never entered.
        remember: Receives the modification times read when files are added.
    """

    def __init__(
        self, roots: Sequence[str], path_filter: PathFilter, remember: Callable[[Mapping[str, int]], None]
    ) -> None:
        self._roots = tuple(roots)
        self._filter = path_filter
        self.files: set[str] = set()
        """Individually watched files (imported modules, file roots): they count anywhere."""
        self._scans = Scans(path_filter, self.files, remember)
        self.busy = self._scans.busy
        self._watches: WatchTable | None = None
        self._moves: dict[int, _Move] = {}
        self._held: list[RawEvent] = []

    @property
    def failure(self) -> WatchLimitError | None:
        """Why the OS refused a watch, if it did."""
        return self._scans.failure

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._scans.stop.is_set()

    @property
    def watch_count(self) -> int:
        """How many inotify watches are held."""
        return 0 if self._watches is None or self.closed else self._watches.count()

    def watched_folders(self) -> list[str]:
        """The current paths of the watched folders, sorted."""
        return [] if self._watches is None or self.closed else self._watches.folders()

    def watch_files(self, files: Mapping[str, int]) -> None:
        """Also watch these files (path → ``st_mtime_ns`` loaded, -1: unknown); see ChangeSource."""
        self.files.update(files)
        self._scans.add_files(files)

    async def arm(self, ino: Inotify, tg: anyio.abc.TaskGroup, emit: Emit) -> bool:
        """Arm every folder under the roots, from a worker thread; later work runs in ``tg``.

        Returns:
            False when the OS refused a watch (:attr:`failure` is set and ``tg`` cancelled), or
            when closed meanwhile.
        """
        self._watches = WatchTable(ino)
        self._moves.clear()
        self._held.clear()
        self._scans.stop.clear()
        return await self._scans.first(self._watches, self._roots, tg, emit)

    def close(self) -> None:
        """Stop: a scan thread returns at its next folder, and no new work starts."""
        self._scans.stop.set()

    def move_wait(self) -> float | None:
        """Seconds left for a folder's ``IN_MOVED_FROM`` to meet its partner; None if none waits."""
        if not self._moves:
            return None
        return max(0.0, min(move.deadline for move in self._moves.values()) - anyio.current_time())

    def feed(self, events: Iterable[RawEvent]) -> list[tuple[str, int]]:
        """Apply one read's events (possibly none) to the watches.

        Returns:
            ``(path, mask)`` of the events that count: file events the filter keeps (or of
            individually watched files), and folders renamed or moved out.
        """
        out: list[tuple[str, int]] = []
        if self._watches is None:
            return out
        for move in self._moves.values():
            move.reads += 1
        for event in events:
            self._event(event, out)
        now = anyio.current_time()
        due = [cookie for cookie, move in self._moves.items() if move.reads and move.deadline <= now]
        for cookie in due:  # no partner came: the folder left the tree
            move = self._moves.pop(cookie)
            self._drop(move.path, link=move.link)
            self._count_folder(move.path, IN_MOVED_FROM, out)
        if due:
            self._release(out)
        return out

    def _event(self, event: RawEvent, out: list[tuple[str, int]]) -> None:
        assert self._watches is not None
        mask = event.mask
        if mask & IN_Q_OVERFLOW:
            self._moves.clear()
            self._held.clear()
            self._scans.add(Job("rescan"))
            return
        if mask & IN_IGNORED:
            self._lost(event.wd)
            return
        folder, dirs = self._watches.lookup(event.wd)
        if folder is not None and self._moves and self._in_flight(os.path.join(folder, event.name)):
            self._held.append(event)  # inside a folder whose move is not resolved yet
            return
        if not event.name:
            if folder is not None and mask & IN_MOVE_SELF:
                self._moved_self(folder)
            return
        if not mask & IN_ISDIR:
            for path in (os.path.join(d, event.name) for d in dirs):
                if path in self.files:
                    out.append((path, mask))
        if folder is not None:
            self._named(event, os.path.join(folder, event.name), out)

    def _named(self, event: RawEvent, path: str, out: list[tuple[str, int]]) -> None:
        assert self._watches is not None
        mask = event.mask
        if mask & IN_MOVED_TO and event.cookie in self._moves:
            self._renamed(self._moves.pop(event.cookie).path, path, out)
            self._release(out)
            return
        is_dir = bool(mask & IN_ISDIR) or path in self._watches.wd_of  # or a symlink to one
        if mask & IN_MOVED_FROM and is_dir:
            deadline = anyio.current_time() + MOVE_WAIT
            self._moves[event.cookie] = _Move(path, deadline, link=not mask & IN_ISDIR)
        elif mask & (IN_CREATE | IN_MOVED_TO) and (is_dir or folder_link(path)):
            if not self._filter.skip_folder(path):
                self._scans.add(Job("new", path))  # its files are reported by the scan
        elif mask & IN_DELETE and is_dir:
            self._drop(path, link=not mask & IN_ISDIR)
        elif not mask & IN_ISDIR:
            self._count(path, mask, out)

    def _count(self, path: str, mask: int, out: list[tuple[str, int]]) -> None:
        if self._filter(path):
            out.append((path, mask))

    def _count_folder(self, path: str, mask: int, out: list[tuple[str, int]]) -> None:
        # A folder that moved counts if files in it could (it may be gone: the filter could not
        # tell it from a file, and would hold it to the extensions).
        if not self._filter.skip_folder(path):
            out.append((path, mask | IN_ISDIR))

    def _renamed(self, old: str, new: str, out: list[tuple[str, int]]) -> None:
        assert self._watches is not None
        self._count_folder(old, IN_MOVED_FROM, out)
        self._count_folder(new, IN_MOVED_TO, out)
        if self._filter.skip_folder(new):
            self._drop(old)
        elif not self._watches.move(old, new):
            self._scans.add(Job("new", new))  # it was not watched (an ignored name before)
        elif self.busy.active:
            self._scans.add(Job("verify", new))  # a running scan may have missed folders in it

    def _drop(self, path: str, *, link: bool = False) -> None:
        assert self._watches is not None
        self._watches.drop(path)
        if link:  # the folder may also be reachable by a path we did not record: look again
            for root in sorted(self._scans.folder_roots):
                self._scans.add(Job("verify", root))

    def _lost(self, wd: int) -> None:
        assert self._watches is not None
        folder, dirs = self._watches.forget(wd)
        if folder in self._scans.folder_roots:
            self._scans.recover(folder)
        for root in self._scans.file_roots:
            if os.path.dirname(root) in dirs:
                self._scans.recover(root)

    def _moved_self(self, folder: str) -> None:
        assert self._watches is not None
        if folder in self._scans.folder_roots:
            self._drop(folder)
            self._scans.recover(folder)
        elif self._watches.key_of(folder) != folder_key(folder):
            self._drop(folder)  # it left through a parent we do not watch (a symlink's target)

    def _in_flight(self, path: str) -> bool:
        return any(path == move.path or path.startswith(move.path + os.sep) for move in self._moves.values())

    def _release(self, out: list[tuple[str, int]]) -> None:
        held, self._held = self._held, []
        for event in held:
            self._event(event, out)

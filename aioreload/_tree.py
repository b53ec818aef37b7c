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
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple, final

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
from ._poll import Busy, Key, Warnings, folder_key, walk
from ._sources import Emit, WatchLimitError

__all__ = ["MOVE_WAIT", "ROOT_RECHECK", "FolderTree"]

logger = logging.getLogger(__name__)

MOVE_WAIT = 0.05
"""Seconds an unmatched ``IN_MOVED_FROM`` of a folder waits for its ``IN_MOVED_TO``."""
ROOT_RECHECK = 0.25
"""How often a missing root is looked for."""


@final
class _Watches:
    """The watch descriptor <-> path tables, shared by the loop and the scan thread.

    Tree watches map one path per descriptor (``path_of``/``wd_of``; ``_kids`` lists the
    watched folders directly below a path, for moving or dropping a subtree at once). File
    watches (folders of individually watched files, :meth:`arm_files_folder`) are kept apart: a
    descriptor can be both, and is removed from the kernel only when neither needs it.
    """

    def __init__(self, ino: Inotify) -> None:
        self.lock = threading.Lock()
        self._ino = ino
        self.path_of: dict[int, str] = {}
        self.wd_of: dict[str, int] = {}
        self._keys: dict[int, Key] = {}
        self._kids: dict[str, set[str]] = {}
        self.dirs_of: dict[int, tuple[str, ...]] = {}
        self._file_wd: dict[str, int] = {}

    def count(self) -> int:
        """How many descriptors are held."""
        with self.lock:
            return len(self.path_of.keys() | self.dirs_of.keys())

    def folders(self) -> list[str]:
        """Every watched folder's path, sorted."""
        with self.lock:
            return sorted(self.wd_of.keys() | self._file_wd.keys())

    def lookup(self, wd: int) -> tuple[str | None, tuple[str, ...]]:
        """The tree path of ``wd`` and the file folders it serves."""
        folder, dirs = self.path_of.get(wd), self.dirs_of.get(wd, ())
        if folder is None and not dirs:
            # The scan thread may have armed it and not recorded it yet: it does both under the
            # lock, so once we hold the lock the record is there.
            with self.lock:
                folder, dirs = self.path_of.get(wd), self.dirs_of.get(wd, ())
        return folder, dirs

    def key_of(self, path: str) -> Key | None:
        """The identity recorded for the watched folder ``path``."""
        with self.lock:
            wd = self.wd_of.get(path)
            return None if wd is None else self._keys[wd]

    def arm(self, path: str, key: Key) -> tuple[int, bool]:
        """Watch the tree folder ``path``; its descriptor, and whether to list it.

        A folder already watched under another path that still leads to it was reached through
        a symlink: keep the first path and do not list it again. If the other path no longer
        leads to it, it moved while we were not told (an overflow): re-key it here.
        """
        with self.lock:
            wd = self._ino.add(path)
            if wd < 0:
                return wd, False
            known = self.path_of.get(wd)
            if known is not None and known != path:
                if folder_key(known) == self._keys[wd]:
                    return wd, False
                self._move(known, path)
            self._record(wd, path, key)
            return wd, True

    def arm_files_folder(self, folder: str) -> int:
        """Watch ``folder`` for individually watched files; its descriptor or -1."""
        with self.lock:
            wd = self._file_wd.get(folder)
            if wd is None:
                wd = self._ino.add(folder)
                if wd >= 0:
                    self._file_wd[folder] = wd
                    self.dirs_of[wd] = (*self.dirs_of.get(wd, ()), folder)
            return wd

    def forget(self, wd: int) -> tuple[str | None, tuple[str, ...]]:
        """The kernel dropped ``wd`` (``IN_IGNORED``): forget it and what was below it."""
        with self.lock:
            folder = self.path_of.get(wd)
            dirs = self.dirs_of.pop(wd, ())
            for path in dirs:
                self._file_wd.pop(path, None)
            if folder is not None:
                self._drop(folder, dead=wd)
        return folder, dirs

    def drop(self, path: str) -> None:
        """Stop watching the tree folder ``path`` and every watched folder below it."""
        with self.lock:
            self._drop(path, dead=-1)

    def move(self, old: str, new: str) -> bool:
        """Re-key the subtree at ``old`` to ``new``; False when ``old`` was not watched."""
        with self.lock:
            if old not in self.wd_of:
                return False
            self._move(old, new)
            return True

    def unseen(self, seen: set[int]) -> list[tuple[str, Key]]:
        """The tree folders (path, identity) whose descriptor is not in ``seen``."""
        with self.lock:
            return [(path, self._keys[wd]) for wd, path in self.path_of.items() if wd not in seen]

    def _subtree(self, path: str) -> list[str]:
        found, stack = [], [path]
        while stack:
            here = stack.pop()
            if here in self.wd_of:
                found.append(here)
            stack.extend(self._kids.get(here, ()))
        return found

    def _drop(self, path: str, dead: int) -> None:
        for here in self._subtree(path):
            wd = self._unrecord(here)
            if wd != dead and wd not in self.dirs_of:
                self._ino.discard(wd)

    def _move(self, old: str, new: str) -> None:
        moved = [(path, self.wd_of[path]) for path in self._subtree(old)]
        keys = {wd: self._keys[wd] for _, wd in moved}
        for path, _ in moved:
            self._unrecord(path)
        for path, wd in moved:
            self._record(wd, new + path[len(old) :], keys[wd])

    def _record(self, wd: int, path: str, key: Key) -> None:
        stale = self.wd_of.get(path)
        if stale is not None and stale != wd:  # the path leads to another folder now
            self._unrecord(path)
            if stale not in self.dirs_of:
                self._ino.discard(stale)
        previous = self.path_of.get(wd)
        if previous is not None and previous != path:
            self._unrecord(previous)
        self.path_of[wd] = path
        self.wd_of[path] = wd
        self._keys[wd] = key
        parent = os.path.dirname(path)
        kids = self._kids.get(parent)
        if kids is None:
            kids = self._kids[parent] = set()
        kids.add(path)

    def _unrecord(self, path: str) -> int:
        wd = self.wd_of.pop(path)
        del self.path_of[wd], self._keys[wd]
        parent = os.path.dirname(path)
        siblings = self._kids.get(parent)
        if siblings is not None:
            siblings.discard(path)
            if not siblings:
                del self._kids[parent]
        return wd


class _Job(NamedTuple):
    kind: str  # "new": scan, report its files; "verify": scan quietly; "rescan"; "root": it is back
    path: str = ""


@dataclass
class _Move:
    """A folder's ``IN_MOVED_FROM`` waiting for its ``IN_MOVED_TO``."""

    path: str
    deadline: float
    link: bool
    reads: int = 0


@final
class _Scans:
    """Scans, rescans, returned roots and added files: queued, run a batch at a time in a thread.

    One batch at a time keeps a single scan thread beside the loop; a burst of new folders (an
    unpacked archive) becomes one walk.
    """

    def __init__(
        self, path_filter: PathFilter, files: set[str], remember: Callable[[Mapping[str, int]], None]
    ) -> None:
        self._filter = path_filter
        self._files = files
        self._remember = remember
        self.busy = Busy()
        self.stop = threading.Event()
        self.failure: WatchLimitError | None = None
        self.folder_roots: set[str] = set()
        self.file_roots: set[str] = set()
        self._warn = Warnings(logger)
        self._watches: _Watches | None = None
        self._tg: anyio.abc.TaskGroup | None = None
        self._emit: Emit | None = None
        self._armed = False
        self._jobs: list[_Job] = []
        self._new_files: dict[str, int] = {}
        self._working = False
        self._missing: set[str] = set()

    async def first(
        self, watches: _Watches, roots: Sequence[str], tg: anyio.abc.TaskGroup, emit: Emit
    ) -> bool:
        """The first scan; later work runs in ``tg``. False if it failed or was stopped."""
        self._watches, self._tg, self._emit = watches, tg, emit
        self._armed = False
        self.busy.enter()
        try:
            await anyio.to_thread.run_sync(self._first, roots)
        except WatchLimitError as exc:
            self._fail(exc)
            return False
        finally:
            self.busy.leave()
        if self.stop.is_set():
            return False
        self._armed = True
        for root in roots:
            if root not in self.folder_roots and root not in self.file_roots:
                self.recover(root)
        self._kick()
        return True

    def _first(self, roots: Sequence[str]) -> None:
        folders = [root for root in roots if os.path.isdir(root)]
        files = [root for root in roots if root not in folders and os.path.exists(root)]
        self.folder_roots.update(folders)  # before scanning: a root may vanish meanwhile
        self.file_roots.update(files)
        self._files.update(files)
        self._scan(folders, report=False)
        self._add_files(dict.fromkeys(files, -1))

    def add(self, job: _Job) -> None:
        """Queue a job."""
        self._jobs.append(job)
        self._kick()

    def add_files(self, files: Mapping[str, int]) -> None:
        """Queue files to watch and check (see :meth:`FolderTree.watch_files`)."""
        self._new_files.update(files)
        self._kick()

    def _fail(self, exc: WatchLimitError) -> None:
        if self.failure is None:
            self.failure = exc
        if self._tg is not None:
            self._tg.cancel_scope.cancel()

    def _kick(self) -> None:
        if self._working or not self._armed or self.stop.is_set() or not (self._jobs or self._new_files):
            return
        assert self._tg is not None
        self._working = True
        self.busy.enter()
        self._tg.start_soon(self._work)

    async def _work(self) -> None:
        try:
            while (self._jobs or self._new_files) and not self.stop.is_set():
                jobs, self._jobs = self._jobs, []
                files, self._new_files = self._new_files, {}
                changed, mtimes = await anyio.to_thread.run_sync(self._run, jobs, files)
                if self.stop.is_set():
                    return
                if any(job.kind == "rescan" for job in jobs):
                    changed |= {*self.folder_roots, *self.file_roots, *self._files}
                self._remember(mtimes)
                if changed and self._emit is not None:
                    self._emit(frozenset(changed))
        except WatchLimitError as exc:
            self._fail(exc)
        finally:
            self._working = False
            self.busy.leave()

    def _run(self, jobs: list[_Job], files: dict[str, int]) -> tuple[set[str], dict[str, int]]:
        if any(job.kind == "rescan" for job in jobs):
            self._prune(self._scan(sorted(self.folder_roots), report=False)[0])
        changed = self._scan([job.path for job in jobs if job.kind == "new"], report=True)[1]
        self._scan([job.path for job in jobs if job.kind == "verify"], report=False)
        for root in (job.path for job in jobs if job.kind == "root"):
            if os.path.isdir(root):
                self.folder_roots.add(root)
                changed |= self._scan([root], report=True)[1]
            else:
                self.file_roots.add(root)
                self._files.add(root)
                files.setdefault(root, -1)
            changed.add(root)
        stale, mtimes = self._add_files(files) if files else (set(), {})
        return changed | stale, mtimes

    def _scan(self, tops: Iterable[str], *, report: bool) -> tuple[set[int], set[str]]:
        """Arm every folder under ``tops``, each before it is listed (in the thread).

        Returns:
            The descriptors armed, and (with ``report``) the files found that the filter keeps.
        """
        armed: set[int] = set()
        files: set[str] = set()

        def enter(folder: str, key: Key) -> bool:
            wd, fresh = self._arm(folder, key)
            if wd >= 0:
                armed.add(wd)
            return fresh

        def found(entry: os.DirEntry[str]) -> None:
            files.add(entry.path)

        walk(tops, self._filter, enter, on_file=found if report else None, stop=self.stop, warn=self._warn)
        return armed, files

    def _arm(self, folder: str, key: Key) -> tuple[int, bool]:
        assert self._watches is not None
        try:
            return self._watches.arm(folder, key)
        except WatchLimitError:
            raise
        except OSError as exc:
            reason = "permission denied" if isinstance(exc, PermissionError) else exc.strerror
            self._warn(folder, f"cannot read {folder} ({reason}); not watching it")
            return -1, False

    def _prune(self, armed: set[int]) -> None:
        """Drop the watches a full scan did not reach whose path no longer leads to them."""
        assert self._watches is not None
        for path, key in self._watches.unseen(armed):
            if folder_key(path) != key:
                self._watches.drop(path)

    def _add_files(self, files: Mapping[str, int]) -> tuple[set[str], dict[str, int]]:
        """Arm the folders of ``files``, then compare each with the modification time given.

        Returns:
            The files changed (or gone) since, and the modification time of each one read.
        """
        assert self._watches is not None
        for folder in sorted({os.path.dirname(path) for path in files}):
            try:
                self._watches.arm_files_folder(folder)
            except WatchLimitError:
                raise
            except OSError as exc:
                self._warn(folder, f"cannot watch {folder} ({exc.strerror}); not watching it")
        changed: set[str] = set()
        mtimes: dict[str, int] = {}
        for path, loaded in files.items():
            try:
                mtime = os.stat(path).st_mtime_ns
            except OSError:
                changed.add(path)  # gone or unreadable: the child's copy is stale
                continue
            mtimes[path] = mtime
            if loaded < 0 or mtime != loaded:
                changed.add(path)
        return changed, mtimes

    def recover(self, root: str) -> None:
        """Look for a missing root until it is back, then scan it and report it."""
        if root not in self._missing and self._tg is not None and not self.stop.is_set():
            self._missing.add(root)
            self._tg.start_soon(self._await_root, root)

    async def _await_root(self, root: str) -> None:
        try:
            # Nothing tells us when a root comes back (its parent is not watched): poll for it.
            while not await anyio.to_thread.run_sync(os.path.exists, root):
                self._warn(root, f"watch path {root} disappeared; waiting for it to come back")
                await anyio.sleep(ROOT_RECHECK)
        finally:
            self._missing.discard(root)
        self._warn.forget(root)
        self.add(_Job("root", root))


def _folder_link(path: str) -> bool:
    return os.path.islink(path) and os.path.isdir(path)


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
        self._scans = _Scans(path_filter, self.files, remember)
        self.busy = self._scans.busy
        self._watches: _Watches | None = None
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
        self._watches = _Watches(ino)
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
            self._scans.add(_Job("rescan"))
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
        elif mask & (IN_CREATE | IN_MOVED_TO) and (is_dir or _folder_link(path)):
            if not self._filter.skip_folder(path):
                self._scans.add(_Job("new", path))  # its files are reported by the scan
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
            self._scans.add(_Job("new", new))  # it was not watched (an ignored name before)
        elif self.busy.active:
            self._scans.add(_Job("verify", new))  # a running scan may have missed folders in it

    def _drop(self, path: str, *, link: bool = False) -> None:
        assert self._watches is not None
        self._watches.drop(path)
        if link:  # the folder may also be reachable by a path we did not record: look again
            for root in sorted(self._scans.folder_roots):
                self._scans.add(_Job("verify", root))

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

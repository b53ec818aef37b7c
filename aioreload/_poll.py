"""Polling: a change source that only reads the file system, and the folder walk both sources share.

Used with ``poll=True`` (network and container file systems, where notifications never arrive),
as the fallback when the OS refuses watches, and wherever no native source exists. Choices:

- A pass walks the roots in a worker thread, so the event loop is never blocked. It walks them
  as the inotify source's tree does (:func:`walk`, shared): ignored folders are never entered,
  symlinked folders are followed, each ``(st_dev, st_ino)`` once, so a loop ends.
- Files are compared by ``(st_mtime_ns, st_size, st_ino)``: nanoseconds, so a save within the
  same second as the previous write is seen; the inode catches an atomic save (written beside,
  renamed over) that keeps the size and the time.
- Only files are reported (created, deleted or modified), never a folder: a folder's own time
  changes whenever an entry comes or goes, which would make a ``.pyc`` or an editor's swap file
  look like a change. Files the filter rejects are not even stat'ed.
- The first pass is the baseline; ``started()`` follows it.
- Pace: the next pass starts ``interval`` after one ends, or three times that pass's duration if
  longer, so on a huge tree (or a slow network share) scanning takes at most a quarter of the
  time instead of all of it.
"""

from __future__ import annotations

import logging
import os
import stat
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import final

import anyio
import anyio.abc

from ._filter import PathFilter
from ._sources import Emit

__all__ = ["Busy", "Key", "PollSource", "Warnings", "folder_key", "pace", "walk"]

logger = logging.getLogger(__name__)

Key = tuple[int, int]
"""A folder's identity: ``(st_dev, st_ino)``."""
Stamp = tuple[int, int, int]
"""What a pass compares: ``(st_mtime_ns, st_size, st_ino)``."""


def folder_key(path: str) -> Key | None:
    """The identity of the folder at ``path`` (symlinks followed); None if it is not one."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino) if stat.S_ISDIR(st.st_mode) else None


@final
class Warnings:
    """Logs a warning once per path (until the path is forgotten), through a module's logger."""

    def __init__(self, log: logging.Logger) -> None:
        self._log = log
        self._warned: set[str] = set()

    def __call__(self, path: str, message: str) -> None:
        """Log ``message`` unless a warning about ``path`` was logged already."""
        if path not in self._warned:
            self._warned.add(path)
            self._log.warning("%s", message)

    def forget(self, path: str) -> None:
        """Warn about ``path`` again next time (the trouble went away)."""
        self._warned.discard(path)


def walk(
    tops: Iterable[str],
    path_filter: PathFilter,
    enter: Callable[[str, Key], bool],
    *,
    on_file: Callable[[os.DirEntry[str]], None] | None = None,
    stop: threading.Event | None = None,
    warn: Callable[[str, str], None],
) -> None:
    """Visit every folder under ``tops`` that the filter does not skip (blocking: use a thread).

    Each folder is visited once per walk (by identity, so a symlink loop ends), real folders
    before symlinked ones (so a folder reachable both ways is first met by its real path).

    Args:
        tops: Folders to start from (not checked against the filter).
        path_filter: Folders it skips are never entered; files it rejects are not passed on.
        enter: Called with a folder and its identity before the folder is listed; returns
            whether to list it.
        on_file: Receives every entry that is not a folder and that the filter keeps.
        stop: When set, the walk returns at the next folder.
        warn: Called with a folder and a warning when the folder cannot be read.
    """
    visited: set[Key] = set()
    real = list(tops)[::-1]
    links: list[str] = []
    while stop is None or not stop.is_set():
        if not real:
            if not links:
                return
            real, links = links[::-1], []
        folder = real.pop()
        key = folder_key(folder)
        if key is None or key in visited:
            continue
        visited.add(key)
        if not enter(folder, key):
            continue
        try:
            with os.scandir(folder) as entries:
                for entry in entries:
                    try:
                        is_dir = entry.is_dir()
                    except OSError:
                        continue
                    if is_dir:
                        if not path_filter.skip_folder(entry.path):
                            (links if entry.is_symlink() else real).append(entry.path)
                    elif on_file is not None and path_filter(entry.path):
                        on_file(entry)
        except PermissionError:
            warn(folder, f"cannot read {folder} (permission denied); not watching it")
        except OSError:
            pass  # gone while we looked


def pace(interval: float, took: float) -> float:
    """Seconds to wait before the next pass, after one that took ``took`` seconds."""
    return max(interval, 3 * took)


@final
class Busy:
    """Counts work in progress and lets tasks wait until there is none (event loop only)."""

    def __init__(self) -> None:
        self._count = 0
        self._idle: anyio.Event | None = None

    @property
    def active(self) -> bool:
        """Whether some work is in progress."""
        return self._count > 0

    def enter(self) -> None:
        """Some work begins."""
        self._count += 1

    def leave(self) -> None:
        """Some work ended."""
        self._count -= 1
        if not self._count and self._idle is not None:
            self._idle.set()
            self._idle = None

    async def wait(self) -> None:
        """Return once no work is in progress."""
        while self._count:
            if self._idle is None:
                self._idle = anyio.Event()
            await self._idle.wait()


@final
class PollSource:
    """A change source that stats files in passes, in a worker thread.

    Args:
        roots: Absolute, resolved paths: folders are walked, files stat'ed (they always count).
        path_filter: Which files count; which folders are never entered.
        interval: Seconds between passes (more when a pass is slow; see :func:`pace`).
    """

    def __init__(self, roots: Sequence[str], path_filter: PathFilter, interval: float = 0.3) -> None:
        self._roots = tuple(roots)
        self._filter = path_filter
        self.interval = interval
        self._files: set[str] = set()
        self._unchecked: dict[str, int] = {}
        self._snapshot: dict[str, Stamp] = {}
        self._folders: list[str] = []
        self._busy = Busy()
        self._files_busy = False
        self._wake: anyio.Event | None = None
        self._stop = threading.Event()
        self._running = False
        self._warn = Warnings(logger)

    def __repr__(self) -> str:
        return f"<PollSource folders={len(self._folders)} files={len(self._snapshot)}>"

    @property
    def watch_count(self) -> int:
        """How many folders the last pass walked, plus the other folders of watched files."""
        walked = set(self._folders)
        return len(walked) + len({os.path.dirname(path) for path in self._files} - walked)

    def watched_folders(self) -> list[str]:
        """The folders the last pass walked, sorted."""
        return sorted(self._folders)

    def watch_files(self, files: Mapping[str, int]) -> None:
        """Also poll these files (path → ``st_mtime_ns`` loaded, -1: unknown); see ChangeSource."""
        self._files.update(files)
        self._unchecked.update(files)
        if self._running:
            if not self._files_busy:
                self._files_busy = True
                self._busy.enter()
            if self._wake is not None:
                self._wake.set()

    async def settled(self) -> None:
        """Return once no pass is in progress and files added have been checked."""
        await self._busy.wait()

    async def run(
        self, emit: Emit, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Take the baseline, call ``task_status.started()``, then report changes until cancelled."""
        self._stop.clear()
        self._running = True
        self._snapshot = {}
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._stop_on_exit)
                changed, took = await self._pass(baseline=True)
                task_status.started()
                if changed:
                    emit(frozenset(changed))
                while True:
                    if not self._unchecked:
                        self._wake = anyio.Event()
                        with anyio.move_on_after(pace(self.interval, took)):
                            await self._wake.wait()
                    owed, self._files_busy = self._files_busy, False  # this pass checks them
                    try:
                        changed, took = await self._pass(baseline=False)
                        if changed:
                            emit(frozenset(changed))
                    finally:
                        if owed:
                            self._busy.leave()
        finally:
            self._running = False
            self._stop.set()
            if self._files_busy:
                self._files_busy = False
                self._busy.leave()

    async def _stop_on_exit(self) -> None:
        # Tells a pass in its thread to stop at once, so cancelling run() never waits for it.
        try:
            await anyio.sleep_forever()
        finally:
            self._stop.set()

    async def _pass(self, *, baseline: bool) -> tuple[set[str], float]:
        unchecked, self._unchecked = self._unchecked, {}
        self._busy.enter()
        try:
            began = anyio.current_time()
            snapshot, folders = await anyio.to_thread.run_sync(self._walk, sorted(self._files))
            took = anyio.current_time() - began
        finally:
            self._busy.leave()
        if self._stop.is_set():  # cut short: not a picture of the tree
            return set(), took
        old, self._snapshot, self._folders = self._snapshot, snapshot, folders
        changed: set[str] = set()
        if not baseline:
            changed = {path for path in old.keys() | snapshot.keys() if old.get(path) != snapshot.get(path)}
        for path, loaded in unchecked.items():
            stamp = snapshot.get(path)
            if stamp is None or loaded < 0 or stamp[0] != loaded:
                changed.add(path)
            elif path not in old:
                changed.discard(path)  # newly watched, and as the child loaded it
        return changed, took

    def _walk(self, files: list[str]) -> tuple[dict[str, Stamp], list[str]]:
        """One pass: every file that counts, with its stamp, and the folders walked (a thread)."""
        snapshot: dict[str, Stamp] = {}
        folders: list[str] = []

        def enter(folder: str, _key: Key) -> bool:
            folders.append(folder)
            return True

        def on_file(entry: os.DirEntry[str]) -> None:
            try:
                st = entry.stat()
            except OSError:
                return  # gone, or a broken symlink
            snapshot[entry.path] = (st.st_mtime_ns, st.st_size, st.st_ino)

        tops = []
        for root in self._roots:
            if os.path.isdir(root):
                tops.append(root)
            elif not os.path.exists(root):
                self._warn(root, f"watch path {root} is missing; waiting for it to come back")
                continue
            else:
                files.append(root)
            self._warn.forget(root)
        walk(tops, self._filter, enter, on_file=on_file, stop=self._stop, warn=self._warn)
        for path in files:
            try:
                st = os.stat(path)
            except OSError:
                continue
            snapshot[path] = (st.st_mtime_ns, st.st_size, st.st_ino)
        return snapshot, folders

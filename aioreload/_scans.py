"""Scans for the inotify folder tree: queued, run a batch at a time in a worker thread."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import NamedTuple, final

import anyio
import anyio.abc

from ._filter import PathFilter
from ._poll import Busy, Key, Warnings, folder_key, walk
from ._sources import Emit, WatchLimitError
from ._wdtable import WatchTable

__all__ = ["ROOT_RECHECK", "Job", "Scans", "folder_link"]

logger = logging.getLogger(__name__)

ROOT_RECHECK = 0.25
"""How often a missing root is looked for."""


class Job(NamedTuple):
    kind: str  # "new": scan, report its files; "verify": scan quietly; "rescan"; "root": it is back
    path: str = ""


@final
class Scans:
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
        self._watches: WatchTable | None = None
        self._tg: anyio.abc.TaskGroup | None = None
        self._emit: Emit | None = None
        self._armed = False
        self._jobs: list[Job] = []
        self._new_files: dict[str, int] = {}
        self._working = False
        self._missing: set[str] = set()

    async def first(
        self, watches: WatchTable, roots: Sequence[str], tg: anyio.abc.TaskGroup, emit: Emit
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

    def add(self, job: Job) -> None:
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

    def _run(self, jobs: list[Job], files: dict[str, int]) -> tuple[set[str], dict[str, int]]:
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
        self.add(Job("root", root))


def folder_link(path: str) -> bool:
    return os.path.islink(path) and os.path.isdir(path)

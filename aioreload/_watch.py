"""The change source: filters, debounce and OS watches. The only module importing watchfiles.

We drive watchfiles' Rust engine (``watchfiles._rust_notify.RustNotify``, the documented
backend under ``awatch``) rather than ``awatch`` itself, for three things ``awatch`` cannot do:
tell us the moment the OS watch is in place (so a modification-time check can close the gap
before it), grow the set of watched paths while running (a child's imports, new folders), and
leave ignored folders unregistered.

Registration, by platform. inotify (Linux) needs one watch per folder, and a recursive watch
registers every folder below the root, ``node_modules`` and virtual environments included,
which can exhaust ``fs.inotify.max_user_watches``. On Linux we therefore walk the roots
ourselves, skip ignored folders, and watch each remaining folder non-recursively, adding new
folders as they appear. FSEvents (macOS) and ReadDirectoryChangesW (Windows) watch a whole tree
with one registration, so there we watch the roots recursively and filter events afterwards.
If the OS refuses a watch (limit reached), we warn and fall back to polling.

When the watched set grows, the new watch is armed *before* the old one retires, so no moment
goes unwatched. Debounce: after the first event the engine waits until ``step`` ms pass with no
new path (our ``debounce``, the quiet period) or ``debounce`` ms pass in all (our
``debounce_max``, the cap). Seconds become milliseconds here and nowhere else.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, final

import anyio

from ._filter import PathFilter
from ._inotify import IN_ISDIR, IN_Q_OVERFLOW, Inotify, WatchLimitError

__all__ = ["Watcher"]

logger = logging.getLogger(__name__)

Emit = Callable[[frozenset[str]], None]
"""Receives each batch of changed paths."""

# Watch each folder on its own (and skip ignored ones) where the OS needs a watch per folder.
PER_FOLDER = sys.platform.startswith("linux")
# Read inotify from the event loop on Linux (AIORELOAD_ENGINE=watchfiles forces the fallback).
USE_INOTIFY = PER_FOLDER and os.environ.get("AIORELOAD_ENGINE", "inotify") == "inotify"
# How often a missing watch root is looked for, and the polling period when we must poll.
_ROOT_RECHECK = 0.25
_POLL_MS = 300
_MIN_STEP_MS = 50


def _quiet_for(quiet: float, paths: int) -> float:
    """The quiet period for a batch of ``paths`` changes so far.

    One save touches a path or three; a checkout or an install touches hundreds, and a writer
    that busy can pause longer than a keystroke's quiet period. Waiting longer only for big
    batches keeps single saves fast and bulk changes in one reload.
    """
    if paths < 10:
        return quiet
    return quiet * (2 if paths < 100 else 4)


async def _first(*events: anyio.Event) -> None:
    """Wait until any of ``events`` is set."""
    if any(event.is_set() for event in events):
        return
    async with anyio.create_task_group() as tg:

        async def wait(event: anyio.Event) -> None:
            await event.wait()
            tg.cancel_scope.cancel()

        for event in events:
            tg.start_soon(wait, event)


@final
class _WatchSet:
    """Paths watched by a chain of engine instances; the newest is armed before the last retires."""

    def __init__(self, owner: Watcher, *, recursive: bool, keep: Callable[[str], bool]) -> None:
        self.paths: set[str] = set()
        self.recursive = recursive
        self.keep = keep
        self.rearm = anyio.Event()
        self.armed = 0
        self._owner = owner

    async def run(
        self,
        emit: Emit,
        *,
        after_arm: Callable[[], Iterable[str]] = tuple,
        inspect: Callable[[frozenset[str]], None] | None = None,
    ) -> None:
        owner = self._owner
        async with anyio.create_task_group() as tg:
            retire: anyio.Event | None = None
            while not owner.stopping.is_set():
                await _first(self.rearm, owner.stopping)
                if owner.stopping.is_set():
                    break
                self.rearm = anyio.Event()
                notify = owner.open_engine(sorted(self.paths), self.recursive)
                self.armed = len(self.paths)
                changed = frozenset(after_arm())
                if changed:
                    emit(changed)
                if retire is not None:
                    retire.set()
                retire = anyio.Event()
                tg.start_soon(self._follow, notify, retire, emit, inspect)
            if retire is not None:
                retire.set()

    async def _follow(
        self, notify: Any, retire: anyio.Event, emit: Emit, inspect: Callable[[frozenset[str]], None] | None
    ) -> None:
        """Report one engine's changes; close it at the first quiet moment after ``retire``."""
        owner = self._owner
        with notify:
            while not owner.stopping.is_set():
                # A finite timeout lets a retired engine report what it still holds, then go.
                raw = await anyio.to_thread.run_sync(
                    notify.watch, owner.cap_ms, owner.step_ms, 250, owner.stopping
                )
                if isinstance(raw, set):
                    paths = frozenset(path for _, path in raw)
                    if inspect is not None:
                        inspect(paths)
                    kept = frozenset(path for path in paths if self.keep(path))
                    if kept:
                        emit(kept)
                elif raw == "timeout" and retire.is_set():
                    return


@final
class Watcher:
    """Watches folders and files and hands each debounced batch of changed paths to ``emit``."""

    def __init__(
        self,
        roots: Sequence[Path],
        *,
        path_filter: PathFilter,
        debounce: float,
        debounce_max: float,
        poll: bool = False,
    ) -> None:
        self.roots = tuple(str(root) for root in roots)
        self.filter = path_filter
        self.quiet = debounce
        # watchfiles' engine wakes every step even when idle: keep its step at 50 ms or more.
        self.step_ms = max(_MIN_STEP_MS, round(debounce * 1000))
        self.cap_ms = max(self.step_ms, round(debounce_max * 1000))
        self.poll = poll
        self.stopping = anyio.Event()
        self._per_folder = PER_FOLDER and not poll
        self._tree = _WatchSet(self, recursive=not self._per_folder, keep=self._keep_tree_path)
        # A child's imported modules: path -> the time since which a modification counts as
        # unseen, until the watch covering it is armed.
        self._files: set[str] = set()
        self._file_set = _WatchSet(self, recursive=False, keep=self._files.__contains__)
        self._unchecked: dict[str, int] = {}
        self._warned: set[str] = set()
        self._root_gone = anyio.Event()
        # Linux: one inotify descriptor, read from the event loop, serves folders and files.
        self._inotify: Inotify | None = None
        self._decided = anyio.Event()
        self._inotify_gone = anyio.Event()
        self.early: Callable[[], None] | None = None
        self._emit: Emit | None = None

    def __repr__(self) -> str:
        return f"<Watcher roots={len(self.roots)} folders={self._tree.armed} files={len(self._files)}>"

    @property
    def armed_folders(self) -> int:
        """How many paths the folder watch registered with the OS (roots when recursive)."""
        if self._inotify is not None:
            return len(self._tree.paths)
        return self._tree.armed

    @property
    def armed_files(self) -> int:
        """How many individual files (imported modules) are watched."""
        if self._inotify is not None:
            return len(self._files)
        return len(self._files) if self._file_set.armed else 0

    def stop(self) -> None:
        """Make :meth:`run` and :meth:`run_files` return within one debounce step."""
        self.stopping.set()

    def _under_root(self, path: str) -> bool:
        return any(path == root or path.startswith(root + os.sep) for root in self.roots)

    def _keep_tree_path(self, path: str) -> bool:
        # A file given as a root is watched through its folder: its neighbours do not count.
        return self._under_root(path) and self.filter(path)

    def _fall_back(self, exc: OSError) -> None:
        self.poll = True
        self._per_folder = False
        logger.warning(
            "the OS refused file watches (%s); polling every %.1f s instead. On Linux, raise "
            "fs.inotify.max_user_watches / max_user_instances, or ignore big folders",
            exc,
            _POLL_MS / 1000,
        )

    def _add_folder(self, folder: str) -> bool:
        assert self._inotify is not None
        try:
            return self._inotify.add(folder)
        except PermissionError:
            self._warn(folder, f"cannot read {folder} (permission denied); not watching it")
            return False

    async def _run_inotify(self, emit: Emit) -> None:
        """Read inotify events from the loop; debounce them here (quiet period, then a cap)."""
        ino = self._inotify
        assert ino is not None
        self._emit = emit
        self._tree.paths = self._scan(self.roots, arm=self._add_folder)
        for folder in self._file_set.paths:
            self._add_folder(folder)
        if self._unchecked:
            changed = self._unseen_changes()
            if changed:
                emit(frozenset(changed))
        quiet = self.quiet
        cap = self.cap_ms / 1000
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._recover_roots, emit)

            async def stop_when_told() -> None:
                await self.stopping.wait()
                tg.cancel_scope.cancel()

            tg.start_soon(stop_when_told)
            pending: set[str] = set()
            began = 0.0
            while True:
                if not pending:
                    events = await ino.read()
                    began = anyio.current_time()
                else:
                    left = min(_quiet_for(quiet, len(pending)), began + cap - anyio.current_time())
                    events = []
                    with anyio.move_on_after(max(0.0, left)):
                        events = await ino.read()
                    if not events:
                        batch, pending = frozenset(pending), set()
                        emit(batch)
                        continue
                fresh = self._inotify_changes(events)
                if fresh and not pending and self.early is not None:
                    self.early()
                pending |= fresh

    def _inotify_changes(self, events: list[tuple[str, int]]) -> set[str]:
        """The paths in ``events`` that matter; new folders get watched on the way."""
        changed: set[str] = set()
        masks: dict[str, int] = {}
        for path, mask in events:  # a save is several events on one path: look at it once
            masks[path] = masks.get(path, 0) | mask
        for path, mask in masks.items():
            if mask & IN_Q_OVERFLOW:  # the kernel lost events: treat everything as changed
                changed.update(self.roots)
                continue
            under_root = self._under_root(path)
            if path in self.roots and not os.path.exists(path):
                self._root_gone.set()
            if (
                mask & IN_ISDIR
                and under_root
                and path not in self._tree.paths
                and not self.filter.skip_folder(path)
            ):
                if os.path.isdir(path):
                    self._tree.paths |= self._scan([path], arm=self._add_folder)
            elif mask & IN_ISDIR and path in self._tree.paths and not os.path.isdir(path):
                self._tree.paths.discard(path)
            if (under_root and self.filter(path)) or path in self._files:
                changed.add(path)
        return changed

    def open_engine(self, paths: list[str], recursive: bool) -> Any:
        """An armed engine over ``paths``; polls when the OS refuses more watches."""
        from watchfiles._rust_notify import RustNotify

        if not self.poll:
            try:
                return RustNotify(paths, False, False, _POLL_MS, recursive, True)
            except (OSError, RuntimeError) as exc:
                self.poll = True
                logger.warning(
                    "the OS refused file watches (%s); polling every %.1f s instead. On Linux, raise "
                    "fs.inotify.max_user_watches / max_user_instances, or ignore big folders",
                    exc,
                    _POLL_MS / 1000,
                )
        return RustNotify(paths, False, True, _POLL_MS, recursive, True)

    # -- folders ----------------------------------------------------------------------------

    async def run(self, emit: Emit) -> None:
        """Watch the roots (and, on Linux, the added files) until stopped."""
        if self._per_folder and USE_INOTIFY:
            try:
                self._inotify = Inotify()
            except OSError as exc:
                self._fall_back(exc)
        self._decided.set()
        if self._inotify is not None:
            try:
                with self._inotify:
                    await self._run_inotify(emit)
                return
            except WatchLimitError as exc:
                self._inotify = None
                self._fall_back(exc)
                self._file_set.rearm.set()
                self._inotify_gone.set()  # run_files takes over the files from here
        if not self.roots:
            await self.stopping.wait()
            return
        self._tree.paths = self._scan(self.roots) if self._per_folder else set(self.roots)
        self._tree.rearm.set()
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._recover_roots, emit)
            await self._tree.run(emit, inspect=self._notice_folders)
            tg.cancel_scope.cancel()

    def _scan(self, tops: Iterable[str], arm: Callable[[str], bool] | None = None) -> set[str]:
        """Every folder under ``tops`` worth watching, ignored ones left out (not entered).

        With ``arm``, each folder is armed as soon as it is found, before its contents are
        listed, so a change made while a big tree is being scanned is not missed.
        """
        found: set[str] = set()
        stack = []
        for top in tops:
            if os.path.isdir(top):
                stack.append(top)
            elif os.path.exists(top):  # a single file: watch the folder it is in
                folder = os.path.dirname(top)
                if arm is None or arm(folder):
                    found.add(folder)
        while stack:
            folder = stack.pop()
            if arm is not None and not arm(folder):
                continue
            found.add(folder)
            try:
                with os.scandir(folder) as entries:
                    for entry in entries:
                        if entry.is_dir(follow_symlinks=False) and not self.filter.skip_folder(entry.path):
                            stack.append(entry.path)
            except PermissionError:
                found.discard(folder)
                self._warn(folder, f"cannot read {folder} (permission denied); not watching it")
            except OSError:
                found.discard(folder)  # vanished while we looked
        return found

    def _notice_folders(self, paths: frozenset[str]) -> None:
        """Start watching folders that appeared; forget ones that went away."""
        if any(path in self.roots and not os.path.exists(path) for path in paths):
            self._root_gone.set()
        if not self._per_folder:
            return
        new = [
            p
            for p in paths
            if p not in self._tree.paths and os.path.isdir(p) and not self.filter.skip_folder(p)
        ]
        gone = [p for p in paths if p in self._tree.paths and not os.path.isdir(p)]
        self._tree.paths.difference_update(gone)
        if new:
            self._tree.paths |= self._scan(new)
            self._tree.rearm.set()

    async def _recover_roots(self, emit: Emit) -> None:
        """A deleted watch root is watched again once it is back (polls only while missing)."""
        while True:
            await self._root_gone.wait()
            self._root_gone = anyio.Event()
            missing = [root for root in self.roots if not os.path.exists(root)]  # noqa: ASYNC240
            if not missing:
                continue
            self._warn(missing[0], f"watch path {missing[0]} disappeared; waiting for it to come back")
            # Nothing notifies us of a folder's return once its parent is not watched: poll.
            while any(not os.path.exists(root) for root in missing):  # noqa: ASYNC110, ASYNC240
                await anyio.sleep(_ROOT_RECHECK)
            for root in missing:
                self._warned.discard(root)
                if self._inotify is not None:
                    self._tree.paths |= self._scan([root], arm=self._add_folder)
                elif self._per_folder:
                    self._tree.paths |= self._scan([root])
            self._tree.rearm.set()
            emit(frozenset(missing))

    def _warn(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            logger.warning("%s", message)

    # -- individual files -------------------------------------------------------------------

    def add_files(self, paths: Iterable[str], since_ns: int) -> None:
        """Also watch these files; a modification at or after ``since_ns`` counts as a change."""
        added = False
        for path in paths:
            if path in self._files:
                continue
            self._files.add(path)
            self._unchecked[path] = since_ns
            folder = os.path.dirname(path)
            if folder not in self._file_set.paths:
                self._file_set.paths.add(folder)
                added = True
        if self._inotify is not None and self._inotify.fd >= 0:
            for folder in self._file_set.paths - set(self._inotify.watched()):
                self._add_folder(folder)
            changed = self._unseen_changes()  # after the watches are in place: no gap
            if changed and self._emit is not None:
                self._emit(frozenset(changed))
        elif added:
            self._file_set.rearm.set()
        elif self._unchecked and self._file_set.armed:
            self._file_set.rearm.set()  # their folder is watched already: just check them

    async def run_files(self, emit: Emit) -> None:
        """Watch the files given to :meth:`add_files` until stopped (where inotify is not used)."""
        await self._decided.wait()
        if self._inotify is not None:
            await _first(self.stopping, self._inotify_gone)
            if self.stopping.is_set():
                return
        await self._file_set.run(emit, after_arm=self._unseen_changes)

    def _unseen_changes(self) -> list[str]:
        changed = []
        for path, since in self._unchecked.items():
            try:
                if os.stat(path).st_mtime_ns >= since:
                    changed.append(path)
            except OSError:
                changed.append(path)  # deleted or unreadable: the child's copy is stale
        self._unchecked.clear()
        return changed

"""Change source on watchfiles' engine: FSEvents (macOS), ReadDirectoryChangesW (Windows).

We drive ``watchfiles._rust_notify.RustNotify`` (the documented backend under ``awatch``)
rather than ``awatch`` itself, because ``awatch`` cannot tell us when its OS watch is armed
and cannot grow its set of paths while running; both are needed so that no edit is lost.
These platforms watch a whole tree with one registration, so the folder roots are watched
recursively and events are filtered afterwards. Folders holding individual files (single-file
roots, a child's imported modules) get a second, non-recursive engine; when that set grows a
new engine is armed *before* the old one retires, so no moment goes unwatched.

On Linux this source is used only when asked for (``AIORELOAD_ENGINE=native``); inotify read
from the event loop is better there (``_inotify``). The only module that imports watchfiles.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any, final

import anyio
import anyio.abc
import anyio.lowlevel
import anyio.to_thread

from ._filter import PathFilter
from ._poll import walk
from ._sources import Emit, WatchLimitError

__all__ = ["NativeSource", "open_engine"]

logger = logging.getLogger(__name__)

# watchfiles' engine checks for news every step; below 50 ms it only burns CPU.
_STEP_MS = 50
_POLL_MS = 300
_ROOT_RECHECK = 0.25
_ADDED = 1  # watchfiles.Change.added


def _no_warn(_: str, __: str) -> None:
    """Unreadable new folders are skipped quietly; the tree's owner warned at start if it could."""


def open_engine(paths: Sequence[str], *, recursive: bool) -> Any:
    """An armed watchfiles engine over ``paths`` (keyword arguments: a renamed one fails loudly).

    Raises:
        WatchLimitError: the OS refused the watch.
    """
    from watchfiles._rust_notify import RustNotify

    try:
        return RustNotify(
            watch_paths=list(paths),
            debug=False,
            force_polling=False,
            poll_delay_ms=_POLL_MS,
            recursive=recursive,
            ignore_permission_denied=True,
        )
    except (OSError, RuntimeError) as exc:
        raise WatchLimitError(str(exc)) from exc


async def _open_off_loop(paths: Sequence[str], *, recursive: bool) -> Any:
    """:func:`open_engine` in a worker thread: arming a big tree takes long; close it if cancelled."""
    engine = None
    try:
        with anyio.CancelScope(shield=True):
            engine = await anyio.to_thread.run_sync(partial(open_engine, paths, recursive=recursive))
        await anyio.lowlevel.checkpoint()
    except BaseException:
        if engine is not None:
            engine.close()
        raise
    return engine


@final
class NativeSource:
    """Watches the roots recursively and individual files' folders non-recursively."""

    def __init__(self, roots: Sequence[str], path_filter: PathFilter) -> None:
        self._folders = [root for root in roots if not os.path.isfile(root)]
        self._single = {root for root in roots if os.path.isfile(root)}
        self._filter = path_filter
        self._files: dict[str, int] = {}
        self._file_folders: set[str] = {os.path.dirname(root) for root in self._single}
        self._rearm_send, self._rearm = anyio.create_memory_object_stream[None](float("inf"))
        self._unchecked: dict[str, int] = {}
        self._armed_files = 0
        self._emit: Emit | None = None

    @property
    def watch_count(self) -> int:
        """Registrations held: one per folder root, one per folder of watched files."""
        return len(self._folders) + self._armed_files

    async def settled(self) -> None:
        """Nothing is scanned here: the OS watches whole trees."""

    def watch_files(self, files: Mapping[str, int]) -> None:
        """Watch these files' folders too, then report those changed since the child loaded them."""
        fresh = {path: mtime for path, mtime in files.items() if path not in self._files}
        if not fresh:
            return
        self._files.update(fresh)
        self._unchecked.update(fresh)
        self._file_folders.update(os.path.dirname(path) for path in fresh)
        self._rearm_send.send_nowait(None)

    async def run(self, emit: Emit, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        """Arm both engines, report started, then follow them until cancelled."""
        self._emit = emit
        with self._rearm_send, self._rearm:
            await self._run(emit, task_status)

    async def _run(self, emit: Emit, task_status: anyio.abc.TaskStatus[None]) -> None:
        async with anyio.create_task_group() as tg:
            if self._folders:
                tg.start_soon(self._follow_tree, await _open_off_loop(self._folders, recursive=True))
            retire = await self._arm_files(tg, None)
            task_status.started()
            async for _ in self._rearm:
                while True:  # one re-arm for every request already queued
                    try:
                        self._rearm.receive_nowait()
                    except anyio.WouldBlock:
                        break
                retire = await self._arm_files(tg, retire)

    async def _arm_files(
        self, tg: anyio.abc.TaskGroup, retire: threading.Event | None
    ) -> threading.Event | None:
        folders = sorted(self._file_folders)
        fresh: threading.Event | None = None
        if folders:
            engine = await _open_off_loop(folders, recursive=False)
            fresh = threading.Event()
            tg.start_soon(self._follow, engine, fresh, self._keep_file)
            self._armed_files = len(folders)
        # After the new engine is armed, so nothing slips between; stat calls off the loop.
        changed = await anyio.to_thread.run_sync(self._unseen)
        if changed and self._emit is not None:
            self._emit(frozenset(changed))
        if retire is not None:
            retire.set()
        return fresh

    def _unseen(self) -> list[str]:
        unchecked, self._unchecked = self._unchecked, {}
        changed = []
        for path, mtime in unchecked.items():
            try:
                if mtime < 0 or os.stat(path).st_mtime_ns != mtime:
                    changed.append(path)
            except OSError:
                changed.append(path)  # gone or unreadable: the child's copy is stale
        return changed

    def _keep_tree(self, path: str) -> bool:
        if os.path.isdir(path):  # a folder's own event: its files speak for themselves
            return False
        return any(path.startswith(root + os.sep) for root in self._folders) and self._filter(path)

    def _files_in_new_folders(self, raw: set[tuple[int, str]]) -> frozenset[str]:
        """Files inside folders that just appeared (blocking: runs in a worker thread).

        Where the engine watches per folder (inotify under watchfiles), a new folder is watched
        only after its creation is seen: a file written into it before then gives no event.
        Listing the new folder closes that gap, as the inotify source's scan of new folders does.
        """
        found: list[str] = []
        folders = [
            path
            for change, path in raw
            if change == _ADDED and os.path.isdir(path) and not self._filter.skip_folder(path)
        ]
        if folders:
            walk(
                folders, self._filter, lambda *_: True, on_file=lambda e: found.append(e.path), warn=_no_warn
            )
        return frozenset(found)

    def _keep_file(self, path: str) -> bool:
        return path in self._files or path in self._single

    async def _follow_tree(self, engine: Any) -> None:
        """Follow the tree engine; when a root is deleted, wait for it and watch it anew."""
        while True:
            await self._follow(engine, None, self._keep_tree)
            gone = [root for root in self._folders if not os.path.exists(root)]  # noqa: ASYNC240
            if not gone:
                return  # stopped: we are being cancelled
            logger.warning("watch path %s disappeared; waiting for it to come back", gone[0])
            # Nothing notifies us of a folder's return once its watch is gone: poll meanwhile.
            while any(not os.path.exists(root) for root in gone):  # noqa: ASYNC110, ASYNC240
                await anyio.sleep(_ROOT_RECHECK)
            engine = await _open_off_loop(self._folders, recursive=True)
            if self._emit is not None:
                self._emit(frozenset(gone))

    async def _follow(self, engine: Any, retire: threading.Event | None, keep: Callable[[str], bool]) -> None:
        """Report one engine's changes until cancelled, retired, or (tree) a root is gone."""
        stop = threading.Event()
        async with anyio.create_task_group() as tg:

            async def stop_on_exit() -> None:
                try:
                    await anyio.sleep_forever()
                finally:
                    stop.set()  # the engine's thread returns within one step

            tg.start_soon(stop_on_exit)
            with engine:
                while not stop.is_set():
                    raw = await anyio.to_thread.run_sync(engine.watch, _STEP_MS, _STEP_MS, 250, stop)
                    if isinstance(raw, set):
                        kept = frozenset(path for _, path in raw if keep(path))
                        if retire is None:  # the tree: files in new folders may predate their watch
                            kept |= await anyio.to_thread.run_sync(self._files_in_new_folders, raw)
                        if kept and self._emit is not None:
                            self._emit(kept)
                        if retire is None and any(not os.path.exists(r) for r in self._folders):  # noqa: ASYNC240
                            break
                    elif raw == "timeout" and retire is not None and retire.is_set():
                        break
            tg.cancel_scope.cancel()

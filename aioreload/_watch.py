"""The change source: watchfiles adapter, filters and debounce. The only module importing watchfiles.

watchfiles groups raw OS events itself: after the first event it waits until ``step``
milliseconds pass with no new path (our ``debounce``, the quiet period that restarts on each
new event), or until ``debounce`` milliseconds pass in all (our ``debounce_max``, the cap).
One conversion from our float seconds to its milliseconds happens here, nowhere else.
"""

from __future__ import annotations

import fnmatch
import logging
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, final

import anyio
import watchfiles

__all__ = ["DEFAULT_IGNORE_DIRS", "DEFAULT_IGNORE_GLOBS", "PathFilter", "Watcher"]

logger = logging.getLogger(__name__)

Emit = Callable[[frozenset[str]], None]
"""Receives each batch of changed paths."""

DEFAULT_IGNORE_DIRS = frozenset(
    {
        ".git",
        ".hg",
        ".svn",
        "__pycache__",
        ".mypy_cache",
        ".pytest_cache",
        ".ruff_cache",
        ".tox",
        ".nox",
        ".venv",
        "venv",
        ".direnv",
        "node_modules",
        ".idea",
        ".vscode",
    }
)
DEFAULT_IGNORE_GLOBS = (
    "*.py[cod]",
    "*.sw[a-p]",
    "*.swx",
    "*~",
    ".#*",
    "#*#",
    "4913",
    ".DS_Store",
    "*.tmp",
    "*.crswap",
)


@final
class PathFilter:
    """Decides which changed paths matter.

    A path is ignored when one of its folders is an ignored folder name, or when its name (or
    its path relative to a watch root) matches an ignore glob. With ``extensions`` set, only
    files with one of those suffixes count.
    """

    def __init__(
        self,
        *,
        ignore: Iterable[str] = (),
        ignore_dirs: Iterable[str] = DEFAULT_IGNORE_DIRS,
        extensions: Iterable[str] = (),
        roots: Sequence[Path] = (),
        gitignore: bool = False,
    ) -> None:
        self.ignore_dirs = frozenset(ignore_dirs)
        self.globs = (*DEFAULT_IGNORE_GLOBS, *ignore)
        self.extensions = tuple(e if e.startswith(".") else f".{e}" for e in extensions)
        self.roots = tuple(str(r) for r in roots)
        self._gitignores: list[Callable[[str], bool]] = []
        if gitignore:
            from ._gitignore import load

            self._gitignores = [load(Path(root)) for root in self.roots]

    def __call__(self, path: str) -> bool:
        """Whether a change to ``path`` should cause a reload."""
        parts = Path(path).parts
        if any(part in self.ignore_dirs for part in parts[:-1]):
            return False
        name = parts[-1] if parts else path
        if self.extensions and not name.endswith(self.extensions):
            return False
        if any(ignored(path) for ignored in self._gitignores):
            return False
        relative = self._relative(path)
        for glob in self.globs:
            if fnmatch.fnmatch(name, glob) or (relative and fnmatch.fnmatch(relative, glob)):
                return False
        return not (relative and any(part in self.ignore_dirs for part in Path(relative).parts))

    def _relative(self, path: str) -> str:
        for root in self.roots:
            if path.startswith(root + os.sep):
                return path[len(root) + 1 :]
        return ""


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
        self.roots = tuple(roots)
        self._filter = path_filter
        self._step_ms = max(1, round(debounce * 1000))
        self._cap_ms = max(self._step_ms, round(debounce_max * 1000))
        self._poll = poll
        self._stop = anyio.Event()
        # Individual files (a child's imported modules): path -> the time since which a
        # modification counts as unseen, until the watch covering it is armed.
        self._files: set[str] = set()
        self._dirs: set[str] = set()
        self._unchecked: dict[str, int] = {}
        self._rearm = anyio.Event()
        self.armed_files = 0

    def stop(self) -> None:
        """Make :meth:`run` return within one debounce step.

        Cancelling alone is not enough: watchfiles waits in a worker thread that only looks
        at its stop event, and would otherwise hold the cancellation for up to 5 s.
        """
        self._stop.set()

    def add_files(self, paths: Iterable[str], since_ns: int) -> None:
        """Also watch these files; a modification at or after ``since_ns`` counts as a change."""
        added = False
        for path in paths:
            if path in self._files:
                continue
            self._files.add(path)
            self._unchecked[path] = since_ns
            self._dirs.add(os.path.dirname(path))
            added = True
        if added:
            self._rearm.set()

    def _tracked(self, _change: watchfiles.Change, path: str) -> bool:
        return path in self._files

    async def run_files(self, emit: Emit) -> None:
        """Watch the files given to :meth:`add_files` until stopped.

        We drive watchfiles' documented Rust backend here rather than ``awatch``, because only
        it tells us when the OS watch is in place. When new folders must be added, the new
        watch is armed *before* the old one retires, so no moment goes unwatched; a newly
        added file's modification time, checked once its watch is armed, catches edits made
        between the child's start and then.
        """
        from watchfiles._rust_notify import RustNotify

        async with anyio.create_task_group() as tg:
            retire: anyio.Event | None = None
            while not self._stop.is_set():
                await _first(self._rearm, self._stop)
                if self._stop.is_set():
                    break
                self._rearm = anyio.Event()
                notify = RustNotify(sorted(self._dirs), False, self._poll, 300, False, True)  # armed
                self.armed_files = len(self._files)
                changed = self._unseen_changes()
                if changed:
                    emit(frozenset(changed))
                if retire is not None:
                    retire.set()
                retire = anyio.Event()
                tg.start_soon(self._follow_notify, notify, retire, emit)

    async def _follow_notify(self, notify: Any, retire: anyio.Event, emit: Emit) -> None:
        """Report one watch's changes; close it at the first quiet moment after ``retire``."""
        with notify:
            while not self._stop.is_set():
                # A finite timeout lets a retired watch report what it still holds, then go.
                raw = await anyio.to_thread.run_sync(
                    notify.watch, self._cap_ms, self._step_ms, 250, self._stop
                )
                if isinstance(raw, set):
                    paths = frozenset(path for _, path in raw if path in self._files)
                    if paths:
                        emit(paths)
                elif raw == "timeout" and retire.is_set():
                    return

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

    def __repr__(self) -> str:
        return f"<Watcher roots={len(self.roots)} poll={self._poll}>"

    def _keep(self, _change: watchfiles.Change, path: str) -> bool:
        return self._filter(path)

    async def run(self, emit: Emit) -> None:
        """Watch until cancelled."""
        if not self.roots:
            await self._stop.wait()
            return
        async for changes in watchfiles.awatch(
            *self.roots,
            stop_event=self._stop,
            watch_filter=self._keep,
            debounce=self._cap_ms,
            step=self._step_ms,
            force_polling=self._poll or None,
            ignore_permission_denied=True,
        ):
            paths = frozenset(path for _, path in changes)
            if paths:
                logger.debug("changes: %s", sorted(paths))
                emit(paths)

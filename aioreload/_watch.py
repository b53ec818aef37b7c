"""The watcher: one change source at a time, its changes put on the request stream, and the debounce.

Which source, by platform: inotify read from the event loop on Linux (``_inotify``), watchfiles'
engine on macOS and Windows (``_native``), the stat poller (``_poll``) when asked to poll or
when the OS refuses watches. ``AIORELOAD_ENGINE=inotify|native|poll`` overrides the choice.

Changes are put on the request stream *as they arrive*, so the supervisor can start stopping
the old child at the first event of a burst. The debounce is where the burst ends:
:meth:`Watcher.settled` returns once no change has arrived for the quiet period (longer for
big batches) or the cap since the burst began has passed, and no scan is in progress; the
supervisor starts the new child only then. Seconds are the unit here as everywhere; only
``_native`` speaks milliseconds to watchfiles.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, final

import anyio
import anyio.abc

from ._filter import PathFilter
from ._requests import Kind, Request, RequestStream
from ._sources import ChangeSource, WatchLimitError
from ._types import ReloadReason

if sys.version_info < (3, 11):  # pragma: no cover - anyio installs the backport there
    from exceptiongroup import BaseExceptionGroup

__all__ = ["ENGINE", "Watcher"]

logger = logging.getLogger(__name__)

ENGINE = os.environ.get("AIORELOAD_ENGINE") or ("inotify" if sys.platform.startswith("linux") else "native")
"""The change source used unless polling is asked for: ``inotify``, ``native`` or ``poll``."""

# watchfiles' engine reports at most every 50 ms: a shorter quiet period would split a save.
_NATIVE_MIN_QUIET = 0.05


def _quiet_for(quiet: float, paths: int) -> float:
    """The quiet period for a burst of ``paths`` changes so far.

    One save touches a path or three; a checkout or an install touches hundreds, and a writer
    that busy can pause longer than a keystroke's quiet period. Waiting longer only for big
    batches keeps single saves fast and bulk changes in one reload.
    """
    if paths < 10:
        return quiet
    return quiet * (2 if paths < 100 else 4)


def _limit_error(exc: BaseException) -> WatchLimitError | None:
    """The :class:`WatchLimitError` in ``exc`` (possibly inside a group), if any."""
    if isinstance(exc, WatchLimitError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _limit_error(inner)
            if found is not None:
                return found
    return None


@final
class _Burst:
    def __init__(self, now: float) -> None:
        self.first = self.last = now
        self.paths = 0


@final
class _Started(anyio.abc.TaskStatus[None]):
    """Tells the watcher's own caller that a source has armed (first source only)."""

    def __init__(self, outer: anyio.abc.TaskStatus[None]) -> None:
        self._outer: anyio.abc.TaskStatus[None] | None = outer

    def started(self, value: None = None) -> None:
        if self._outer is not None:
            self._outer.started()
            self._outer = None


@final
class Watcher:
    """Watches the roots (and files a child imported) and puts their changes on ``requests``.

    Args:
        roots: Folders and files to watch, absolute.
        path_filter: Decides which changed paths matter.
        requests: Where changes go.
        debounce: The quiet period that ends a burst, in seconds.
        debounce_max: The longest a burst can delay a reload, in seconds.
        poll: Poll instead of using OS notifications.
    """

    def __init__(
        self,
        roots: Sequence[Path],
        *,
        path_filter: PathFilter,
        requests: RequestStream,
        debounce: float,
        debounce_max: float,
        poll: bool = False,
    ) -> None:
        self.roots = tuple(str(root) for root in roots)
        self.filter = path_filter
        self._requests = requests
        self.quiet = debounce
        self.cap = max(debounce, debounce_max)
        self.engine = "poll" if poll else ENGINE
        self._files: dict[str, int] = {}
        self._source: ChangeSource | None = None
        self._burst: _Burst | None = None

    def __repr__(self) -> str:
        return f"<Watcher {self.engine} roots={len(self.roots)} files={len(self._files)}>"

    @property
    def watched_files(self) -> int:
        """How many individual files (a child's imported modules) are watched."""
        return len(self._files)

    @property
    def watch_count(self) -> int:
        """How many OS watches (or polled folders) the current source holds."""
        return 0 if self._source is None else self._source.watch_count

    def watch_files(self, files: Mapping[str, int]) -> None:
        """Also watch these files: path → the modification time (ns) the child loaded, -1 unknown."""
        fresh = {path: mtime for path, mtime in files.items() if path not in self._files}
        if fresh:
            self._files.update(fresh)
            if self._source is not None:
                self._source.watch_files(fresh)

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Watch until cancelled; ``task_status.started()`` once every watch is armed.

        When the OS refuses watches (at start or later), the source is closed and the poller
        takes over; a switch after start reports the roots as changed, since what happened
        in between is unknown.
        """
        status = _Started(task_status)
        switched = False
        while True:
            source = self._open(self.engine)
            if self._files:
                source.watch_files(dict(self._files))
            self._source = source
            try:
                if switched:
                    self._on_paths(frozenset(self.roots) | frozenset(self._files))
                await source.run(self._on_paths, task_status=status)
                return
            except BaseException as exc:
                limit = _limit_error(exc)
                if limit is None or self.engine == "poll":
                    raise
                logger.warning(
                    "the OS refused file watches (%s); polling instead. On Linux, raise "
                    "fs.inotify.max_user_watches / max_user_instances, or ignore big folders",
                    limit,
                )
                self.engine = "poll"
                switched = status._outer is None  # already reported armed: changes may be lost

    def _open(self, engine: str) -> ChangeSource:
        source: Any
        if engine == "inotify":
            from ._inotify_source import InotifySource

            source = InotifySource(self.roots, self.filter)
        elif engine == "native":
            from ._native import NativeSource

            source = NativeSource(self.roots, self.filter)
            self.quiet = max(self.quiet, _NATIVE_MIN_QUIET)
        else:
            from ._poll import PollSource

            source = PollSource(self.roots, self.filter)
        result: ChangeSource = source
        return result

    def _on_paths(self, paths: frozenset[str]) -> None:
        if not paths:
            return
        now = anyio.current_time()
        burst = self._burst
        if burst is None:
            burst = self._burst = _Burst(now)
        burst.last = now
        burst.paths += len(paths)
        self._requests.put(Request(Kind.RELOAD, ReloadReason.FILE_CHANGE, paths))

    async def settled(self) -> None:
        """Wait until the current burst of changes is over and no scan is in progress."""
        while True:
            burst = self._burst
            if burst is not None:
                deadline = min(burst.last + _quiet_for(self.quiet, burst.paths), burst.first + self.cap)
                if anyio.current_time() < deadline:
                    await anyio.sleep_until(deadline)
                    continue
                self._burst = None
            if self._source is not None:
                await self._source.settled()
            if self._burst is None:  # a scan that just ended may have found more
                return

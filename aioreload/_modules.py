"""Child side: report the source files of imported modules to the supervisor. Stdlib only.

Active only in a child started by :func:`aioreload.run` (``AIORELOAD_TRACK=1``). Idle cost is
zero: nothing polls. A finder placed first on ``sys.meta_path`` sees every import as it
happens, asks the finders behind it for the spec, reports ``spec.origin`` and hands the spec
back unchanged. The modules already imported are reported once at start. Files under the
standard library are skipped (they change only with the interpreter).

Each file is reported with the modification time it had when it was imported. Once the
supervisor's watch on it is armed, it compares that with the file's time then: a difference
means an edit slipped in before the watch, and the child reloads. A module created after the
child started is therefore not an edit (its time is the one the child loaded). Modules that
were imported before this finder existed are compared with the child's spawn time instead:
one modified after the spawn may or may not be the version the child loaded, so it counts
as changed.

If the program dies of an uncaught exception, the files named in the traceback are reported
too, so fixing a module that never imported successfully still reloads.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import os
import stat
import sys
import sysconfig
import threading
import traceback
from collections.abc import Iterable, Sequence
from types import ModuleType, TracebackType
from typing import final

from ._ipc import ENV_SPAWNED, ChildChannel

__all__ = ["install", "print_user_traceback", "report_crash", "traceback_files"]

_reporter: _Reporter | None = None


def _stdlib_prefixes() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    prefixes = {os.path.realpath(paths[key]) + os.sep for key in ("stdlib", "platstdlib") if key in paths}
    return tuple(prefixes)


def _site_prefixes() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    return tuple({os.path.realpath(paths[key]) + os.sep for key in ("purelib", "platlib") if key in paths})


@final
class _Reporter:
    def __init__(self, channel: ChildChannel) -> None:
        self._channel = channel
        self._seen: set[str] = set()
        self._lock = threading.Lock()
        self._skip = _stdlib_prefixes()
        self._keep = _site_prefixes()  # site-packages may live under the stdlib folder

    def _wanted(self, path: str) -> bool:
        if path.startswith(self._keep):
            return True
        return not path.startswith(self._skip)

    def report(self, paths: Iterable[str | None], *, loaded_before_ns: int | None = None) -> None:
        """Report the files behind ``paths`` with the modification time each has now.

        Args:
            paths: Source files (``None`` entries are skipped).
            loaded_before_ns: The files were loaded at an unknown moment before this report,
                but after this time: a modification at or after it counts as unknown (-1).
        """
        fresh: dict[str, int] = {}
        with self._lock:
            for path in paths:
                if not path or path in self._seen:
                    continue
                self._seen.add(path)
                real = _container(os.path.realpath(path))
                if real is None or not self._wanted(real) or real in fresh:
                    continue
                try:
                    status = os.stat(real)
                except OSError:
                    continue
                mtime = status.st_mtime_ns
                if loaded_before_ns is not None and mtime >= loaded_before_ns:
                    mtime = -1
                fresh[real] = mtime
        if fresh:
            with contextlib.suppress(OSError):  # the supervisor is gone; keep running
                self._channel.send("files", files=fresh)


def _container(path: str) -> str | None:
    """The regular file that holds ``path``: itself, or a zip archive it lives in.

    A module imported from a zip archive has an origin such as ``lib.zip/pkg/mod.py``; the
    file to watch is the archive (as Django's autoreloader does).
    """
    candidate = path
    while candidate and candidate != os.path.dirname(candidate):
        try:
            status = os.stat(candidate)
        except OSError:
            candidate = os.path.dirname(candidate)
            continue
        return candidate if stat.S_ISREG(status.st_mode) else None
    return None


def _module_file(module: ModuleType) -> str | None:
    spec = getattr(module, "__spec__", None)
    if spec is not None and spec.has_location and isinstance(spec.origin, str):
        return spec.origin
    path = getattr(module, "__file__", None)
    return path if isinstance(path, str) else None


@final
class _ImportWatcher(importlib.abc.MetaPathFinder):
    """Sees each import, lets the real finders find it, reports where it came from."""

    def __init__(self, reporter: _Reporter) -> None:
        self._reporter = reporter
        self._local = threading.local()

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if getattr(self._local, "busy", False):
            return None
        self._local.busy = True
        try:
            for finder in sys.meta_path:
                if finder is self or not hasattr(finder, "find_spec"):
                    continue
                spec = finder.find_spec(fullname, path, target)
                if spec is not None:
                    if spec.has_location and isinstance(spec.origin, str):
                        self._reporter.report([spec.origin])
                    return spec
            return None
        finally:
            self._local.busy = False


def traceback_files(exc: BaseException) -> list[str]:
    """The source files a traceback (and a SyntaxError) names, innermost last."""
    files: list[str] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        for frame in traceback.extract_tb(current.__traceback__):
            files.append(frame.filename)
        if isinstance(current, SyntaxError) and current.filename:
            files.append(current.filename)
        current = current.__cause__ or current.__context__
    return files


def install(channel: ChildChannel) -> None:
    """Start reporting imports and crash locations over ``channel`` (once per process)."""
    global _reporter
    if _reporter is not None:
        return
    reporter = _Reporter(channel)
    sys.meta_path.insert(0, _ImportWatcher(reporter))
    spawned = os.environ.get(ENV_SPAWNED, "")
    reporter.report(
        (_module_file(m) for m in list(sys.modules.values())),
        loaded_before_ns=int(spawned) if spawned.isdigit() else 0,
    )
    previous = sys.excepthook

    def hook(kind: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
        reporter.report(traceback_files(value))
        previous(kind, value, tb)

    sys.excepthook = hook
    _reporter = reporter


def report_crash(exc: BaseException) -> None:
    """Report the files an exception's traceback names (after :func:`install`)."""
    if _reporter is not None:
        _reporter.report(traceback_files(exc))


def print_user_traceback(exc: BaseException, *machinery: str) -> None:
    """Print ``exc`` as the interpreter would, from the user's first frame on.

    The leading frames of the import system, of aioreload and of the ``machinery`` folders
    (uvicorn's loader...) are left out: a ``SyntaxError`` then shows just its file, line and
    caret, which is where the mistake is.
    """
    import importlib

    folders = (*machinery, os.path.dirname(importlib.__file__), os.path.dirname(__file__))
    prefixes = (*(os.path.join(folder, "") for folder in folders), "<frozen ")
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename.startswith(prefixes):
        tb = tb.tb_next
    traceback.print_exception(type(exc), exc.with_traceback(tb), tb)

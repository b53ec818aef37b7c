"""The warm spare, supervisor side: what to preload, and whether a spare may still be used.

Most of a Python program's start is importing libraries that did not change. So while a
child runs, the supervisor keeps the next one ready: a fresh interpreter (never a fork: no
inherited threads, locks or sockets) started through ``_sparechild.py``, which imports the
standard-library and installed-package modules the running child imported, and then waits.
On a reload it becomes the child in a few milliseconds (``_sparechild`` makes ``sys.argv``,
``__main__``, ``sys.path[0]`` and the environment those of a cold start).

Never stale: only files from the standard library and installed packages are preloaded;
never the project, anything the watcher would report (a watched, not ignored path), editable
installs or folders added by ``.pth`` files (they lie outside those prefixes), nor what
``spare_exclude`` names. Just before a spare is used, every file it loaded, the interpreter,
the ``.pth`` files and the ``site-packages`` folders (a package installed or removed changes
their time) are looked at again, in a worker thread; any difference, or any doubt, and the
spare is thrown away and the child starts cold.

The loop (``_loop``) owns the processes; this module only decides.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, final

from ._pycommand import PythonCommand

__all__ = ["BOOTSTRAP", "Launcher", "Preload", "Warm", "is_stale", "rss_bytes"]

BOOTSTRAP = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_sparechild.py")
SPARE_DELAY = 2.0
"""Seconds after a child started before its spare is prepared, if it never says it is ready."""
MAX_LOST = 3
"""Spares that die before they are warm, in a row, before spares are given up for this run."""


@final
class Launcher:
    """Starts a Python command's children through the spare's bootstrap."""

    def __init__(self, command: PythonCommand) -> None:
        self.command = command

    @property
    def argv(self) -> list[str]:
        """What is spawned: the program's interpreter and options, running the bootstrap.

        The program's own words follow (the bootstrap ignores them), so that ``ps`` and
        ``pkill -f bot.py`` still find the program by its name.
        """
        return [self.command.interpreter, *self.command.options, BOOTSTRAP, *self._program_words()]

    def start(self, env: Mapping[str, str], *, prepare: bool) -> dict[str, Any]:
        """The ``start`` message: environment updates, and the command line a cold start shows."""
        command = self.command
        return {
            "op": "start",
            "env": dict(env),
            "prepare": prepare,
            "orig_argv": [command.interpreter, *command.options, *self._program_words()],
        }

    def _program_words(self) -> list[str]:
        command = self.command
        words = ["-m", command.target] if command.kind == "module" else [command.target]
        return [*words, *command.args]


@final
class Preload:
    """The modules the next spare imports, learned from the children's reports, in order."""

    def __init__(self, exclude: Iterable[str], watched: Callable[[str], bool]) -> None:
        self._exclude = tuple(exclude)
        self._watched = watched
        self.names: dict[str, None] = {}

    def learn(self, modules: object) -> int:
        """Add the ``[name, file]`` pairs of a report; returns how many were new."""
        if not isinstance(modules, list):
            return 0
        added = 0
        for item in modules:
            if not (isinstance(item, list) and len(item) == 2 and all(isinstance(x, str) for x in item)):
                continue
            name, path = item
            if name in self.names or self._excluded(name) or self._watched(path):
                continue
            self.names[name] = None
            added += 1
        return added

    def _excluded(self, name: str) -> bool:
        return any(name == prefix or name.startswith(prefix + ".") for prefix in self._exclude)


@final
@dataclass
class Warm:
    """What a warm spare told us: what it loaded, to check before it is used."""

    files: dict[str, int] = field(default_factory=dict)
    dirs: dict[str, int] = field(default_factory=dict)
    preloaded: int = 0
    failed: tuple[str, ...] = ()
    elapsed: float = 0.0
    """Seconds from the preload list sent to this answer (the supervisor measures it)."""

    @classmethod
    def from_message(cls, message: Mapping[str, Any], preloaded: int) -> Warm | None:
        """Parse a ``warm`` message; ``None`` when it is malformed or the spare is tainted."""
        files, dirs = message.get("files"), message.get("dirs")
        if not isinstance(files, dict) or not isinstance(dirs, dict) or message.get("tainted"):
            return None
        failed = message.get("failed")
        return cls(
            files={str(k): int(v) for k, v in files.items() if isinstance(v, int)},
            dirs={str(k): int(v) for k, v in dirs.items() if isinstance(v, int)},
            preloaded=preloaded,
            failed=tuple(str(x) for x in failed) if isinstance(failed, list) else (),
        )


def is_stale(warm: Warm) -> str | None:
    """Why a spare may no longer be used (a file it loaded or a package folder changed), else ``None``.

    Blocking (one ``stat`` per file): run it in a worker thread.
    """
    for group in (warm.dirs, warm.files):
        for path, mtime in group.items():
            try:
                now = os.stat(path).st_mtime_ns
            except OSError:
                return f"{path} is gone"
            if now != mtime:
                return f"{path} changed"
    return None


def rss_bytes(pid: int) -> int | None:
    """Resident memory of process ``pid`` (Linux ``/proc``; ``None`` elsewhere or when gone)."""
    try:
        with open(f"/proc/{pid}/statm") as f:
            pages = int(f.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE")

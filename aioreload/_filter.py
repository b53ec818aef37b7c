"""Which changed paths matter, and which folders are worth watching at all.

Shared by every change source (inotify, polling, watchfiles' engine) so that all of them
ignore exactly the same paths.
"""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import final

__all__ = ["DEFAULT_IGNORE_DIRS", "DEFAULT_IGNORE_GLOBS", "PathFilter"]

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
    """Decides which changed paths matter and which folders are worth watching.

    Relative to its watch root, a path is ignored when one of its folders is an ignored folder
    name, when its name or relative path matches an ignore glob, or when a ``.gitignore``
    ignores it. With ``extensions`` set, only files with one of those suffixes count.
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
        self._glob = re.compile("|".join(f"(?:{fnmatch.translate(glob)})" for glob in self.globs))
        self.extensions = tuple(e if e.startswith(".") else f".{e}" for e in extensions)
        self.roots = tuple(str(r) for r in roots)
        self._gitignores: list[Callable[[str], bool]] = []
        if gitignore:
            from ._gitignore import load

            self._gitignores = [load(Path(root)) for root in self.roots if Path(root).is_dir()]

    def __call__(self, path: str) -> bool:
        """Whether a change to ``path`` should cause a reload."""
        name = os.path.basename(path)
        if self.extensions and not name.endswith(self.extensions) and not os.path.isdir(path):
            return False
        return not self._ignored(path, name)

    def skip_folder(self, path: str) -> bool:
        """Whether the folder ``path`` (under a root) should not be watched at all."""
        return self._ignored(path, os.path.basename(path))

    def _ignored(self, path: str, name: str) -> bool:
        relative = self._relative(path)
        folders = relative.split(os.sep)[:-1] if relative else []
        if name in self.ignore_dirs or any(part in self.ignore_dirs for part in folders):
            return True
        if self._glob.match(os.path.normcase(name)) or (
            relative and self._glob.match(os.path.normcase(relative))
        ):
            return True
        return any(ignored(path) for ignored in self._gitignores)

    def _relative(self, path: str) -> str:
        for root in self.roots:
            if path.startswith(root + os.sep):
                return path[len(root) + 1 :]
        return ""

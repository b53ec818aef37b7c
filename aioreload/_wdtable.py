"""The table that says which folder each inotify watch is, shared by the loop and the scan thread."""

from __future__ import annotations

import logging
import os
import threading
from typing import final

from ._inotify import (
    Inotify,
)
from ._poll import Key, folder_key

__all__ = ["WatchTable"]

logger = logging.getLogger(__name__)


@final
class WatchTable:
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

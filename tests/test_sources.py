"""Change sources against real files: inotify (Linux) and polling, with real folder trees.

Tests wait for reported paths (bounded by ``fail_after``); absence is proven with a marker: do
what must not be reported, then write a fresh marker file and require that everything reported
up to the marker is markers.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import math
import os
import shutil
import struct
import subprocess
import sys
import termios
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import pytest

import aioreload._inotify
from aioreload._filter import PathFilter
from aioreload._inotify import IN_MOVED_FROM, MASK, Inotify
from aioreload._inotify_source import InotifySource
from aioreload._poll import PollSource, pace
from aioreload._sources import WatchLimitError
from aioreload._tree import FolderTree

pytestmark = pytest.mark.anyio
LINUX = sys.platform.startswith("linux")
linux_only = pytest.mark.skipif(not LINUX, reason="inotify is Linux-only")
Source = InotifySource | PollSource


class Reports:
    """What a source emitted, read in order."""

    def __init__(self) -> None:
        self._send, self._receive = anyio.create_memory_object_stream[frozenset[str]](math.inf)
        self.markers: set[str] = set()

    def emit(self, paths: frozenset[str]) -> None:
        self._send.send_nowait(paths)

    def close(self) -> None:
        self._send.close()
        self._receive.close()

    async def until(self, *paths: str | Path, timeout: float = 10.0) -> set[str]:
        """Everything reported from here until all of ``paths`` have been."""
        want = {str(path) for path in paths}
        seen: set[str] = set()
        with anyio.fail_after(timeout):
            while not want <= seen:
                seen |= await self._receive.receive()
        return seen

    async def flush(self, folder: Path) -> None:
        """Write a marker and wait for it: whatever was reported before it is consumed."""
        marker = folder / f"marker{len(self.markers)}.py"
        self.markers.add(str(marker))
        marker.write_text("m")
        await self.until(marker)

    async def nothing_else(self, folder: Path) -> None:
        """Write a marker and require that nothing but markers was reported up to it."""
        marker = folder / f"marker{len(self.markers)}.py"
        self.markers.add(str(marker))
        marker.write_text("m")
        seen = await self.until(marker)
        assert seen <= self.markers, f"reported: {sorted(seen - self.markers)}"


@asynccontextmanager
async def running(source: Source) -> AsyncIterator[Reports]:
    reports = Reports()
    try:
        async with anyio.create_task_group() as tg:
            with anyio.fail_after(20):
                await tg.start(source.run, reports.emit)
            yield reports
            tg.cancel_scope.cancel()
    finally:
        reports.close()


def make(kind: str, *roots: Path, path_filter: PathFilter | None = None) -> Source:
    if path_filter is None:
        path_filter = PathFilter(roots=roots)
    if kind == "inotify":
        return InotifySource([str(root) for root in roots], path_filter)
    return PollSource([str(root) for root in roots], path_filter, interval=0.02)


def kernel_watches() -> list[str]:
    """The ``inotify wd:`` lines of every inotify descriptor of this process."""
    lines = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}") != "anon_inode:inotify":
                continue
            with open(f"/proc/self/fdinfo/{fd}") as info:
                lines += [line for line in info if line.startswith("inotify wd:")]
        except OSError:
            continue
    return lines


def inodes(lines: list[str]) -> set[str]:
    return {word for line in lines for word in line.split() if word.startswith("ino:")}


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "tree"
    root.mkdir()
    return root.resolve()


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    folder = tmp_path / "outside"
    folder.mkdir()
    return folder.resolve()


def write(path: Path, text: str = "x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


KINDS = [pytest.param("inotify", marks=linux_only), "poll"]


# -- shared behaviour ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
async def test_an_edit_is_reported(kind: str, tree: Path) -> None:
    module = write(tree / "pkg" / "sub" / "m.py", "1")
    async with running(make(kind, tree)) as reports:
        module.write_text("2")
        await reports.until(module)


@pytest.mark.parametrize("kind", KINDS)
async def test_a_file_in_a_new_folder_is_reported_and_then_watched(kind: str, tree: Path) -> None:
    source = make(kind, tree)
    async with running(source) as reports:
        module = write(tree / "new" / "deeper" / "x.py", "1")
        await reports.until(module)
        await source.settled()
        module.write_text("2")
        await reports.until(module)


@pytest.mark.parametrize("kind", KINDS)
async def test_a_deleted_root_is_watched_again_when_it_comes_back(kind: str, tmp_path: Path) -> None:
    root = tmp_path / "root"
    first = write(root / "a.py")
    source = make(kind, root)
    async with running(source) as reports:
        shutil.rmtree(root)
        await reports.until(first)
        second = write(root / "b.py", "1")
        await reports.until(second, *([root] if kind == "inotify" else []))
        await source.settled()
        second.write_text("2")
        await reports.until(second)


@pytest.mark.parametrize("kind", KINDS)
async def test_a_file_root_counts_alone_in_its_folder(kind: str, tmp_path: Path) -> None:
    app = write(tmp_path / "app" / "app.py", "1")
    neighbour = write(tmp_path / "app" / "other.py", "1")
    source = make(kind, app.resolve())
    async with running(source) as reports:
        neighbour.write_text("2")
        app.write_text("2")
        assert await reports.until(app.resolve()) == {str(app.resolve())}


# -- inotify: arming ----------------------------------------------------------------------------


@linux_only
async def test_started_only_once_every_folder_is_armed_each_before_it_is_listed(
    tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for i in range(30):
        (tree / f"d{i}" / "e").mkdir(parents=True)
    target = tree / "d7"
    real_scandir = os.scandir
    threads: list[int] = []

    def scandir(path: Any = ".") -> Any:
        if str(path) == str(target) and not threads:
            threads.append(threading.get_ident())
            write(target / "during.py")  # made while the scan is at this folder
            (target / "during_dir").mkdir()
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    source = make("inotify", tree)
    async with running(source) as reports:
        expected = {str(tree), *(str(p) for p in tree.rglob("*") if p.is_dir())}
        assert set(source.watched_folders()) == expected  # no waiting: started() came after
        assert threads
        assert threads[0] != threading.get_ident()  # the scan ran in a worker thread
        # The folder was armed before it was listed, so the file made then gave an event.
        await reports.until(target / "during.py")


def _queued(fd: int) -> int:
    buffer = fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0")
    return int(struct.unpack("i", buffer)[0])


@linux_only
async def test_an_event_for_a_watch_armed_but_not_yet_recorded_is_resolved(
    tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    race = tree / "race"
    race.mkdir()
    early = write(tmp_path / "early.py")
    real_add = Inotify.add

    def add(self: Inotify, folder: str, mask: int = MASK) -> int:
        wd = real_add(self, folder, mask)
        if folder == str(race):
            os.rename(early, race / "early.py")  # one event, in the new watch
            # Hold the record back until the loop has read that event (the queue is empty).
            deadline = time.monotonic() + 5
            while _queued(self.fd) and time.monotonic() < deadline:
                os.sched_yield()
        return wd

    monkeypatch.setattr(Inotify, "add", add)
    async with running(make("inotify", tree)) as reports:
        # The first scan reports no files: this report can only come from the event.
        await reports.until(race / "early.py")


# -- inotify: folders moving --------------------------------------------------------------------


@linux_only
async def test_a_folder_moved_out_releases_its_watches_and_reports_nothing_more(
    tree: Path, outside: Path
) -> None:
    write(tree / "pkg" / "sub" / "x.py")
    source = make("inotify", tree, path_filter=PathFilter(roots=[tree], extensions=["py"]))
    async with running(source) as reports:
        before = len(kernel_watches())
        assert before == source.watch_count == 3
        os.rename(tree / "pkg", outside / "pkg")
        await reports.until(tree / "pkg")  # the folder it was (which held .py files)
        await source.settled()
        assert len(kernel_watches()) == source.watch_count == before - 2
        assert source.watched_folders() == [str(tree)]
        (outside / "pkg" / "sub" / "x.py").write_text("2")  # neither reported nor as a phantom
        write(outside / "pkg" / "sub" / "new.py")
        await reports.nothing_else(tree)


@linux_only
async def test_a_move_split_across_two_reads_is_a_rename_and_holds_events_inside(tree: Path) -> None:
    module = write(tree / "a" / "sub" / "x.py")
    ino = Inotify()
    folder_tree = FolderTree([str(tree)], PathFilter(roots=[tree]), lambda _: None)
    try:
        async with anyio.create_task_group() as tg:
            assert await folder_tree.arm(ino, tg, lambda _: None)
            os.rename(tree / "a", tree / "b")
            module = tree / "b" / "sub" / "x.py"
            module.write_text("2")
            events: list[aioreload._inotify.RawEvent] = []
            with anyio.fail_after(5):
                while not any(event.name == "x.py" for event in events):
                    events += await ino.read()
            moved_from = next(e for e in events if e.mask & IN_MOVED_FROM)
            inside = [e for e in events if e.name == "x.py"]
            rest = [e for e in events if e is not moved_from and e.name != "x.py"]
            # First read: the folder left, and an edit inside it; its partner comes next read.
            first = folder_tree.feed([moved_from, *inside])
            assert first == []  # neither "moved out" nor a phantom tree/a/sub/x.py
            assert folder_tree.move_wait() is not None
            second = {path for path, _ in folder_tree.feed(rest)}
            assert second == {str(tree / "a"), str(tree / "b"), str(module)}
            assert folder_tree.watched_folders() == [str(tree), str(tree / "b"), str(tree / "b" / "sub")]
            tg.cancel_scope.cancel()
    finally:
        folder_tree.close()
        ino.close()


@linux_only
async def test_a_renamed_folder_keeps_its_watches_under_the_new_path(tree: Path) -> None:
    write(tree / "a" / "sub" / "x.py")
    source = make("inotify", tree)
    async with running(source) as reports:
        before = inodes(kernel_watches())
        os.rename(tree / "a", tree / "b")
        await reports.until(tree / "b")
        assert source.watched_folders() == [str(tree), str(tree / "b"), str(tree / "b" / "sub")]
        assert inodes(kernel_watches()) == before  # the same watches, re-keyed: no gap
        moved = tree / "b" / "sub" / "x.py"
        moved.write_text("2")
        seen = await reports.until(moved)
        assert not [path for path in seen if path.startswith(str(tree / "a"))]
        # A folder re-created at the old path is watched like any new one.
        (tree / "a").mkdir()
        (tree / "a" / "sub").mkdir()
        fresh = write(tree / "a" / "sub" / "y.py")
        await reports.until(fresh)
        await source.settled()
        fresh.write_text("2")
        await reports.until(fresh)
        assert str(tree / "a" / "sub") in source.watched_folders()


@linux_only
async def test_a_folder_renamed_to_an_ignored_name_is_no_longer_watched(tree: Path) -> None:
    write(tree / "a" / "x.py")
    source = make("inotify", tree)
    async with running(source) as reports:
        count = source.watch_count
        os.rename(tree / "a", tree / "node_modules")
        await reports.until(tree / "a")
        await source.settled()
        assert source.watch_count == len(kernel_watches()) == count - 1
        (tree / "node_modules" / "x.py").write_text("2")
        await reports.nothing_else(tree)


@linux_only
async def test_a_folder_moved_in_is_scanned(tree: Path, outside: Path) -> None:
    write(outside / "pkg" / "sub" / "z.py")
    source = make("inotify", tree)
    async with running(source) as reports:
        os.rename(outside / "pkg", tree / "pkg")
        module = tree / "pkg" / "sub" / "z.py"
        await reports.until(module)  # the files it brought count as new
        await source.settled()
        assert str(tree / "pkg" / "sub") in source.watched_folders()
        module.write_text("2")
        await reports.until(module)


@linux_only
async def test_a_deleted_folder_is_forgotten(tree: Path) -> None:
    module = write(tree / "a" / "sub" / "x.py")
    source = make("inotify", tree)
    async with running(source) as reports:
        count = len(kernel_watches())
        shutil.rmtree(tree / "a")
        await reports.until(module)
        await reports.flush(tree)  # the IN_IGNORED events came before the marker's
        assert source.watched_folders() == [str(tree)]
        assert source.watch_count == len(kernel_watches()) == count - 2


# -- inotify: overflow, symlinks, files, limits --------------------------------------------------


@linux_only
async def test_after_an_overflow_everything_is_rescanned_and_reported(tree: Path, outside: Path) -> None:
    with open("/proc/sys/fs/inotify/max_queued_events") as limit:
        room = int(limit.read())
    imported = write(outside / "mod.py")
    source = make("inotify", tree)
    async with running(source) as reports:
        source.watch_files({str(imported): imported.stat().st_mtime_ns})
        await source.settled()
        # Synchronously, so the loop reads nothing meanwhile: writes to two files in turn (the
        # kernel merges an event identical to the one before it). *.tmp: ignored by default.
        fds = [os.open(tree / name, os.O_WRONLY | os.O_CREAT) for name in ("a.tmp", "b.tmp")]
        try:
            for i in range(room + 400):
                os.write(fds[i % 2], b"x")
                if i == room + 200:  # past the queue's room: these events are lost
                    (tree / "late" / "deep").mkdir(parents=True)
        finally:
            for fd in fds:
                os.close(fd)
        await reports.until(tree, imported)
        await source.settled()
        assert str(tree / "late" / "deep") in source.watched_folders()
        module = write(tree / "late" / "deep" / "x.py")
        await reports.until(module)


@linux_only
async def test_symlinked_folders_are_followed_and_a_loop_is_harmless(tree: Path, outside: Path) -> None:
    write(outside / "real" / "x.py")
    os.symlink(outside / "real", tree / "link")
    (tree / "sub").mkdir()
    os.symlink("..", tree / "sub" / "loop")
    source = make("inotify", tree)
    async with running(source) as reports:
        assert source.watched_folders() == [str(tree), str(tree / "link"), str(tree / "sub")]
        assert source.watch_count == 3
        (outside / "real" / "x.py").write_text("2")
        await reports.until(tree / "link" / "x.py")
        # New after start: another loop, and another symlinked folder.
        os.symlink(tree, tree / "sub" / "loop2")
        write(outside / "real2" / "z.py")
        os.symlink(outside / "real2", tree / "link2")
        await reports.until(tree / "link2" / "z.py")
        await source.settled()
        assert source.watch_count == 4
        module = write(tree / "sub" / "y.py")
        await reports.until(module)


@linux_only
async def test_watched_files_anywhere_are_checked_then_watched(tree: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    same, stale, unknown, other = (
        write(site / f"{name}.py") for name in ("same", "stale", "unknown", "other")
    )
    source = make("inotify", tree)
    async with running(source) as reports:
        source.watch_files(
            {
                str(same): same.stat().st_mtime_ns,
                str(stale): stale.stat().st_mtime_ns - 1,
                str(unknown): -1,
            }
        )
        seen = await reports.until(stale, unknown)
        assert str(same) not in seen
        await source.settled()
        assert source.watched_folders() == sorted([str(tree), str(site)])
        same.write_text("2")
        await reports.until(same)
        other.write_text("2")  # in a watched folder, but not a watched file
        await reports.nothing_else(tree)


@linux_only
async def test_the_watch_limit_raises_out_of_run_at_start_and_later(
    tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_add = Inotify.add
    seen: list[Inotify] = []

    def add(self: Inotify, folder: str, mask: int = MASK) -> int:
        seen.append(self)
        if os.path.basename(folder) == "limit":
            raise WatchLimitError(28, "inotify watch limit reached")
        return real_add(self, folder, mask)

    monkeypatch.setattr(Inotify, "add", add)
    (tree / "limit").mkdir()
    with anyio.fail_after(10), pytest.raises(WatchLimitError):
        await make("inotify", tree).run(lambda _: None)
    assert seen[-1].fd == -1  # closed
    (tree / "limit").rmdir()

    source = make("inotify", tree)
    failures: list[WatchLimitError] = []

    async def watch(*, task_status: anyio.abc.TaskStatus[None]) -> None:
        try:
            await source.run(lambda _: None, task_status=task_status)
        except WatchLimitError as exc:
            failures.append(exc)

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            await tg.start(watch)
            (tree / "limit").mkdir()
    assert failures
    assert seen[-1].fd == -1
    assert source.watch_count == 0


class _Refusing:
    """A libc whose inotify calls fail with ``code``."""

    def __init__(self, code: int) -> None:
        self.code = code

    def inotify_init1(self, *_: object) -> int:
        ctypes.set_errno(self.code)
        return -1

    inotify_add_watch = inotify_init1


@linux_only
async def test_the_binding_reports_per_user_limits_as_watch_limit_error(
    tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ino = Inotify()
    try:
        monkeypatch.setattr(ino, "_libc", _Refusing(errno.ENOSPC))
        with pytest.raises(WatchLimitError):
            ino.add(str(tree))
        monkeypatch.setattr(ino, "_libc", _Refusing(errno.ENOENT))
        assert ino.add(str(tree / "gone")) == -1
    finally:
        ino.close()
    monkeypatch.setattr(aioreload._inotify, "_libc", lambda: _Refusing(errno.EMFILE))
    with pytest.raises(WatchLimitError):
        await make("inotify", tree).run(lambda _: None)


# -- inotify: what counts as a change of a file ------------------------------------------------


@linux_only
async def test_opening_for_writing_without_writing_is_not_a_change(tree: Path) -> None:
    data = write(tree / "data.bin")
    async with running(make("inotify", tree)) as reports:
        await reports.flush(tree)
        open(data, "r+b").close()
        await reports.nothing_else(tree)
        with open(data, "r+b") as file:
            file.write(b"y")
        await reports.until(data)


@linux_only
async def test_a_new_modification_time_is_a_change_other_metadata_is_not(tree: Path) -> None:
    module = write(tree / "a.py")
    untouched = write(tree / "b.py")
    async with running(make("inotify", tree)) as reports:
        await reports.flush(tree)
        os.utime(module)  # touch
        await reports.until(module)
        subprocess.run(["touch", "-m", str(module)], check=True)
        await reports.until(module)
        os.utime(module, ns=(10**18, 10**18))  # an explicit time, on a file whose time we know
        await reports.until(module)
        os.chmod(module, 0o600)
        os.chmod(untouched, 0o600)  # never seen before: mtime < ctime tells
        module.read_bytes()
        await reports.nothing_else(tree)


# -- inotify: the event loop is never blocked -------------------------------------------------


@linux_only
@pytest.mark.slow
async def test_a_big_tree_never_delays_a_ticker(tree: Path, outside: Path) -> None:
    for i in range(70):
        for j in range(100):
            os.makedirs(tree / f"d{i}" / f"e{j}")
    for i in range(30):
        for j in range(100):
            os.makedirs(outside / "big" / f"d{i}" / f"e{j}")
    deep = write(outside / "big" / "d29" / "e99" / "deep.py")
    lateness: list[float] = []
    ticked = anyio.Event()

    async def ticker(*, task_status: anyio.abc.TaskStatus[None]) -> None:
        task_status.started()
        while True:
            due = anyio.current_time() + 0.01
            with anyio.move_on_after(0.01):  # the 10 ms tick being measured, not a synchronisation
                await anyio.sleep_forever()
            lateness.append(anyio.current_time() - due)
            if len(lateness) == 20:
                ticked.set()

    source = make("inotify", tree)
    async with anyio.create_task_group() as tg:
        await tg.start(ticker)
        with anyio.fail_after(5):
            await ticked.wait()
        idle, lateness[:] = max(lateness), []  # the machine's own noise, for the message
        async with running(source) as reports:
            assert source.watch_count == 7071
            starting, lateness[:] = max(lateness), []
            os.rename(outside / "big", tree / "big")
            await reports.until(tree / "big" / "d29" / "e99" / "deep.py")
            await source.settled()
            assert source.watch_count == 7071 + 3031
            moving = max(lateness)
        tg.cancel_scope.cancel()
    noise = f"ticker late by {starting * 1000:.1f} ms starting, {moving * 1000:.1f} ms moving in"
    noise += f" ({idle * 1000:.1f} ms with nothing else running)"
    assert starting < 0.03, noise
    assert moving < 0.03, noise
    assert not deep.exists()  # it was moved in with its folder


# -- polling ------------------------------------------------------------------------------------


async def test_polling_sees_a_save_within_the_same_second(tree: Path) -> None:
    module = write(tree / "a.py", "aaaa")
    second = (time.time_ns() // 10**9 - 10) * 10**9
    os.utime(module, ns=(second + 1000, second + 1000))
    async with running(make("poll", tree)) as reports:
        await reports.flush(tree)
        with open(module, "r+") as file:  # same size, same inode, same whole second
            file.write("bbbb")
        os.utime(module, ns=(second + 2000, second + 2000))
        await reports.until(module)


async def test_polling_reports_files_never_their_folder(tree: Path) -> None:
    path_filter = PathFilter(roots=[tree], extensions=["py"])
    async with running(make("poll", tree, path_filter=path_filter)) as reports:
        await reports.flush(tree)
        write(tree / "spam.pyc")
        write(tree / "notes.txt")
        write(tree / ".a.py.swp")
        await reports.nothing_else(tree)
        module = write(tree / "x.py")
        assert await reports.until(module) == {str(module)}
        module.unlink()
        assert await reports.until(module) == {str(module)}


async def test_polling_never_enters_ignored_folders(tree: Path) -> None:
    path_filter = PathFilter(roots=[tree], ignore=["src", "app_first", "app_second/js"])
    for folder in ("src", "app_first", "app_second/js", "app_second/ok"):
        (tree / folder).mkdir(parents=True)
    source = make("poll", tree, path_filter=path_filter)
    async with running(source) as reports:
        assert source.watched_folders() == [
            str(tree),
            str(tree / "app_second"),
            str(tree / "app_second" / "ok"),
        ]
        for name in ("src/a.py", "app_first/b.py", "app_second/js/c.py"):
            write(tree / name)
        await reports.nothing_else(tree)
        module = write(tree / "app_second" / "ok" / "d.py")
        await reports.until(module)


async def test_polling_follows_symlinked_folders_and_survives_a_loop(tree: Path, outside: Path) -> None:
    write(outside / "real" / "x.py")
    os.symlink(outside / "real", tree / "link")
    os.symlink("..", outside / "real" / "up")  # a loop through the symlink's target
    os.symlink(tree, tree / "loop")
    source = make("poll", tree)
    async with running(source) as reports:
        assert source.watch_count == 3  # tree, link, and outside (through link/up)
        (outside / "real" / "x.py").write_text("2")
        await reports.until(tree / "link" / "x.py")


async def test_polling_watches_files_anywhere(tree: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    same, stale, other = (write(site / f"{name}.py") for name in ("same", "stale", "other"))
    source = make("poll", tree)
    async with running(source) as reports:
        source.watch_files({str(same): same.stat().st_mtime_ns, str(stale): -1})
        seen = await reports.until(stale)
        assert str(same) not in seen
        await source.settled()
        same.write_text("2")
        await reports.until(same)
        other.write_text("2")
        await reports.nothing_else(tree)


def test_polling_slows_down_rather_than_scan_all_the_time() -> None:
    assert pace(0.3, 0.01) == 0.3
    assert pace(0.3, 1.0) == 3.0  # scanning a quarter of the time at most

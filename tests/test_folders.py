"""Folder tracking through a running supervisor: moves, renames, symlinks (issue 9).

The change sources have their own finer tests (``test_sources.py``); these go through a real
supervisor and real children, and prove absence with a sentinel: after the thing that must not
reload, a sentinel edit must be the very next reload, with nothing else in it.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import anyio
import pytest
from conftest import Lines, Project, child
from conftest import make_supervisor as make

from aioreload import EventKind, EventStream, SupervisorEvent

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="inotify folder tracking"),
]


async def next_start(events: EventStream, generation: int) -> SupervisorEvent:
    """The next STARTED event, which must be ``generation`` (nothing came in between)."""
    with anyio.fail_after(10):
        event = await events.next(EventKind.STARTED)
    assert event.generation == generation, event
    return event


def watches(pid: int) -> int:
    """How many inotify watches process ``pid`` holds (``/proc/PID/fdinfo``)."""
    total = 0
    for entry in os.scandir(f"/proc/{pid}/fdinfo"):
        try:
            with open(entry.path) as f:
                total += sum(1 for line in f if line.startswith("inotify wd:"))
        except OSError:
            continue
    return total


@pytest.mark.slow
async def test_a_folder_moved_out_releases_its_watches_and_reports_nothing_from_there(
    project: Project, lines: Lines, tmp_path: Path
) -> None:
    pkg = project.root / "pkg"
    for i in range(20):
        (pkg / f"sub{i}").mkdir(parents=True)
    (pkg / "sub0" / "x.py").write_text("x = 1\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    sentinel = project.root / "sentinel.txt"
    async with make(project, child("ready_wait")) as sup:
        with sup.events() as events:
            await lines.next("READY")
            before = watches(os.getpid())
            shutil.move(str(pkg), str(elsewhere / "pkg"))
            moved = await next_start(events, 2)  # the move itself is a change of the tree
            assert str(pkg) in moved.changes
            assert watches(os.getpid()) == before - 21  # pkg and its 20 subfolders
            (elsewhere / "pkg" / "sub0" / "x.py").write_text("x = 2\n")  # must not count
            sentinel.write_text("now")
            after = await next_start(events, 3)
            assert after.changes == (str(sentinel),)


@pytest.mark.slow
async def test_a_renamed_folder_is_reported_under_its_new_name_and_the_old_name_works_again(
    project: Project, lines: Lines
) -> None:
    old, new = project.root / "a", project.root / "b"
    (old / "deep").mkdir(parents=True)
    async with make(project, child("ready_wait")) as sup:
        with sup.events() as events:
            await lines.next("READY")
            old.rename(new)
            await next_start(events, 2)
            (new / "deep" / "y.py").write_text("y = 1\n")
            renamed = await next_start(events, 3)
            assert renamed.changes == (str(new / "deep" / "y.py"),)
            (old / "sub").mkdir(parents=True)  # a folder re-created at the old path...
            (old / "sub" / "z.py").write_text("z = 1\n")  # ...and a file made in it: seen
            again = await next_start(events, 4)
            assert str(old / "sub" / "z.py") in again.changes


@pytest.mark.slow
async def test_symlinked_folders_are_followed_and_a_loop_does_not_hang(
    project: Project, lines: Lines, tmp_path: Path
) -> None:
    outside = tmp_path / "shared"
    outside.mkdir()
    (project.root / "shared").symlink_to(outside, target_is_directory=True)
    (project.root / "loop").symlink_to(project.root, target_is_directory=True)  # ln -s . loop
    async with make(project, child("ready_wait")) as sup:
        with sup.events() as events:
            await lines.next("READY")
            assert sup.watch_count <= 4, sup.watch_count  # root, shared; the loop adds nothing
            (outside / "lib.py").write_text("v = 1\n")
            started = await next_start(events, 2)
            assert started.changes == (str(project.root / "shared" / "lib.py"),) or started.changes == (
                str(outside / "lib.py"),
            )


# -- what counts as a change (issue 13) ------------------------------------------------------

OPENS_UNWRITTEN = """\
import os, sys
sys.path.insert(0, os.environ["TEST_CHILDREN"])
from _report import report
open("data.bin", "r+b").close()  # opened for writing, closed unwritten: not a change
os.utime("stamp.txt")  # the modification time moved: a change
report("READY", os.getpid())
import time
time.sleep(1000)
"""


@pytest.mark.slow
async def test_a_file_closed_unwritten_is_not_a_change_but_touch_is(project: Project, lines: Lines) -> None:
    (project.root / "data.bin").write_bytes(b"\0" * 16)
    (project.root / "stamp.txt").write_text("")
    (project.root / "app.py").write_text(OPENS_UNWRITTEN)
    project.env["TEST_CHILDREN"] = str(Path(__file__).parent / "children")
    sup = make(project, [sys.executable, "app.py"], cwd=project.root, stop_timeout=0.5)
    async with sup:
        with sup.events() as events:
            await lines.next("READY")
            touched = await next_start(events, 2)  # the child's own utime: one reload...
            assert touched.changes == (str(project.root / "stamp.txt"),)
            await lines.next("READY")  # ...and the second run's touch gives the next one
            again = await next_start(events, 3)
            assert again.changes == (str(project.root / "stamp.txt"),)

"""Reliability: file-watch faults, bursts and races, edits during start-up, and a soak run."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import psutil
import pytest
from conftest import CHILDREN, Lines, Project, child, next_event, pid_gone
from conftest import make_supervisor as make

from aioreload import EventKind, ReloadReason

pytestmark = pytest.mark.anyio
LINUX = sys.platform.startswith("linux")


def inotify_watches(pid: int) -> int:
    """How many inotify watches process ``pid`` holds (Linux: fdinfo lines)."""
    count = 0
    for info in Path(f"/proc/{pid}/fdinfo").iterdir():
        try:
            count += sum(1 for line in info.read_text().splitlines() if line.startswith("inotify wd:"))
        except OSError:
            continue
    return count


@pytest.fixture
def fast_tmp() -> Iterator[Path]:
    """A scratch folder on tmpfs when there is one: 50,000 folders are made and removed fast."""
    base = "/dev/shm" if os.path.isdir("/dev/shm") else None
    folder = Path(tempfile.mkdtemp(prefix="aioreload-", dir=base)).resolve()
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# -- watcher faults --------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.skipif(not LINUX, reason="counts inotify watches")
async def test_ignored_folders_are_never_registered(
    fast_tmp: Path, project: Project, lines: Lines, engine: str
) -> None:
    if engine == "native":
        pytest.skip("watchfiles' engine watches each root recursively by design, ignored folders too")
    root = fast_tmp / "app"
    for name in ("node_modules", ".venv/lib", ".git/objects"):
        for i in range(250 if name == "node_modules" else 10):
            for j in range(200 if name == "node_modules" else 10):
                os.makedirs(root / name / f"p{i}" / f"d{j}")
    (root / "src" / "pkg").mkdir(parents=True)
    before = inotify_watches(os.getpid())
    async with make(project, child("ready_wait"), watch=[root]) as sup:
        with sup.events() as events:
            await lines.next("READY")
            held = inotify_watches(os.getpid()) - before
            # app, src, src/pkg: three folders, not 52,000 (the poller holds no inotify watch,
            # and walks the same three folders).
            assert held <= 5, held
            assert sup.watch_count <= 5, sup.watch_count
            mod = root / "src" / "pkg" / "mod.py"
            mod.write_text("x = 1\n")
            started = await next_event(events, EventKind.STARTED)
            assert (started.reason, started.changes) == (ReloadReason.FILE_CHANGE, (str(mod),))
            (root / "node_modules" / "p1" / "d1" / "index.js").write_text("x\n")
            sentinel = root / "src" / "sentinel.py"
            sentinel.write_text("x = 2\n")
            after = await next_event(events, EventKind.STARTED)  # node_modules gave nothing before it
            assert (after.generation, after.changes) == (started.generation + 1, (str(sentinel),))


@pytest.mark.slow
async def test_deleted_and_recreated_subfolder_keeps_working(
    project: Project, lines: Lines, engine: str
) -> None:
    """A folder's files are what count: deleting one that holds a file, and making it anew with one."""
    sub = project.root / "pkg"
    sub.mkdir()
    (sub / "old.py").write_text("x = 1\n")
    async with make(project, child("ready_wait")) as sup:
        with sup.events() as events:
            await lines.next("READY")
            shutil.rmtree(sub)
            deleted = await next_event(events, EventKind.STARTED)
            assert str(sub / "old.py") in deleted.changes
            assert set(deleted.changes) <= {str(sub), str(sub / "old.py")}, deleted.changes
            sub.mkdir()
            (sub / "mod.py").write_text("x = 2\n")
            made = await next_event(events, EventKind.STARTED)
            assert made.changes == (str(sub / "mod.py"),)
            (sub / "mod.py").write_text("x = 3\n")  # the new folder is watched
            edited = await next_event(events, EventKind.STARTED)
            assert (edited.generation, edited.changes) == (made.generation + 1, (str(sub / "mod.py"),))


@pytest.mark.slow
async def test_deleted_and_recreated_root_keeps_working(project: Project, lines: Lines, engine: str) -> None:
    root = project.root / "watched"
    root.mkdir()
    (root / "old.py").write_text("x = 1\n")
    async with make(project, child("ready_wait"), watch=[root]) as sup:
        with sup.events() as events:
            await lines.next("READY")
            shutil.rmtree(root)
            deleted = await next_event(events, EventKind.STARTED)
            assert str(root / "old.py") in deleted.changes
            root.mkdir()
            (root / "mod.py").write_text("x = 2\n")
            back = await next_event(events, EventKind.STARTED)  # the root's return is a change
            assert {str(root), str(root / "mod.py")} & set(back.changes), back.changes
            (root / "mod.py").write_text("x = 3\n")  # the root is watched again
            edited = await next_event(events, EventKind.STARTED)
            assert (edited.generation, edited.changes) == (back.generation + 1, (str(root / "mod.py"),))


@pytest.mark.slow
async def test_poll_option_sees_changes(project: Project, lines: Lines) -> None:
    async with make(project, child("ready_wait"), poll=True):
        await lines.next("READY")
        project.set_version("polled")  # once: the poller's baseline was taken before the start
        assert (await lines.next("READY"))[2] == "polled"


@pytest.mark.slow
@pytest.mark.skipif(not LINUX, reason="exhausts inotify instances")
async def test_exhausted_watches_fall_back_to_polling(
    project: Project, lines: Lines, caplog: pytest.LogCaptureFixture
) -> None:
    """Another process of ours holds every inotify instance this user may have."""
    hog_code = (
        "import ctypes, sys\nlibc = ctypes.CDLL(None)\nfds = []\n"
        "while True:\n    fd = libc.inotify_init1(0)\n    if fd < 0: break\n    fds.append(fd)\n"
        "print(len(fds), flush=True)\nsys.stdin.read()\n"
    )
    hog = await anyio.open_process([sys.executable, "-c", hog_code])
    async with hog:
        assert hog.stdout is not None
        assert int((await hog.stdout.receive()).decode()) > 0
        try:
            with caplog.at_level("WARNING", logger="aioreload"):
                async with make(project, child("ready_wait")):
                    await lines.next("READY")
                    assert any("polling" in r.getMessage() for r in caplog.records), caplog.text
                    project.set_version("polled")  # once: the fallback was armed before the start
                    assert (await lines.next("READY"))[2] == "polled"
        finally:
            assert hog.stdin is not None
            await hog.stdin.aclose()


async def test_unreadable_folders_are_skipped_with_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The suite runs as root, for whom no folder is unreadable, so scandir is faked."""
    from aioreload._filter import PathFilter
    from aioreload._poll import PollSource

    (tmp_path / "ok" / "deeper").mkdir(parents=True)
    (tmp_path / "secret" / "inside").mkdir(parents=True)
    real_scandir = os.scandir

    def scandir(path: Any) -> Any:
        if str(path).endswith("secret"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    source = PollSource([str(tmp_path)], PathFilter(roots=[tmp_path]))
    with caplog.at_level("WARNING", logger="aioreload"):
        async with anyio.create_task_group() as tg:
            await tg.start(lambda task_status: source.run(lambda paths: None, task_status=task_status))
            found = set(source.watched_folders())
            tg.cancel_scope.cancel()
    assert {str(tmp_path), str(tmp_path / "ok"), str(tmp_path / "ok" / "deeper")} <= found
    assert str(tmp_path / "secret" / "inside") not in found  # never entered
    assert "permission denied" in caplog.text


# -- bursts and races ------------------------------------------------------------------------


@pytest.mark.slow
async def test_burst_of_1000_files_gives_one_restart_with_final_content(
    project: Project, lines: Lines, engine: str
) -> None:
    async with make(project, child("ready_wait"), debounce=0.05, debounce_max=2.0) as sup:
        with sup.events() as events:
            await lines.next("READY")
            for i in range(999):
                (project.root / f"file_{i}.py").write_text(f"x = {i}\n")
            project.set_version("final")
            assert (await lines.next("READY"))[2] == "final"
            restart = await next_event(events, EventKind.STARTED)
            assert (restart.generation, len(restart.changes)) == (2, 1000)
            # No other restart follows: a sentinel written after the burst restarts generation 3
            # alone (a late part of the burst would come before it or with it).
            sentinel = project.root / "sentinel.txt"
            sentinel.write_text("after the burst")
            after = await next_event(events, EventKind.STARTED)
            assert (after.generation, after.changes) == (3, (str(sentinel),))


@pytest.mark.slow
async def test_thousand_triggers_give_a_handful_of_restarts_and_never_two_children(
    project: Project, lines: Lines
) -> None:
    me = psutil.Process()
    # Each child takes a while to stop: a new one started before the old one is gone would be
    # seen alive next to it.
    async with make(project, child("ready_wait", "slow-stop", "0.05")) as sup:
        previous: int | None = int((await lines.next("READY"))[1])
        with sup.events() as events:

            def hammer() -> None:
                for _ in range(1000):
                    sup.request_reload()

            await anyio.to_thread.run_sync(hammer)
            await sup.reload()  # settles once everything above is served
            # A sentinel change after them all: its start ends the count, and holds it alone.
            project.set_version("sentinel")
            restarts = 0
            while True:
                event = await next_event(events, EventKind.STARTED)
                # The child before this one was gone before this one started...
                assert pid_gone(previous), (event, previous)
                # ...so there is never more than one (the guardian aside).
                alive = [p for p in me.children() if p.pid != sup.guardian_pid and not pid_gone(p.pid)]
                assert len(alive) <= 1, alive
                previous = event.pid
                if event.changes:
                    break
                restarts += 1
            assert (event.reason, event.changes) == (ReloadReason.FILE_CHANGE, (str(project.version_file),))
            assert event.generation == restarts + 2
    assert 1 <= restarts <= 5, restarts


async def ready_with(lines: Lines, value: str) -> None:
    """Wait until a child reports ``value`` (children in between may report older ones)."""
    with anyio.fail_after(15):
        while (await lines.next("READY"))[2] != value:
            pass


@pytest.mark.slow
async def test_edit_while_the_child_is_importing_is_not_lost(project: Project, lines: Lines) -> None:
    shutil.copy(CHILDREN / "slow_import.py", project.root / "app.py")
    (project.root / "fresh_module.py").write_text("VALUE = 'old'\n")
    env = dict(project.env, TEST_CHILDREN=str(CHILDREN), TEST_IMPORT_DELAY="0.3")
    process = await anyio.open_process(
        [sys.executable, "app.py"], cwd=project.root, env=env, stdout=None, stderr=None
    )
    async with process:
        try:
            await lines.next("IMPORTING")  # the supervisor itself
            await lines.next("IMPORTING")  # its child, before it imports first.py
            await lines.next("READY")
            first = project.root / "fresh_module.py"
            first.write_text("VALUE = 'edited-at-once'\n")  # 0 s after the child's first line
            assert (await lines.next("READY"))[2] == "edited-at-once"
            first.write_text("VALUE = 'v3'\n")
            await lines.next("IMPORTING")  # the next child, about to import first.py
            first.write_text("VALUE = 'edited-during-import'\n")
            await ready_with(lines, "edited-during-import")
        finally:
            process.send_signal(signal.SIGINT)
            with anyio.fail_after(10):
                await process.wait()


@pytest.mark.slow
async def test_child_that_floods_and_closes_stdout_does_not_block(project: Project, lines: Lines) -> None:
    command = [sys.executable, "-m", "aioreload", "-w", str(project.root), "--", *child("flood")]
    with open(os.devnull, "w") as sink:
        cli = await anyio.open_process(command, env=project.env, stdout=sink, stderr=subprocess.DEVNULL)
        async with cli:
            await lines.next("READY")
            cli.send_signal(signal.SIGHUP)
            await lines.next("READY")
            cli.send_signal(signal.SIGTERM)
            with anyio.fail_after(10):
                await cli.wait()


# -- soak ------------------------------------------------------------------------------------


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else 0


@pytest.mark.slow
@pytest.mark.timeout(180)
async def test_soak_500_reloads_of_changes_triggers_and_kills(project: Project) -> None:
    """500 reloads: after each, exactly one child; descriptors and memory do not grow."""
    me = psutil.Process()
    rng = random.Random(1234)
    sup = make(
        project, ["sleep", "1000"], restart_on_crash=True, crash_backoff=0.001, crash_backoff_max=0.001
    )
    async with sup:
        with sup.events() as events:
            fds = rss = 0
            for step in range(500):
                if step == 50:  # warmed up: caches filled, threads started
                    fds, rss = _open_fds(), me.memory_info().rss
                kind = rng.choice(["change", "trigger", "kill"])
                generation = sup.generation
                if kind == "change":
                    project.set_version(step)
                elif kind == "trigger":
                    sup.request_reload()
                else:
                    assert sup.pid is not None
                    os.kill(sup.pid, signal.SIGKILL)
                with anyio.fail_after(10):
                    while True:
                        event = await events.next(EventKind.STARTED)
                        if event.generation > generation:
                            break
                    await anyio.wait_all_tasks_blocked()
                alive = [
                    p
                    for p in me.children()
                    if p.pid != sup.guardian_pid and p.status() != psutil.STATUS_ZOMBIE
                ]
                assert [p.pid for p in alive] == [sup.pid], (step, kind)
            grown_fds = _open_fds() - fds
            grown_rss = me.memory_info().rss - rss
    print(f"soak: {sup.generation} children, fds +{grown_fds}, rss +{grown_rss / 1024:.0f} KiB")
    assert grown_fds <= 0
    assert grown_rss < 5 * 1024 * 1024


# -- crashes ---------------------------------------------------------------------------------


@pytest.mark.slow
async def test_restart_on_crash_backs_off_exponentially_and_stays_cheap(
    project: Project, lines: Lines
) -> None:
    me = psutil.Process()
    cpu_before = sum(me.cpu_times()[:2])
    sup = make(
        project,
        child("exit_code", "3"),
        watch=[],
        restart_on_crash=True,
        crash_backoff=0.1,
        crash_backoff_max=0.4,
    )
    delays = []
    async with sup:
        with sup.events() as events:
            exited = await next_event(events, EventKind.EXITED)
            for _ in range(5):
                assert exited.returncode == 3
                crashed_at = anyio.current_time()
                started = await next_event(events, EventKind.STARTED)
                assert started.reason is ReloadReason.CRASH
                delays.append(anyio.current_time() - crashed_at)
                exited = await next_event(events, EventKind.EXITED)
    cpu = sum(me.cpu_times()[:2]) - cpu_before
    # 0.1, 0.2, 0.4 (the cap), 0.4, 0.4: each at least its backoff, never a tight loop.
    for delay, floor in zip(delays, [0.1, 0.2, 0.4, 0.4, 0.4], strict=True):
        assert floor * 0.9 <= delay < floor + 1.0, delays
    wall = sum(delays)
    assert cpu < wall * 0.5, (cpu, wall)  # the supervisor mostly sleeps through a crash loop


@pytest.mark.slow
async def test_restart_on_crash_backoff_resets_after_a_healthy_run(project: Project, lines: Lines) -> None:
    sup = make(
        project,
        child("exit_code", "3", "0.3"),
        watch=[],
        restart_on_crash=True,
        crash_backoff=0.05,
        crash_backoff_max=0.2,
    )
    async with sup:
        with sup.events() as events:
            for _ in range(3):  # each run lasts 0.3 s > the 0.2 s cap: the delay starts over
                exited = await next_event(events, EventKind.EXITED)
                crashed_at = anyio.current_time()
                await next_event(events, EventKind.STARTED)
                assert anyio.current_time() - crashed_at < 0.15
            assert exited.returncode == 3


async def test_crash_is_reported_once_then_a_change_restarts(project: Project, lines: Lines) -> None:
    async with make(project, child("exit_code", "1")) as sup:
        with sup.events() as events:
            await next_event(events, EventKind.EXITED)
            # Nothing happens after the crash until a change: the sentinel's is the next event.
            project.set_version("fixed")
            changed = await next_event(events)
            assert (changed.kind, changed.changes) == (EventKind.CHANGED, (str(project.version_file),))
            started = await next_event(events)
            assert (started.kind, started.reason, started.generation) == (
                EventKind.STARTED,
                ReloadReason.FILE_CHANGE,
                2,
            )
            assert (await lines.next("READY"))[2] == "1"  # the run that crashed
            assert (await lines.next("READY"))[2] == "fixed"


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="POSIX terminals")
async def test_terminal_echo_is_restored_after_a_child_dies_mid_prompt(
    project: Project, lines: Lines
) -> None:
    import termios

    controller, terminal = os.openpty()
    try:
        command = [sys.executable, "-m", "aioreload", "-w", str(project.root), "--", *child("echo_off")]
        cli = await anyio.open_process(command, env=project.env, stdin=terminal, stdout=None, stderr=None)
        async with cli:
            try:
                await lines.next("READY")
                assert not termios.tcgetattr(terminal)[3] & termios.ECHO  # the child turned it off
                cli.send_signal(signal.SIGHUP)
                await lines.next("READY")
                assert termios.tcgetattr(terminal)[3] & termios.ECHO  # back on after the reload
            finally:
                cli.send_signal(signal.SIGTERM)
                with anyio.fail_after(10):
                    await cli.wait()
    finally:
        os.close(controller)
        os.close(terminal)

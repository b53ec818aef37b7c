"""The supervisor with real child processes and real file changes."""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import anyio
import psutil
import pytest
from conftest import CHILDREN, Lines, Project, child, next_event
from conftest import make_supervisor as make

import aioreload
from aioreload import EventKind, ReloadReason, ReloadRequest, Supervisor

pytestmark = pytest.mark.anyio


@pytest.mark.slow
async def test_restart_on_change_with_graceful_stop(project: Project, lines: Lines, engine: str) -> None:
    sup = make(project, child("ready_wait"))
    with sup.events() as events:
        async with sup:
            first = await lines.next("READY")
            assert first[2] == "1"
            project.set_version(2)  # once: entering the supervisor armed the watches
            second = await lines.next("READY")
            assert second[2] == "2"
            # The old child ran its finally block: the stop was graceful.
            await lines.seen("CLEANUP", first[1])
            await lines.seen("CLEANED", first[1])
            started = [e async for e in _until(events, EventKind.STARTED, 2)]
            assert started[-1].reason is ReloadReason.FILE_CHANGE
            assert str(project.version_file) in started[-1].changes
            stopped = [e for e in started if e.kind is EventKind.STOPPED]
            assert stopped
            assert not stopped[0].killed
        assert sup.state == "closed"
    assert not psutil.pid_exists(int(second[1])) or psutil.Process(int(second[1])).status() == "zombie"


async def _until(events: aioreload.EventStream, kind: EventKind, count: int) -> Any:
    seen = 0
    with anyio.fail_after(10):
        async for event in events:
            yield event
            if event.kind is kind:
                seen += 1
                if seen == count:
                    return


@pytest.mark.slow
async def test_a_single_file_can_be_a_watch_root(project: Project, lines: Lines, engine: str) -> None:
    other = project.root / "other.txt"
    other.write_text("x")
    async with make(project, child("ready_wait"), watch=[project.version_file]) as sup:
        with sup.events() as events:
            await lines.next("READY")
            other.write_text("y")  # in the same folder, but not watched
            project.set_version(2)  # the sentinel: the restart it causes holds it alone
            started = await next_event(events, EventKind.STARTED)
            assert started.generation == 2
            assert started.changes == (str(project.version_file),)
            assert (await lines.next("READY"))[2] == "2"


@pytest.mark.slow
async def test_reload_returns_after_new_child_started(project: Project, lines: Lines) -> None:
    async with make(project, child("ready_wait"), watch=[]) as sup:
        first = await lines.next("READY")
        assert sup.pid == int(first[1])
        assert await sup.reload() is True
        assert sup.generation == 2
        assert sup.pid is not None
        assert sup.pid != int(first[1])
        second = await lines.next("READY")
        assert int(second[1]) == sup.pid
        assert "generation=2" in repr(sup)


@pytest.mark.slow
async def test_request_reload_from_another_thread(project: Project, lines: Lines) -> None:
    async with make(project, child("ready_wait"), watch=[]) as sup:
        with sup.events() as events:
            await lines.next("READY")
            thread = threading.Thread(target=sup.request_reload)
            thread.start()
            started = await next_event(events, EventKind.STARTED)
            thread.join()
            assert started.reason is ReloadReason.TRIGGER
            await lines.next("READY")


@pytest.mark.slow
async def test_stop_escalates_to_sigkill_after_stop_timeout(project: Project, lines: Lines) -> None:
    async with make(project, child("ignore_stop"), watch=[], stop_timeout=0.3) as sup:
        with sup.events() as events:
            await lines.next("READY")
            began = time.monotonic()
            await sup.reload()
            took = time.monotonic() - began
            stopped = await next_event(events, EventKind.STOPPED)
    assert stopped.killed
    assert lines.count("GOT-SIGINT") == 1  # signalled once, then killed
    assert 0.3 <= took < 2.0, took


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["plain", "ignore"])
async def test_reload_leaves_no_grandchild(project: Project, lines: Lines, variant: str) -> None:
    async with make(project, child("grandchild", variant), watch=[], stop_timeout=0.5) as sup:
        first = await lines.next("READY")
        grandchild = psutil.Process(int(first[4]))
        await sup.reload()
        await lines.next("READY")
        # reload() returned only after the whole old process group was gone.
        assert not grandchild.is_running() or grandchild.status() == psutil.STATUS_ZOMBIE


@pytest.mark.slow
async def test_burst_of_200_writes_gives_one_restart(project: Project, lines: Lines, engine: str) -> None:
    async with make(project, child("ready_wait"), debounce=0.05, debounce_max=1.0) as sup:
        with sup.events() as events:
            await lines.next("READY")
            for i in range(199):
                (project.root / f"module_{i}.py").write_text(f"x = {i}\n")
            project.set_version("final")
            ready = await lines.next("READY")
            assert ready[2] == "final"
            restart = await next_event(events, EventKind.STARTED)
            assert restart.generation == 2
            assert len(restart.changes) == 200
            # Nothing else may follow: a sentinel written after the burst restarts generation 3
            # alone. A late part of the burst would come before it or with it.
            sentinel = project.root / "sentinel.txt"
            sentinel.write_text("after the burst")
            after = await next_event(events, EventKind.STARTED)
            assert (after.generation, after.changes) == (3, (str(sentinel),))


async def test_child_exit_waits_for_change(project: Project, lines: Lines) -> None:
    async with make(project, child("exit_code", "3")) as sup:
        with sup.events() as events:
            await lines.next("READY")
            exited = await next_event(events, EventKind.EXITED)
            assert exited.returncode == 3
            assert sup.state == "waiting"
            assert sup.pid is None
            # Not restarted without a change: the next start is the sentinel change's, generation 2.
            project.set_version(2)
            started = await next_event(events, EventKind.STARTED)
            assert started.generation == exited.generation + 1
            assert started.changes == (str(project.version_file),)
            assert started.reason is ReloadReason.FILE_CHANGE
            assert (await lines.next("READY"))[2] == "2"
            assert sup.last_returncode is not None


async def test_cancelling_the_supervisor_stops_the_child(project: Project, lines: Lines) -> None:
    fds_before = len(list(Path("/proc/self/fd").iterdir())) if Path("/proc/self/fd").exists() else 0
    with anyio.CancelScope() as scope:
        async with make(project, child("ready_wait")) as sup:
            ready = await lines.next("READY")
            guardian = sup.guardian_pid
            scope.cancel()
            await anyio.sleep_forever()
    assert sup.state == "closed"
    await lines.all_disconnected()
    await lines.seen("CLEANED", ready[1])
    for pid in (int(ready[1]), guardian):
        assert pid is None or not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie"
    if fds_before:
        after = {str(p): os.readlink(p) for p in Path("/proc/self/fd").iterdir() if p.exists()}
        assert len(after) <= fds_before, after


@pytest.mark.slow
async def test_requests_during_stop_join_the_reload_in_progress(project: Project, lines: Lines) -> None:
    """Triggers that arrive while the old child shuts down are served by the child started next."""
    async with make(project, child("ready_wait", "slow-stop", "0.2")) as sup:
        with sup.events() as events:
            first = await lines.next("READY")
            sup.request_reload()
            await next_event(events, EventKind.STOPPING)
            await lines.next("CLEANUP", first[1])
            for _ in range(20):  # all while the old child is still in its finally block
                sup.request_reload()
            started = await next_event(events, EventKind.STARTED)
            assert started.generation == 2
            # A second SIGINT would have interrupted the slow finally block before CLEANED.
            await lines.seen("CLEANED", first[1])
            # No reload for those requests follows: the next start is a sentinel change's, alone
            # (a pending trigger would have come first, or given its reason to the batch).
            project.set_version("sentinel")
            after = await next_event(events, EventKind.STARTED)
            assert (after.generation, after.reason, after.changes) == (
                3,
                ReloadReason.FILE_CHANGE,
                (str(project.version_file),),
            )


async def test_request_during_start_causes_exactly_one_more_reload(project: Project, lines: Lines) -> None:
    async with make(project, child("ready_wait")) as sup:
        with sup.events() as events:
            await lines.next("READY")
            sup.request_reload()
            await next_event(events, EventKind.STOPPED)
            # The next child is being spawned now: these requests come after its start began.
            started = await next_event(events, EventKind.STARTED)
            for _ in range(50):
                sup.request_reload()
            again = await next_event(events, EventKind.STARTED)
            assert again.generation == started.generation + 1
            # No queue of reloads follows: the next start is a sentinel change's, alone.
            project.set_version("sentinel")
            after = await next_event(events, EventKind.STARTED)
            assert (after.generation, after.reason, after.changes) == (
                again.generation + 1,
                ReloadReason.FILE_CHANGE,
                (str(project.version_file),),
            )


async def test_before_reload_can_cancel(project: Project, lines: Lines) -> None:
    seen: list[ReloadRequest] = []

    async def hook(request: ReloadRequest) -> bool:
        seen.append(request)
        return False

    async with make(project, child("ready_wait"), before_reload=hook) as sup:
        with sup.events() as events:
            first = await lines.next("READY")
            project.set_version(2)
            skipped = await next_event(events, EventKind.SKIPPED)
            assert skipped.reason is ReloadReason.FILE_CHANGE
            assert sup.pid == int(first[1])
            assert await sup.reload() is False
    assert seen[0].reason is ReloadReason.FILE_CHANGE
    assert str(project.version_file) in seen[0].changes
    assert seen[1].reason is ReloadReason.TRIGGER


async def test_sync_before_reload_hook_allows(project: Project, lines: Lines) -> None:
    calls: list[ReloadReason] = []
    hook = lambda request: calls.append(request.reason)  # noqa: E731 - a sync hook returning None
    async with make(project, child("ready_wait"), watch=[], before_reload=hook) as sup:
        await lines.next("READY")
        assert await sup.reload() is True
    assert calls == [ReloadReason.TRIGGER]


async def test_missing_command_raises_spawn_error(project: Project) -> None:
    with pytest.raises(aioreload.SpawnError, match="command not found"):
        async with make(project, ["definitely-not-a-command-xyz"]):
            pytest.fail("entered")


def test_missing_watch_path_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(aioreload.ConfigError, match="watch path does not exist"):
        Supervisor(["true"], watch=[tmp_path / "nope"])


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"stop_timeout": -1}, "stop_timeout"),
        ({"debounce": "fast"}, "debounce"),
    ],
)
def test_bad_options_are_config_errors(options: dict[str, Any], message: str) -> None:
    with pytest.raises(aioreload.ConfigError, match=message):
        Supervisor(["true"], **options)


def test_command_must_be_a_list() -> None:
    with pytest.raises(aioreload.ConfigError, match="list"):
        Supervisor("python app.py")


async def test_reload_on_closed_supervisor_raises(project: Project, lines: Lines) -> None:
    sup = make(project, child("ready_wait"), watch=[])
    with pytest.raises(aioreload.SupervisorClosedError):
        await sup.reload()
    async with sup:
        await lines.next("READY")
    with pytest.raises(aioreload.SupervisorClosedError):
        sup.request_reload()


@pytest.mark.slow
async def test_asgi_lifespan_shutdown_runs_on_reload(project: Project, lines: Lines) -> None:
    pytest.importorskip("uvicorn")
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        "--app-dir",
        str(CHILDREN),
        "--port",
        "0",
        "--lifespan",
        "on",
        "lifespan_app:app",
    ]
    async with make(project, command, watch=[]) as sup:
        first = await lines.next("READY")
        await sup.reload()
        await lines.next("READY")
        await lines.seen("LIFESPAN-SHUTDOWN", first[1])


async def test_reload_waiting_on_a_supervisor_that_is_cancelled_mid_reload_raises(
    project: Project, lines: Lines
) -> None:
    """A caller of reload() is never left hanging: the supervisor ends while a hook runs."""
    hook_running = anyio.Event()

    async def hook(request: ReloadRequest) -> bool:
        hook_running.set()
        await anyio.sleep_forever()
        return True

    sup = make(project, child("ready_wait"), watch=[], before_reload=hook)
    outcome: list[object] = []
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            scope = anyio.CancelScope()

            async def run() -> None:
                with scope:
                    await sup.run()

            async def reload() -> None:
                try:
                    outcome.append(await sup.reload())
                except aioreload.SupervisorClosedError as exc:
                    outcome.append(exc)

            tg.start_soon(run)
            await lines.next("READY")
            tg.start_soon(reload)
            await hook_running.wait()
            scope.cancel()  # the supervisor ends in the middle of that reload
    assert len(outcome) == 1
    assert isinstance(outcome[0], aioreload.SupervisorClosedError)

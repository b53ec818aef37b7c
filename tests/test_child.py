"""The child side: run(main), trigger_reload() from inside, readiness, imported-module watching."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import anyio.abc
import pytest
from conftest import CHILDREN, Lines, Project, child, stop_process

import aioreload
from aioreload import EventKind, ReloadReason, Supervisor

pytestmark = pytest.mark.anyio


# -- trigger_reload() and ready() inside a supervised child --------------------------------


@pytest.mark.parametrize("where", ["coroutine", "thread"])
async def test_child_triggers_its_own_reload(project: Project, lines: Lines, where: str) -> None:
    env = dict(project.env, TEST_TRIGGER_ONCE="1")
    async with Supervisor(child("trigger_self", where), env=env) as sup:
        with sup.events() as events:
            first = await lines.next("READY")
            assert first[4] == "True"  # is_supervised()
            started = await events.next(EventKind.STARTED)
            assert started.reason is ReloadReason.TRIGGER
            second = await lines.next("READY")
            assert second[1] != first[1]
            info = await lines.next("INFO")
            assert info[1:] == ["trigger", "2"]
            # The new child does not trigger again: generation 2 stays.
            ready = await events.next(EventKind.READY)
            assert ready.generation == 2
            assert sup.generation == 2


async def test_readiness_is_reported_and_timed(project: Project, lines: Lines) -> None:
    async with Supervisor(child("trigger_self"), env=project.env) as sup:
        with sup.events() as events:
            ready = await events.next(EventKind.READY)
            assert ready.elapsed is not None
            assert 0 < ready.elapsed < 10
            assert await sup.reload(wait_ready=True) is True
            again = await events.next(EventKind.READY)
            assert again.generation == 2
            await lines.next("READY")


async def test_wait_ready_returns_when_the_child_never_reports(project: Project, lines: Lines) -> None:
    async with Supervisor(child("exit_code", "0"), env=project.env) as sup:
        await lines.next("READY")
        assert await sup.reload(wait_ready=True) is True  # the child exits instead: no hang


def test_child_api_outside_a_supervisor_raises() -> None:
    code = (
        "import asyncio, aioreload\n"
        "assert not aioreload.is_supervised()\n"
        "assert aioreload.last_reload() is None\n"
        "aioreload.report_ready()\n"
        "try:\n"
        "    asyncio.run(aioreload.trigger_reload())\n"
        "except aioreload.NotSupervisedError as exc:\n"
        "    print('refused:', exc)\n"
    )
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("AIORELOAD_")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.startswith("refused: this process was not started by an aioreload supervisor")


# -- aioreload.run(main) -------------------------------------------------------------------


@asynccontextmanager
async def run_app(project: Project, helper: str = "1") -> AsyncIterator[anyio.abc.Process]:
    shutil.copy(CHILDREN / "run_app.py", project.root / "app.py")
    (project.root / "helper.py").write_text(f"VALUE = {helper!r}\n")
    (project.root / "unrelated.py").write_text("X = 1\n")
    env = dict(project.env, TEST_CHILDREN=str(CHILDREN))
    process = await anyio.open_process(
        [sys.executable, "-X", "dev", "app.py", "--flag"],
        cwd=project.root,
        env=env,
        stdin=None,
        stdout=None,
        stderr=None,
    )
    async with process:
        try:
            yield process
        finally:
            await stop_process(process, signal.SIGINT)


async def edit_until_reload(project: Project, lines: Lines, name: str, text: str) -> list[str]:
    """Edit ``name`` until a new child reports; the first edit may race the arming of the watch."""
    for _ in range(20):
        (project.root / name).write_text(text)
        with anyio.move_on_after(0.5):
            return await lines.next("READY", timeout=5)
    pytest.fail(f"editing {name} never reloaded")


async def test_run_reloads_when_an_imported_module_changes(project: Project, lines: Lines) -> None:
    async with run_app(project):
        first = await lines.next("READY")
        assert first[2:] == ["1", "start"]
        second = await edit_until_reload(project, lines, "helper.py", "VALUE = '2'\n")
        assert second[2:] == ["2", "change"]


async def test_run_ignores_files_the_program_never_imported(project: Project, lines: Lines) -> None:
    async with run_app(project):
        await lines.next("READY")
        await edit_until_reload(project, lines, "helper.py", "VALUE = '2'\n")  # the watch is armed
        (project.root / "unrelated.py").write_text("X = 2\n")
        with anyio.move_on_after(1.0):
            await lines.next("READY")
            pytest.fail("an unimported file reloaded the program")


async def test_run_exits_with_mains_code(project: Project, lines: Lines) -> None:
    async with run_app(project, helper="exit-7") as process:
        await lines.next("READY")
        with anyio.fail_after(10):
            assert await process.wait() == 7
    assert lines.count("BEFORE-EXIT") == 1


async def test_run_keeps_interpreter_options_and_arguments(project: Project, lines: Lines) -> None:
    probe = "import sys\nVALUE = ' '.join(['dev' if sys.flags.dev_mode else 'nodev', *sys.argv[1:]])\n"
    async with run_app(project) as _:
        await lines.next("READY")
        second = await edit_until_reload(project, lines, "helper.py", probe)
        assert second[2:4] == ["dev", "--flag"]


async def test_run_watches_the_files_of_a_crash_until_fixed(project: Project, lines: Lines) -> None:
    (project.root / "broken.py").write_text("def oops(:\n")
    async with run_app(project, helper="crash"):
        await lines.next("READY")  # main starts, then its import of broken.py fails
        fixed = await edit_until_reload(project, lines, "broken.py", "OK = True\n")
        assert fixed[2] == "crash"  # started again after the fix...
        with anyio.move_on_after(1.0):  # ...and stays up: broken.py imports now
            await lines.next("READY")
            pytest.fail("still crashing")


async def test_run_stops_gracefully_on_sigint(project: Project, lines: Lines) -> None:
    async with run_app(project) as process:
        await lines.next("READY")
        process.send_signal(signal.SIGINT)
        with anyio.fail_after(10):
            code = await process.wait()
    assert code in (0, 130)
    assert lines.count("BEFORE-EXIT") == 1


def test_run_exported() -> None:
    assert aioreload.run.__module__ == "aioreload._run"

"""The warm spare: real processes, real files, throwaway virtual environments, a real ``pip install``.

A Python child is started through a bootstrap; once it runs, a spare interpreter imports the
libraries it imported and waits to become the next child. These tests check that this is fast
(an edit shows in a fraction of a cold start), never stale (a package installed, a library
file touched, an editable install edited: the child sees what a cold start would), invisible
(``sys.argv``, ``__main__``, ``sys.path``, the environment, the streams... are a cold start's),
robust (a killed spare is replaced; 100 reloads leak nothing) and that the old child keeps
running when the new code cannot even be imported.

The library the spares preload is ``slowdep``, a wheel built here by hand (a zip) and installed
with pip into a virtual environment made for the test (``python -m venv --without-pip``; the
outer pip installs into it with ``--python``). Its import takes ``SLOW_IMPORT`` seconds, so a
cold start is slow and a start from the spare is not. The programs are ``children/spare_app.py``
(copied into the project as ``app.py``) and ``children/spare_introspect.py``. Everything waits
on supervisor events and on the children's lines, each bounded by a timeout; nothing sleeps.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import psutil
import pytest
from conftest import CHILDREN, Lines, Project
from conftest import make_supervisor as make
from test_cli import Cli, cli
from test_serving import open_fds

import aioreload
from aioreload import EventKind, Supervisor, SupervisorEvent

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the tests read /proc; spares are POSIX"),
]

SLOW_IMPORT = 1.0
"""Seconds ``slowdep`` takes to import: most of a cold start."""
SPEEDUP = 5
"""An edit shows from the spare in less than a cold start divided by this."""
REPO = Path(aioreload.__file__).resolve().parent.parent
BASE_PYTHON = getattr(sys, "_base_executable", None) or os.path.realpath(sys.executable)
PYVER = f"python{sys.version_info.major}.{sys.version_info.minor}"
BOOTSTRAP = "_sparechild.py"
LOOP_LOGGER = "aioreload._loop"


# -- wheels and throwaway virtual environments ----------------------------------------------


WHEEL = "Wheel-Version: 1.0\nGenerator: test_spare\nRoot-Is-Purelib: true\nTag: py3-none-any\n"


def build_wheel(folder: Path, name: str, version: str, files: dict[str, str]) -> Path:
    """A real (pure Python) wheel of ``name`` holding ``files``, with its metadata and RECORD."""
    info = f"{name}-{version}.dist-info"
    contents = {
        **files,
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{info}/WHEEL": WHEEL,
    }
    record = []
    path = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as wheel:
        for member, text in contents.items():
            data = text.encode()
            wheel.writestr(member, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            record.append(f"{member},sha256={digest},{len(data)}")
        record.append(f"{info}/RECORD,,")
        wheel.writestr(f"{info}/RECORD", "\n".join(record) + "\n")
    return path


def slowdep_wheel(folder: Path, version: str, delay: float = SLOW_IMPORT) -> Path:
    """``slowdep``: importing it takes ``delay`` seconds; it says its ``VERSION``."""
    code = f"import time\n\ntime.sleep({delay!r})\nVERSION = {version!r}\n"
    return build_wheel(folder, "slowdep", version, {"slowdep/__init__.py": code})


def module_wheel(folder: Path, name: str, value: str) -> Path:
    """A one-module distribution: ``NAME.py`` with ``VALUE``."""
    return build_wheel(folder, name, "1.0", {f"{name}.py": f"VALUE = {value!r}\n"})


def editable_wheel(folder: Path, name: str, source: Path) -> Path:
    """What ``pip install -e`` installs for a project built with hatchling: a ``.pth`` naming its folder."""
    return build_wheel(folder, name, "1.0", {f"_{name}.pth": f"{source}\n"})


@dataclass(frozen=True)
class Venv:
    """A virtual environment made for a test, with aioreload importable (as in development)."""

    root: Path

    @property
    def python(self) -> str:
        return str(self.root / "bin" / "python")

    @property
    def site(self) -> Path:
        return self.root / "lib" / PYVER / "site-packages"

    def _pip(self, wheel: Path) -> list[str]:
        pip = [sys.executable, "-m", "pip", "--python", self.python, "--disable-pip-version-check"]
        return [*pip, "install", "--no-index", "--no-deps", "--quiet", str(wheel)]

    def install(self, wheel: Path) -> None:
        subprocess.run(self._pip(wheel), check=True, capture_output=True)

    async def install_async(self, wheel: Path) -> None:
        """``pip install`` without blocking the event loop the supervisor runs in."""
        await anyio.run_process(self._pip(wheel), check=True)

    @classmethod
    def create(cls, root: Path, *wheels: Path) -> Venv:
        subprocess.run([BASE_PYTHON, "-m", "venv", "--without-pip", str(root)], check=True)
        venv = cls(root)
        assert venv.site.is_dir(), list(root.rglob("site-packages"))
        # aioreload as an editable install: outside the libraries, so never preloaded.
        (venv.site / "_aioreload_dev.pth").write_text(f"{REPO}\n")
        for wheel in wheels:
            venv.install(wheel)
        return venv


@pytest.fixture(scope="module")
def shared_venv(tmp_path_factory: pytest.TempPathFactory) -> Venv:
    """A venv with slowdep 1.0, for the tests that install nothing."""
    wheels = tmp_path_factory.mktemp("wheels")
    return Venv.create(tmp_path_factory.mktemp("shared") / "venv", slowdep_wheel(wheels, "1.0"))


@pytest.fixture
def new_venv(tmp_path: Path) -> Callable[..., Venv]:
    """Make a venv of this test's own (to install into, or to touch), with the given wheels."""
    return lambda *wheels: Venv.create(tmp_path / "venv", *wheels)


# -- the program, its lines and the supervisor's events ---------------------------------------


@pytest.fixture
def app(project: Project) -> str:
    """``children/spare_app.py`` as the project's ``app.py`` (run it from the project)."""
    shutil.copy(CHILDREN / "spare_app.py", project.root / "app.py")
    return "app.py"


def facts(line: list[str]) -> dict[str, Any]:
    """The JSON of a ``READY <pid> <base64 JSON>`` line, with the pid."""
    found: dict[str, Any] = json.loads(base64.b64decode(line[2]))
    found["pid"] = int(line[1])
    return found


async def ready(lines: Lines, timeout: float = 10.0) -> dict[str, Any]:
    """What the next child said in its READY line."""
    return facts(await lines.next("READY", timeout=timeout))


def replace(path: Path, text: str) -> None:
    """Write ``path`` at once (a single change event, never a half-written file)."""
    staging = path.with_name(f".{path.name}.staging")
    staging.write_text(text)
    os.replace(staging, path)


class EventLog:
    """Every event of one supervisor, in order, and waits for the ones to come."""

    def __init__(self) -> None:
        self.events: list[SupervisorEvent] = []
        self._arrived = anyio.Event()

    async def follow(self, stream: aioreload.EventStream) -> None:
        async for event in stream:
            self.events.append(event)
            self._arrived.set()
            self._arrived = anyio.Event()

    def mark(self) -> int:
        """Where the next event will be: wait on what comes from now on."""
        return len(self.events)

    async def wait(
        self,
        kind: EventKind,
        since: int = 0,
        where: Callable[[SupervisorEvent], bool] = lambda _: True,
        timeout: float = 10.0,
    ) -> SupervisorEvent:
        """The first event ``kind`` at index ``since`` or later for which ``where`` holds."""
        with anyio.fail_after(timeout):
            while True:
                for event in self.events[since:]:
                    if event.kind is kind and where(event):
                        return event
                await self._arrived.wait()

    async def spare(self, *gone: SupervisorEvent, timeout: float = 10.0) -> SupervisorEvent:
        """A warm spare not used yet (no child has its pid), nor one of ``gone`` (killed, stale).

        Not "the spare after this STARTED event": one being spawned as a reload came may
        have started that child cold, and be the next child's spare, warm before or after.
        """
        excluded = {event.pid for event in gone}

        def unused(spare: SupervisorEvent) -> bool:
            used = {e.pid for e in self.events if e.kind in (EventKind.STARTED, EventKind.RELOAD_FAILED)}
            return spare.pid not in used | excluded

        return await self.wait(EventKind.SPARE_READY, where=unused, timeout=timeout)

    def of(self, kind: EventKind) -> list[SupervisorEvent]:
        return [event for event in self.events if event.kind is kind]

    def summary(self) -> list[str]:
        return [f"{e.kind}:{e.generation}:{e.pid}:{e.message}" for e in self.events]


@asynccontextmanager
async def supervised(sup: Supervisor) -> AsyncIterator[EventLog]:
    """Enter ``sup`` with every one of its events logged from the first on."""
    log = EventLog()
    with sup.events() as stream:
        async with anyio.create_task_group() as tg:
            tg.start_soon(log.follow, stream)
            async with sup:
                yield log
            tg.cancel_scope.cancel()


async def reload(sup: Supervisor, log: EventLog, lines: Lines) -> tuple[SupervisorEvent, dict[str, Any]]:
    """Reload now; the new child's STARTED event and READY facts."""
    since = log.mark()
    assert await sup.reload()
    started = await log.wait(EventKind.STARTED, since)
    return started, await ready(lines)


async def warm_spare(sup: Supervisor, log: EventLog, lines: Lines) -> SupervisorEvent:
    """A warm spare for the next reload.

    The preload list is learned from a child's report (when it is ready, and when it exits),
    so the first child's successor may start cold: reload once, then wait for a spare.
    """
    await reload(sup, log, lines)
    return await log.spare(timeout=10 + 2 * SLOW_IMPORT)


async def edit_and_restart(
    project: Project, log: EventLog, lines: Lines, version: str
) -> tuple[SupervisorEvent, dict[str, Any], float]:
    """Save the version file once; the new child's STARTED event, its facts, and how long it took."""
    since = log.mark()
    began = time.monotonic()
    project.set_version(version)
    found = await ready(lines)
    took = time.monotonic() - began
    assert found["version"] == version, found
    return await log.wait(EventKind.STARTED, since), found, took


async def connections(lines: Lines, count: int, timeout: float = 5.0) -> None:
    """Wait until no more than ``count`` children are connected to the line server."""
    with anyio.fail_after(timeout):
        while lines.connected > count:
            await lines._disconnected.wait()


def live_children(exclude: int | None) -> set[int]:
    """This process's direct children that run (not zombies), but ``exclude`` (the watchdog)."""
    alive = set()
    for proc in psutil.Process().children():
        with contextlib.suppress(psutil.NoSuchProcess):
            if proc.pid != exclude and proc.status() != psutil.STATUS_ZOMBIE:
                alive.add(proc.pid)
    return alive


@contextlib.contextmanager
def loop_log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """The supervisor loop's INFO lines (why a spare was not used...)."""
    with caplog.at_level(logging.INFO, logger=LOOP_LOGGER):
        yield caplog


def not_used(caplog: pytest.LogCaptureFixture, pid: int | None) -> str:
    """The loop's line saying why spare ``pid`` was thrown away."""
    found = [
        r.getMessage() for r in caplog.records if r.getMessage().startswith(f"spare [pid {pid}] not used")
    ]
    assert found, [r.getMessage() for r in caplog.records]
    return found[0]


# -- fast: an edit shows in a fraction of a cold start ----------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(30)
async def test_edit_shows_from_the_spare_in_a_fraction_of_a_cold_start(
    project: Project, lines: Lines, app: str, shared_venv: Venv
) -> None:
    sup = make(project, [shared_venv.python, app, "slowdep"], cwd=project.root)
    began = time.monotonic()
    async with supervised(sup) as log:
        first = await ready(lines)
        cold = time.monotonic() - began  # spawn → first line
        assert first["modules"] == {"slowdep": "1.0"}
        assert "slowdep" not in first["preloaded"]
        assert cold >= SLOW_IMPORT
        spare = await warm_spare(sup, log, lines)
        assert spare.generation == 0
        assert spare.pid not in (None, sup.pid)
        assert spare.message.endswith("MiB"), spare.message
        assert int(spare.message.split()[0]) > 10, spare.message  # "N modules, M MiB"

        started, found, took = await edit_and_restart(project, log, lines, "2")
        assert started.message == "spare", log.summary()
        assert started.pid == spare.pid == found["pid"]
        assert started.elapsed is not None
        assert started.elapsed < SLOW_IMPORT / SPEEDUP  # to activate (seconds)
        assert found["generation"] == 3
        assert "slowdep" in found["preloaded"]
        assert found["modules"] == {"slowdep": "1.0"}
        assert took < cold / SPEEDUP, (took, cold)


# -- never stale ----------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(40)
async def test_pip_install_is_seen_by_the_next_child(
    project: Project,
    lines: Lines,
    app: str,
    new_venv: Callable[..., Venv],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    venv = new_venv(slowdep_wheel(wheels, "1.0", delay=0.0))  # speed is not the point here
    sup = make(project, [venv.python, app, "slowdep"], cwd=project.root)
    with loop_log(caplog):
        async with supervised(sup) as log:
            assert (await ready(lines))["modules"] == {"slowdep": "1.0"}
            stale = await warm_spare(sup, log, lines)  # it has imported slowdep 1.0

            await venv.install_async(slowdep_wheel(wheels, "2.0", delay=0.0))
            started, found = await reload(sup, log, lines)
            assert found["modules"] == {"slowdep": "2.0"}
            assert started.pid != stale.pid  # cold, or a spare made after the install
            assert "changed" in not_used(caplog, stale.pid) or "gone" in not_used(caplog, stale.pid)

            fresh = await log.spare(stale)
            started, found, _ = await edit_and_restart(project, log, lines, "2")
            assert started.message == "spare"
            assert started.pid == fresh.pid
            assert found["modules"] == {"slowdep": "2.0"}
            assert "slowdep" in found["preloaded"]


@pytest.mark.slow
@pytest.mark.timeout(30)
async def test_touched_library_file_throws_the_spare_away(
    project: Project,
    lines: Lines,
    app: str,
    new_venv: Callable[..., Venv],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    venv = new_venv(module_wheel(wheels, "touchme", "t1"))
    library = venv.site / "touchme.py"
    sup = make(project, [venv.python, app, "touchme"], cwd=project.root)
    with loop_log(caplog):
        async with supervised(sup) as log:
            assert (await ready(lines))["modules"] == {"touchme": "t1"}

            # Its time changes, not its content: the spare that loaded it is not used.
            touched = await warm_spare(sup, log, lines)
            stat = library.stat()
            os.utime(library, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
            started, found = await reload(sup, log, lines)
            assert started.message != "spare", log.summary()
            assert started.pid != touched.pid
            assert f"{library} changed" in not_used(caplog, touched.pid)
            assert found["modules"] == {"touchme": "t1"}

            # Its content changes: the child sees the new one.
            edited = await log.spare(touched)
            library.write_text("VALUE = 't22'\n")
            os.utime(library, ns=(stat.st_atime_ns, stat.st_mtime_ns + 2_000_000_000))
            started, found = await reload(sup, log, lines)
            assert started.message != "spare", log.summary()
            assert started.pid != edited.pid
            assert f"{library} changed" in not_used(caplog, edited.pid)
            assert found["modules"] == {"touchme": "t22"}

            # The spare made after it preloads the new content, and is used.
            spare = await log.spare(touched, edited)
            started, found = await reload(sup, log, lines)
            assert started.message == "spare"
            assert started.pid == spare.pid
            assert found["modules"] == {"touchme": "t22"}
            assert "touchme" in found["preloaded"]


@pytest.mark.slow
@pytest.mark.timeout(30)
async def test_lazily_imported_user_modules_are_fresh(project: Project, lines: Lines, app: str) -> None:
    """Modules of the project imported inside a function, after the start: edited, and new."""
    helper, new = project.root / "helper.py", project.root / "newmod.py"
    replace(helper, "VALUE = 'v1'\n")
    sup = make(project, [sys.executable, app, "@helper", "@newmod"], cwd=project.root)
    async with supervised(sup) as log:
        assert (await ready(lines))["modules"] == {"helper": "v1", "newmod": "missing"}
        spare = await warm_spare(sup, log, lines)
        # Created after the spare was warm; then edited twice (sizes differ: no stale .pyc).
        for path, text, expected in [
            (new, "VALUE = 'n1'\n", {"helper": "v1", "newmod": "n1"}),
            (helper, "VALUE = 'v22'\n", {"helper": "v22", "newmod": "n1"}),
            (helper, "VALUE = 'v333'\n", {"helper": "v333", "newmod": "n1"}),
        ]:
            since = log.mark()
            replace(path, text)
            found = await ready(lines)
            started = await log.wait(EventKind.STARTED, since)
            assert started.message == "spare"
            assert started.pid == spare.pid
            assert found["modules"] == expected
            assert found["preloaded"] == ["json"]  # the app's own import of json, nothing of these
            spare = await log.spare()


@pytest.mark.slow
@pytest.mark.timeout(30)
async def test_editable_install_is_never_preloaded(
    project: Project, lines: Lines, app: str, new_venv: Callable[..., Venv], tmp_path: Path
) -> None:
    """An editable install lives outside site-packages (a ``.pth`` names its folder).

    Its folder is deliberately not watched (the project only), so nothing but the rule "only
    the standard library and site-packages are preloaded" keeps the spare from holding the old
    code: a file the watcher reports is excluded by another rule.
    """
    source = tmp_path / "edsrc"
    (source / "edpkg").mkdir(parents=True)
    module = source / "edpkg" / "__init__.py"
    replace(module, "VALUE = 'e1'\n")
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    venv = new_venv(editable_wheel(wheels, "edpkg", source))
    assert (venv.site / "_edpkg.pth").read_text().strip() == str(source)
    sup = make(project, [venv.python, app, "edpkg", "json"], cwd=project.root)
    assert sup.command[0] == venv.python
    async with supervised(sup) as log:
        assert (await ready(lines))["modules"] == {"edpkg": "e1", "json": None}
        spare = await warm_spare(sup, log, lines)
        replace(module, "VALUE = 'e22'\n")  # not watched: nothing reloads by itself
        started, found = await reload(sup, log, lines)
        assert started.message == "spare"
        assert started.pid == spare.pid
        assert found["modules"] == {"edpkg": "e22", "json": None}
        assert "edpkg" not in found["preloaded"]
        assert "json" in found["preloaded"]  # the spare did preload what it may


# -- robust ---------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(30)
async def test_killed_spare_is_replaced(project: Project, lines: Lines, app: str) -> None:
    sup = make(project, [sys.executable, app, "json"], cwd=project.root)
    async with supervised(sup) as log:
        await ready(lines)
        killed = await warm_spare(sup, log, lines)
        assert killed.pid is not None
        os.kill(killed.pid, signal.SIGKILL)
        replacement = await log.spare(killed)
        assert replacement.pid not in (None, killed.pid)
        started, found = await reload(sup, log, lines)
        assert started.message == "spare"
        assert started.pid == replacement.pid == found["pid"]

        # Killed, and a reload at once: it still starts a child (cold, or from a replacement).
        spare = await log.spare(killed)
        assert spare.pid is not None
        os.kill(spare.pid, signal.SIGKILL)
        started, found = await reload(sup, log, lines)
        assert started.pid != spare.pid
        assert found["pid"] == started.pid == sup.pid
        assert found["generation"] == started.generation == 4
        # The child runs: it answers.
        os.kill(found["pid"], signal.SIGUSR1)
        await lines.next("ALIVE", str(found["pid"]))


@pytest.mark.slow
@pytest.mark.timeout(60)
async def test_100_reloads_leak_no_process_and_no_descriptor(
    project: Project, lines: Lines, app: str
) -> None:
    sup = make(project, [sys.executable, app, "json"], cwd=project.root)
    async with supervised(sup) as log:
        await ready(lines)
        spare = await warm_spare(sup, log, lines)
        await connections(lines, 1)
        await anyio.wait_all_tasks_blocked()
        fds_before = open_fds()
        processes_before = live_children(sup.guardian_pid)
        assert processes_before == {sup.pid, spare.pid}
        generation = sup.generation
        for _ in range(100):
            started, found = await reload(sup, log, lines)
            generation += 1
            assert started.generation == found["generation"] == generation
            assert found["pid"] == started.pid
        spare = await log.spare()
        await connections(lines, 1)
        await anyio.wait_all_tasks_blocked()
        fds_after = open_fds()
        processes_after = live_children(sup.guardian_pid)
    assert processes_after == {started.pid, spare.pid}
    assert len(fds_after) <= len(fds_before), {
        fd: what for fd, what in fds_after.items() if fds_before.get(fd) != what
    }
    from_spare = [e for e in log.of(EventKind.STARTED) if e.message == "spare"]
    assert len(from_spare) >= 90, len(from_spare)  # all of them, unless a reload beat a spawn


# -- the old child keeps running when the new code cannot import --------------------------

TARGET = """\
import os
import signal
import socket

import aioreload

VERSION = {version!r}


def main() -> None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(os.environ["TEST_REPORT_SOCK"])
    signal.signal(signal.SIGUSR1, lambda *_: sock.sendall(f"ALIVE {{os.getpid()}}\\n".encode()))
    generation = os.environ["AIORELOAD_GENERATION"]
    aioreload.report_ready()
    sock.sendall(f"READY {{os.getpid()}} {{VERSION}} {{generation}}\\n".encode())
    while True:
        signal.pause()
"""
"""``mod.py``: a ``MODULE:FUNCTION`` program that says ``READY <pid> <VERSION> <generation>``."""
BROKEN = "def main(:\n"
"""``mod.py`` saved half-way through an edit: a SyntaxError."""


def target_supervisor(project: Project) -> Supervisor:
    """``aioreload mod:main`` as the command line sets it up: prepare, imports watched."""
    replace(project.root / "mod.py", TARGET.format(version="v1"))
    command = [sys.executable, "-m", "aioreload._target", "mod:main"]
    return make(project, command, cwd=project.root, _prepare=True, watch_imports=True)


async def alive(lines: Lines, pid: str) -> None:
    """``pid`` still runs its program: it answers SIGUSR1."""
    os.kill(int(pid), signal.SIGUSR1)
    await lines.next("ALIVE", pid)


@pytest.mark.slow
@pytest.mark.timeout(30)
async def test_new_code_that_cannot_import_leaves_the_old_child_running(
    project: Project, lines: Lines
) -> None:
    module = project.root / "mod.py"
    sup = target_supervisor(project)
    async with supervised(sup) as log:
        first = await lines.next("READY")
        assert first[2:] == ["v1", "1"]
        assert await sup.reload()
        second = await lines.next("READY")
        assert second[2:] == ["v1", "2"]
        spare = await log.spare()  # the new code will import in it

        since = log.mark()
        replace(module, BROKEN)
        failed = await log.wait(EventKind.RELOAD_FAILED, since)
        assert failed.message == (
            f"the new code did not import (the new child exited with code 1); still running [pid {second[1]}]"
        )
        assert failed.returncode == 1
        assert failed.generation == 3
        assert failed.pid == spare.pid
        assert sup.pid == int(second[1])
        await alive(lines, second[1])
        assert not [e for e in log.events[since:] if e.kind in (EventKind.STOPPING, EventKind.STARTED)]

        # The fix replaces the old child, from a spare made after the failure used up the last.
        replace(module, TARGET.format(version="v22"))
        third = await lines.next("READY")
        assert third[2:] == ["v22", "4"]
        stopped = await log.wait(EventKind.STOPPED, since)
        assert stopped.pid == int(second[1])
        started = await log.wait(EventKind.STARTED, since)
        assert started.pid == sup.pid == int(third[1])
        assert started.generation == 4
        assert started.message == "spare", log.summary()
        assert started.pid != spare.pid


async def spare_line(proc: Cli, known: set[str], timeout: float = 10.0) -> str:
    """The pid of the next spare ``-v`` reports (``spare [pid N] ready: ...``) that is not ``known``."""
    with anyio.fail_after(timeout):
        while True:
            for line in proc.stderr:
                found = re.search(
                    r"aioreload: spare \[pid (\d+)\] ready: \d+ modules, \d+ MiB preloaded in ", line
                )
                if found and found[1] not in known:
                    known.add(found[1])
                    return found[1]
            await proc._arrived.wait()


@pytest.mark.slow
@pytest.mark.timeout(30)
@pytest.mark.usefixtures("runtime_dir")
async def test_cli_module_function_keeps_the_old_child_on_a_syntax_error(
    project: Project, lines: Lines
) -> None:
    module = project.root / "mod.py"
    replace(module, TARGET.format(version="v1"))
    spares: set[str] = set()
    async with cli(project, "-d", "0.02", "-v", "mod:main") as proc:
        assert (await lines.next("READY"))[2:] == ["v1", "1"]
        replace(module, TARGET.format(version="v22"))
        second = await lines.next("READY")
        assert second[2:] == ["v22", "2"]
        spares.add(second[1])  # if it came from a spare, that spare's line is not the next one's
        spare = await spare_line(proc, spares)

        replace(module, TARGET.format(version="v333"))
        third = await lines.next("READY")
        assert third == ["READY", spare, "v333", "3"]
        assert "started from spare in " in await proc.status(f" ms [pid {spare}]")
        await spare_line(proc, spares)

        replace(module, BROKEN)
        error = await proc.status("aioreload: error:")
        assert error == (
            "aioreload: error: the new code did not import (the new child exited with code 1);"
            f" still running [pid {spare}] · waiting for changes"
        )
        await alive(lines, spare)
        replace(module, TARGET.format(version="v4444"))
        fixed = await lines.next("READY")
        assert fixed[2:] == ["v4444", "5"]
        assert "started from spare in " in await proc.status(f" ms [pid {fixed[1]}]")
    errors = [line for line in proc.stderr if line.startswith("aioreload: error:")]
    assert errors == [error], proc.stderr


# -- invisible: a child from the spare is a cold start's ------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(30)
async def test_every_child_has_its_own_random_state(project: Project, lines: Lines, app: str) -> None:
    sup = make(project, [sys.executable, app, "random"], cwd=project.root)
    async with supervised(sup) as log:
        children = [await ready(lines), (await reload(sup, log, lines))[1]]
        spare = await log.spare()  # see warm_spare
        for _ in range(2):
            started, found = await reload(sup, log, lines)
            assert started.message == "spare"
            assert started.pid == spare.pid
            assert "random" in found["preloaded"]  # seeded in the spare, before it was a child
            children.append(found)
            spare = await log.spare()
    values = [child["random"] for child in children]
    assert len(set(values)) == len(values), values


FORMS = ["script", "module", "console", "options"]


def introspect_command(project: Project, venv: Venv, form: str) -> list[str]:
    """Install ``children/spare_introspect.py`` in the project to run as ``form``; the command."""
    source = (CHILDREN / "spare_introspect.py").read_text()
    args = ["two words", "--flag", "-m", "x"]
    if form in ("script", "options"):
        (project.root / "script.py").write_text(source)
        options = ["-u", "-X", "utf8", "-W", "ignore::UserWarning"] if form == "options" else []
        return [venv.python, *options, "script.py", *args]
    if form == "module":
        (project.root / "pkg").mkdir()
        (project.root / "pkg" / "__init__.py").write_text("")
        (project.root / "pkg" / "mod.py").write_text(source)
        return [venv.python, "-m", "pkg.mod", *args]
    tool = project.root / "bin" / "tool"  # a console script, as pip writes them
    tool.parent.mkdir()
    tool.write_text(f"#!{venv.python}\n{source}")
    tool.chmod(0o755)
    return [str(tool), *args]


async def plain_start(project: Project, lines: Lines, command: list[str]) -> dict[str, Any]:
    """What the program sees when started without the spare's bootstrap: the reference."""
    sup = make(project, command, cwd=project.root, spare=False)
    async with supervised(sup):
        found = await ready(lines)
        assert BOOTSTRAP not in " ".join(psutil.Process(found["pid"]).cmdline())
    found.pop("pid")
    return found


@pytest.mark.slow
@pytest.mark.timeout(30)
@pytest.mark.parametrize("form", FORMS)
async def test_a_child_from_the_spare_sees_a_cold_start(
    project: Project, lines: Lines, shared_venv: Venv, form: str
) -> None:
    command = introspect_command(project, shared_venv, form)
    plain = await plain_start(project, lines, command)
    assert plain["name"] == "__main__"  # its `if __name__ == "__main__":` block ran
    assert plain["argv"][1:] == command[-4:]
    sup = make(project, command, cwd=project.root)
    async with supervised(sup) as log:
        cold = await ready(lines)
        assert BOOTSTRAP in " ".join(psutil.Process(cold["pid"]).cmdline())
        await warm_spare(sup, log, lines)
        started, warm = await reload(sup, log, lines)
        assert started.message == "spare"
    for found in (cold, warm):
        found.pop("pid")
    assert cold == plain
    assert warm == plain


# -- the options ----------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(30)
@pytest.mark.parametrize("spare", [True, False], ids=["spare", "no-spare"])
async def test_without_spare_children_are_plain(
    project: Project, lines: Lines, app: str, spare: bool
) -> None:
    command = [sys.executable, app, "json"]
    sup = make(project, command, cwd=project.root, spare=spare)
    async with supervised(sup) as log:
        children = [await ready(lines), (await reload(sup, log, lines))[1]]
        expected = {children[-1]["pid"]}
        if spare:
            expected.add((await log.spare()).pid)  # see warm_spare
        assert live_children(sup.guardian_pid) == expected
        started, found = await reload(sup, log, lines)
        children.append(found)
        assert started.message == ("spare" if spare else "")
        cmdline = psutil.Process(found["pid"]).cmdline()
    bootstrap = str(Path(aioreload.__file__).parent / BOOTSTRAP)
    assert cmdline == ([command[0], bootstrap, *command[1:]] if spare else command)
    assert [child["bootstrap"] for child in children] == [spare] * 3
    assert [child["generation"] for child in children] == [1, 2, 3]
    # The sentinel: the supervisor has ended, every event it sent is in.
    assert bool(log.of(EventKind.SPARE_READY)) is spare, log.summary()


@pytest.mark.slow
@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    ("exclude", "kept_out"),
    [
        pytest.param([], [], id="nothing"),
        pytest.param(["decimal", "xml"], ["decimal", "xml", "xml.dom", "xml.dom.minidom"], id="decimal,xml"),
        pytest.param(
            ["json"],
            ["json"],
            id="json",
        ),
    ],
)
async def test_spare_exclude_keeps_modules_out_of_the_spare(
    project: Project, lines: Lines, app: str, exclude: list[str], kept_out: list[str]
) -> None:
    sup = make(
        project,
        [sys.executable, app, "decimal", "xml.dom.minidom", "json"],
        cwd=project.root,
        spare_exclude=exclude,
    )
    async with supervised(sup) as log:
        await ready(lines)
        await warm_spare(sup, log, lines)
        started, found = await reload(sup, log, lines)
        assert started.message == "spare"
    everything = ["decimal", "json", "xml", "xml.dom", "xml.dom.minidom"]
    assert found["preloaded"] == [name for name in everything if name not in kept_out]


# -- known bugs (strict: each fails today; a fix makes it pass, then drop its mark) ---------


class LogWatch(logging.Handler):
    """Sets ``seen`` once a record with ``needle`` in its message is logged (see ``watching_log``)."""

    def __init__(self, needle: str) -> None:
        super().__init__(logging.DEBUG)
        self.needle = needle
        self.seen = anyio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.needle in record.getMessage():
            self.seen.set()


@contextlib.contextmanager
def watching_log(needle: str) -> Iterator[LogWatch]:
    """Watch the loop's log, DEBUG included, for ``needle``."""
    logger = logging.getLogger(LOOP_LOGGER)
    handler = LogWatch(needle)
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


@pytest.mark.slow
@pytest.mark.timeout(30)
async def test_first_child_that_is_ready_gets_a_spare(project: Project, lines: Lines, app: str) -> None:
    """The child reports its modules right after it says it is ready: its spare is made then."""
    sup = make(project, [sys.executable, app, "json"], cwd=project.root)
    async with supervised(sup) as log:
        await ready(lines)
        await log.spare()  # before the first reload: the first child's own spare
        started, _ = await reload(sup, log, lines)
    assert started.message == "spare", log.summary()


@pytest.mark.slow
@pytest.mark.timeout(30)
async def test_bootstrap_imports_nothing_a_cold_start_does_not(
    project: Project, lines: Lines, app: str
) -> None:
    command = [sys.executable, app]
    async with supervised(make(project, command, cwd=project.root, spare=False)):
        plain = set((await ready(lines))["at_start"])
    async with supervised(make(project, command, cwd=project.root)):
        cold = set((await ready(lines))["at_start"]) - {"aioreload._sparechild"}
    assert sorted(cold - plain) == []


@pytest.mark.slow
@pytest.mark.timeout(30)
async def test_main_module_globals_are_a_cold_starts(
    project: Project, lines: Lines, shared_venv: Venv
) -> None:
    command = introspect_command(project, shared_venv, "script")
    plain = await plain_start(project, lines, command)
    async with supervised(make(project, command, cwd=project.root)):
        cold = await ready(lines)
    assert cold["globals_at_start"] == plain["globals_at_start"]


@pytest.mark.slow
@pytest.mark.timeout(30)
async def test_project_module_shadowing_the_standard_library_wins_as_in_a_cold_start(
    project: Project, lines: Lines, app: str
) -> None:
    """A project's ``queue.py`` is what ``logging.handlers`` and the program import, cold.

    The spare imports ``logging.handlers`` without the project on ``sys.path``: the standard
    library's ``queue`` then stands in for the project's in the child.
    """
    replace(project.root / "queue.py", "MARK = 'project'\n")
    sup = make(project, [sys.executable, app, "logging.handlers", "queue"], cwd=project.root)
    with watching_log("loaded code from outside the libraries") as tainted:
        async with supervised(sup) as log:
            assert (await ready(lines))["modules"] == {"logging.handlers": None, "queue": "project"}
            await reload(sup, log, lines)
            # The spare preloads logging.handlers with the project first on sys.path, as a cold
            # start would: it loads the project's queue.py, and such a spare is never used.
            with anyio.fail_after(10 + 2 * SLOW_IMPORT):
                await tainted.seen.wait()
            started, found = await reload(sup, log, lines)
    assert found["modules"] == {"logging.handlers": None, "queue": "project"}, started
    assert started.message != "spare"


@pytest.mark.slow
@pytest.mark.timeout(30)
async def test_library_sees_the_programs_argv_when_imported(
    project: Project, lines: Lines, app: str, new_venv: Callable[..., Venv], tmp_path: Path
) -> None:
    """Libraries that read ``sys.argv`` or ``sys.path`` at import (program names, config paths)."""
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    code = "import sys\n\nVALUE = [sys.argv, sys.path[0]]\n"
    venv = new_venv(build_wheel(wheels, "argvlog", "1.0", {"argvlog.py": code}))
    sup = make(project, [venv.python, app, "argvlog"], cwd=project.root)
    async with supervised(sup) as log:
        cold = await ready(lines)
        assert cold["modules"] == {"argvlog": [[app, "argvlog"], str(project.root)]}
        await warm_spare(sup, log, lines)
        started, found = await reload(sup, log, lines)
        assert started.message == "spare"
        assert "argvlog" in found["preloaded"]
    assert found["modules"] == cold["modules"]


@pytest.mark.slow
@pytest.mark.timeout(30)
async def test_spare_killed_just_before_a_prepared_reload(project: Project, lines: Lines) -> None:
    """The dead spare becomes the candidate: RELOAD_FAILED, "did not import within 30 s", at once."""
    sup = target_supervisor(project)
    results = []
    killed: list[SupervisorEvent] = []
    async with supervised(sup) as log:
        await lines.next("READY")
        for _ in range(5):  # the race is lost most of the time; five in a row would be luck
            assert await sup.reload()
            await lines.next("READY")
            spare = await log.spare(*killed)
            assert spare.pid is not None
            os.kill(spare.pid, signal.SIGKILL)
            killed.append(spare)
            results.append(await sup.reload())
            if results[-1]:
                await lines.next("READY")
    assert all(results), log.summary()

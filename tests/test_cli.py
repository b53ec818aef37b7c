"""The ``aioreload`` command, run as a real process."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import anyio.abc
import psutil
import pytest
from conftest import CHILDREN, Lines, Project, child, stop_process

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("runtime_dir")]


class Cli:
    """A running ``aioreload`` process and the status lines it printed."""

    def __init__(self, process: anyio.abc.Process, terminal: int | None = None) -> None:
        self.process = process
        self.stderr: list[str] = []
        self.raw = b""
        self._terminal = terminal
        self._arrived = anyio.Event()

    async def _chunks(self) -> AsyncIterator[bytes]:
        if self._terminal is None:
            assert self.process.stderr is not None
            async for chunk in self.process.stderr:
                yield chunk
            return
        while True:  # the terminal's master side
            await anyio.wait_readable(self._terminal)
            try:
                chunk = os.read(self._terminal, 4096)
            except OSError:  # EIO: every writer closed it
                return
            if not chunk:
                return
            yield chunk.replace(b"\r\n", b"\n")

    async def collect(self) -> None:
        buffer = b""
        async for chunk in self._chunks():
            self.raw += chunk
            buffer += chunk
            *complete, buffer = buffer.split(b"\n")
            self.stderr.extend(line.decode() for line in complete)
            self._arrived.set()
            self._arrived = anyio.Event()

    async def status(self, needle: str, timeout: float = 10) -> str:
        with anyio.fail_after(timeout):
            while True:
                for line in self.stderr:
                    if needle in line:
                        return line
                await self._arrived.wait()

    async def exit_code(self, timeout: float = 10) -> int:
        with anyio.fail_after(timeout):
            return await self.process.wait()


@asynccontextmanager
async def cli(
    project: Project,
    *args: str,
    ignore_sigint: bool = False,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    terminal: bool = False,
) -> AsyncIterator[Cli]:
    """Run ``aioreload ARGS`` in the project; its stderr is a pipe, or a terminal with ``terminal``."""
    command = [sys.executable, "-m", "aioreload", *args]
    if ignore_sigint:  # started like `nohup aioreload ... &`: SIGINT ignored from the start
        command = ["/bin/sh", "-c", 'trap "" INT; exec "$@"', "sh", *command]
    master, slave = os.openpty() if terminal else (None, None)
    try:
        process = await anyio.open_process(
            command,
            stdin=subprocess.DEVNULL,
            stdout=None,
            stderr=subprocess.PIPE if slave is None else slave,
            env={**project.env, "XDG_RUNTIME_DIR": os.environ["XDG_RUNTIME_DIR"], **(env or {})},
            cwd=cwd or project.root,
        )
    finally:
        if slave is not None:
            os.close(slave)
    try:
        async with cli_process(process, master) as result:
            yield result
    finally:
        if master is not None:
            os.close(master)


@asynccontextmanager
async def cli_process(process: anyio.abc.Process, terminal: int | None) -> AsyncIterator[Cli]:
    result = Cli(process, terminal)
    async with process, anyio.create_task_group() as tg:
        tg.start_soon(result.collect)
        try:
            yield result
        finally:
            await stop_process(process, signal.SIGTERM)
            tg.cancel_scope.cancel()
    if printed_own_traceback(result.stderr):
        pytest.fail("aioreload printed a traceback:\n" + "\n".join(result.stderr))


def printed_own_traceback(stderr: list[str]) -> bool:
    """A traceback out of aioreload itself, not one of a child's (which share its stderr).

    Anything uncaught in the supervising process passes through the command line's ``main``;
    a child stopped by SIGINT mid-line may print its own KeyboardInterrupt traceback.
    """
    own = (f"aioreload{os.sep}_cli.py", f"aioreload{os.sep}__main__.py")
    return any("Traceback" in line for line in stderr) and any(
        name in line for line in stderr for name in own
    )


async def seen(lines: Lines, *words: str, timeout: float = 5) -> None:
    """Wait until a line starting with ``words`` has arrived (see ``Lines.seen``)."""
    await lines.seen(*words, timeout=timeout)


async def change_and_restart(project: Project, lines: Lines, version: str) -> list[str]:
    """Write ``version`` once (the watches were armed before the first child started) and
    return the next child's READY line, which must report it."""
    project.set_version(version)
    ready = await lines.next("READY")
    assert ready[2] == version, ready
    return ready


@pytest.mark.slow
async def test_cli_restarts_on_change_and_stops_on_sigint(project: Project, lines: Lines) -> None:
    async with cli(project, "-d", "0.02", "--", *child("ready_wait")) as proc:
        first = await lines.next("READY")
        await proc.status("started")
        second = await change_and_restart(project, lines, "2")
        await seen(lines, "CLEANED", first[1])
        await proc.status("changed version.txt")
        proc.process.send_signal(signal.SIGINT)
        assert await proc.exit_code() == 0
        await seen(lines, "CLEANED", second[1])


@pytest.mark.slow
async def test_cli_sighup_reloads(project: Project, lines: Lines) -> None:
    async with cli(project, "--", *child("ready_wait")) as proc:
        first = await lines.next("READY")
        proc.process.send_signal(signal.SIGHUP)
        second = await lines.next("READY")
        assert second[1] != first[1]
        line = await proc.status("reload requested")
        assert "stopped in" in line
        assert "(SIGINT)" in line


@pytest.mark.slow
async def test_cli_second_sigint_kills_at_once(project: Project, lines: Lines) -> None:
    async with cli(project, "--stop-timeout", "30", "--", *child("ignore_stop")) as proc:
        await lines.next("READY")
        began = time.monotonic()
        proc.process.send_signal(signal.SIGINT)
        await lines.next("GOT-SIGINT")
        proc.process.send_signal(signal.SIGINT)
        code = await proc.exit_code()
        assert time.monotonic() - began < 5
        assert code == 128 + signal.SIGKILL


@pytest.mark.slow
async def test_cli_exit_code_is_128_plus_signal(project: Project, lines: Lines) -> None:
    async with cli(project, "--stop-signal", "TERM", "--", *child("ignore_stop")) as proc:
        await lines.next("READY")
        proc.process.send_signal(signal.SIGTERM)
        await lines.next("GOT-SIGTERM")
        proc.process.send_signal(signal.SIGINT)
        assert await proc.exit_code() == 137


@pytest.mark.slow
async def test_cli_killed_supervisor_takes_child_with_it(project: Project, lines: Lines) -> None:
    async with cli(project, "--", *child("grandchild", "ignore")) as proc:
        ready = await lines.next("READY")
        await proc.status("started")
        family = [psutil.Process(int(ready[1])), psutil.Process(int(ready[4]))]
        proc.process.kill()
        _, alive = psutil.wait_procs(family, timeout=1.0)
        assert not [p for p in alive if p.status() != psutil.STATUS_ZOMBIE]


@pytest.mark.slow
async def test_cli_inherited_ignored_sigint_is_not_passed_on(project: Project, lines: Lines) -> None:
    async with cli(project, "--stop-timeout", "5", "--", *child("ready_wait"), ignore_sigint=True) as proc:
        first = await lines.next("READY")
        began = time.monotonic()
        proc.process.send_signal(signal.SIGHUP)
        await lines.next("READY")
        await seen(lines, "CLEANED", first[1])  # the child saw SIGINT and shut down itself
        assert time.monotonic() - began < 2.5  # not the 5 s stop timeout


@pytest.mark.slow
async def test_cli_missing_command_is_one_line_exit_127(project: Project) -> None:
    async with cli(project, "--", "no-such-command-here") as proc:
        assert await proc.exit_code() == 127
    assert len(proc.stderr) == 1, proc.stderr
    assert "command not found" in proc.stderr[0]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--"], "no command given"),
        (["-w", "missing-folder", "--", "true"], "watch path does not exist"),
        (["--stop-signal", "NOPE", "--", "true"], "unknown signal"),
        (["--stop-timeout", "-1", "--", "true"], "must be >= 0"),
        (["--debounce", "-1", "--", "true"], "must be >= 0"),
        (["--crash-backoff-max", "-1", "--", "true"], "must be >= 0"),
        (["--stop-timeout", "soon", "--", "true"], "invalid float value"),
        (["-q", "-v", "--", "true"], "not allowed with"),
        (["no_such_module:main"], "no module named 'no_such_module'"),
        (["json.nope:main"], "no module named 'json.nope'"),
    ],
)
async def test_cli_bad_input_is_one_line(project: Project, args: list[str], needle: str) -> None:
    async with cli(project, *args) as proc:
        code = await proc.exit_code()
    assert code == 2
    assert len(proc.stderr) == 1, proc.stderr
    assert needle in proc.stderr[0]


@pytest.mark.slow
def test_cli_version_and_help() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "aioreload", "--version"], capture_output=True, text=True, check=True
    )
    assert out.stdout.startswith("aioreload ")
    helped = subprocess.run(
        [sys.executable, "-m", "aioreload", "--help"], capture_output=True, text=True, check=True
    )
    assert "exit codes" in helped.stdout
    assert "-- COMMAND" in helped.stdout
    assert "MODULE:FUNCTION" in helped.stdout
    assert "examples:" in helped.stdout
    for option in ("--watch", "--ignore", "--ext", "--no-gitignore", "--stop-signal", "--stop-timeout"):
        assert option in helped.stdout
    for option in ("--debounce", "--restart-on-crash", "--crash-backoff", "--poll", "--clear", "--quiet"):
        assert option in helped.stdout
    reload_help = subprocess.run(
        [sys.executable, "-m", "aioreload", "reload", "--help"], capture_output=True, text=True, check=True
    )
    assert "exit codes" in reload_help.stdout


def test_cli_help_quotes_the_supervisor_defaults() -> None:
    import inspect

    from aioreload import Supervisor
    from aioreload._cli import _parser

    parameters = inspect.signature(Supervisor).parameters
    helps = {action.dest: action.help or "" for action in _parser()._actions}
    for name in ("stop_timeout", "debounce", "crash_backoff", "crash_backoff_max"):
        assert f"(default: {parameters[name].default:g})" in helps[name], name


def test_console_script_is_installed() -> None:
    script = Path(sys.executable).with_name("aioreload" + (".exe" if os.name == "nt" else ""))
    assert script.exists()


# -- what is watched: paths, globs, extensions, .gitignore ---------------------------------


async def restart_after_writing(proc: Cli, lines: Lines, *paths: Path) -> str:
    """Write ``paths`` once, in order, after the first child's line; return the restart's status line.

    The last path is the sentinel: a path written before it is caught by the same watch, so
    were it not ignored, it would show in this restart (``+1``) or in an earlier one.
    """
    await lines.next("READY")
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)  # a new folder is no change by itself
        path.write_text("written")
    await lines.next("READY")
    return await proc.status("started in")


def assert_only_change(proc: Cli, line: str, name: str) -> None:
    assert f"changed {name} ·" in line, line
    assert not [other for other in proc.stderr if "changed" in other and name not in other], proc.stderr


@pytest.mark.slow
async def test_cli_watch_paths(project: Project, lines: Lines) -> None:
    watched = project.root / "watched"
    watched.mkdir()
    (project.root / "other.txt").write_text("")
    async with cli(
        project, "-w", "watched", "-w", "version.txt", "-d", "0.02", "--", *child("ready_wait")
    ) as proc:
        assert "watching 2 paths (1 file)" in await proc.status("started")
        line = await restart_after_writing(proc, lines, project.root / "other.txt", watched / "a.txt")
        assert_only_change(proc, line, "watched/a.txt")


@pytest.mark.slow
async def test_cli_ignore_globs_and_default_ignores(project: Project, lines: Lines) -> None:
    async with cli(
        project, "--ignore", "*.log", "-i", "tmp/*", "-d", "0.02", "--", *child("ready_wait")
    ) as proc:
        ignored = [
            project.root / name for name in ("a.log", "tmp/x.txt", "__pycache__/m.txt", "m.pyc", "x.swp")
        ]
        line = await restart_after_writing(proc, lines, *ignored, project.root / "b.txt")
        assert_only_change(proc, line, "b.txt")


@pytest.mark.slow
async def test_cli_extensions(project: Project, lines: Lines) -> None:
    async with cli(project, "-e", "py", "--ext", ".toml", "-d", "0.02", "--", *child("ready_wait")) as proc:
        assert "watching . (0 files)" in await proc.status("started")
        line = await restart_after_writing(proc, lines, project.root / "version.txt", project.root / "a.toml")
        assert_only_change(proc, line, "a.toml")


@pytest.mark.slow
async def test_cli_respects_gitignore_by_default(project: Project, lines: Lines) -> None:
    (project.root / ".gitignore").write_text("build/\n*.gen\n")
    (project.root / "build").mkdir()
    (project.root / "build" / "old.txt").write_text("")
    async with cli(project, "-d", "0.02", "--", *child("ready_wait")) as proc:
        # .gitignore and version.txt; build/ is not counted
        assert "watching . (2 files)" in await proc.status("started")
        paths = [project.root / "build" / "out.txt", project.root / "x.gen", project.root / "src.txt"]
        line = await restart_after_writing(proc, lines, *paths)
        assert_only_change(proc, line, "src.txt")


@pytest.mark.slow
async def test_cli_no_gitignore(project: Project, lines: Lines) -> None:
    (project.root / ".gitignore").write_text("build/\n")
    (project.root / "build").mkdir()
    async with cli(project, "--no-gitignore", "-d", "0.02", "--", *child("ready_wait")) as proc:
        line = await restart_after_writing(proc, lines, project.root / "build" / "out.txt")
        assert "changed build/out.txt" in line


@pytest.mark.slow
async def test_cli_poll(project: Project, lines: Lines) -> None:
    async with cli(project, "--poll", "-d", "0.02", "--", *child("ready_wait")) as proc:
        await lines.next("READY")
        await change_and_restart(project, lines, "2")
        await proc.status("changed version.txt")


# -- stopping and crashing -------------------------------------------------------------------


@pytest.mark.slow
async def test_cli_stop_timeout_kills_a_child_that_ignores_the_signal(project: Project, lines: Lines) -> None:
    async with cli(project, "--stop-timeout", "0.2", "--", *child("ignore_stop")) as proc:
        first = await lines.next("READY")
        began = time.monotonic()
        proc.process.send_signal(signal.SIGHUP)
        await seen(lines, "GOT-SIGINT", first[1])
        second = await lines.next("READY")
        assert time.monotonic() - began < 3
        assert second[1] != first[1]
        line = await proc.status("reload requested")
        assert "killed after" in line
        assert "(SIGINT ignored)" in line


@pytest.mark.slow
async def test_cli_crash_waits_for_a_change(project: Project, lines: Lines) -> None:
    async with cli(project, "-d", "0.02", "--", *child("exit_code", "3")) as proc:
        await lines.next("READY")
        line = await proc.status("exited with code 3")
        assert line.endswith("· waiting for changes")
        await change_and_restart(project, lines, "2")


@pytest.mark.slow
async def test_cli_restart_on_crash_with_backoff(project: Project, lines: Lines) -> None:
    args = ["-r", "--crash-backoff", "0.05", "--crash-backoff-max", "0.1"]
    async with cli(project, *args, "--", *child("exit_code", "3")) as proc:
        for _ in range(3):
            await lines.next("READY")
        assert (await proc.status("exited with code 3")).endswith("· restarting")
        assert "restarting after a crash · started in" in await proc.status("restarting after a crash")


# -- status lines ----------------------------------------------------------------------------


@pytest.mark.slow
async def test_cli_quiet_prints_errors_only(project: Project, lines: Lines) -> None:
    async with cli(project, "-q", "--", *child("exit_code", "3")) as proc:
        await lines.next("READY")
        await proc.status("exited with code 3")
    assert not [line for line in proc.stderr if "started" in line], proc.stderr


@pytest.mark.slow
async def test_cli_verbose_shows_settings_and_debug_lines(project: Project, lines: Lines) -> None:
    async with cli(project, "-v", "-d", "0.3", "--", *child("ready_wait")) as proc:
        settings = await proc.status("settings (flags):")
        assert "debounce=0.3" in settings
        assert "gitignore=on" in settings
        await lines.next("READY")
        await proc.status("DEBUG:")


@pytest.mark.slow
async def test_cli_status_lines_on_a_terminal(project: Project, lines: Lines) -> None:
    env = {"NO_COLOR": ""}
    async with cli(project, "--clear", "--", *child("ready_wait"), terminal=True, env=env) as proc:
        await lines.next("READY")
        await proc.status("started")
        proc.process.send_signal(signal.SIGHUP)
        await lines.next("READY")
        await proc.status("reload requested")
    assert b"\x1b[32m" in proc.raw  # green "started"
    assert b"\x1b[2J" in proc.raw  # cleared before the restart


@pytest.mark.slow
async def test_cli_no_color_and_no_clear_off_a_terminal(project: Project, lines: Lines) -> None:
    async with cli(
        project, "--clear", "--", *child("ready_wait"), terminal=True, env={"NO_COLOR": "1"}
    ) as proc:
        await lines.next("READY")
        await proc.status("started")
    assert not re.search(rb"\x1b\[[0-9;]*m", proc.raw), proc.raw
    async with cli(project, "--clear", "--", *child("ready_wait")) as proc:
        await lines.next("READY")
        proc.process.send_signal(signal.SIGHUP)
        await lines.next("READY")
        await proc.status("reload requested")
    assert not [line for line in proc.stderr if "\x1b" in line]


@pytest.mark.slow
async def test_cli_reload_line_reports_change_stop_start_and_ready(project: Project, lines: Lines) -> None:
    env = dict(project.env, TEST_CHILDREN=str(CHILDREN))
    (project.root / "helper.py").write_text("VALUE = 1\n")
    shutil.copy(CHILDREN / "run_app.py", project.root / "app.py")
    command = [sys.executable, str(project.root / "app.py")]
    async with cli(project, "-d", "0.02", "--", *command, env=env) as proc:
        await lines.next("READY")
        await proc.status("ready in")
        (project.root / "helper.py").write_text("VALUE = 2\n")
        assert (await lines.next("READY"))[2] == "2"
        line = await proc.status("changed helper.py")
        assert "stopped in" in line
        assert "started in" in line


# -- MODULE:FUNCTION targets -------------------------------------------------------------------

TARGET_APP = """\
import asyncio, os, sys

from _report import report, version


async def main() -> int:
    value = version()
    report("READY", os.getpid(), value, *sys.argv)
    if value.startswith("exit-"):
        return int(value[5:])
    await asyncio.Event().wait()
    return 0


def plain() -> None:
    report("READY", os.getpid(), "plain")
"""


def target_project(project: Project) -> dict[str, str]:
    (project.root / "pkg").mkdir()
    (project.root / "pkg" / "__init__.py").write_text("")
    (project.root / "pkg" / "app.py").write_text(TARGET_APP)
    return {"PYTHONPATH": str(CHILDREN)}


@pytest.mark.slow
async def test_cli_target_runs_a_function_and_ends_with_its_code(project: Project, lines: Lines) -> None:
    env = target_project(project)
    async with cli(project, "-d", "0.02", "pkg.app:main", "--flag", "x", env=env) as proc:
        first = await lines.next("READY")
        assert first[3:] == ["pkg.app:main", "--flag", "x"]  # sys.argv
        assert "watching . (3 files) and imported modules · started pkg.app:main --flag x" in (
            await proc.status("started")
        )
        project.set_version("exit-4")
        assert (await lines.next("READY"))[2] == "exit-4"
        code = await proc.exit_code()
    assert code == 4
    assert proc.stderr[-1] == "aioreload: pkg.app:main --flag x exited with code 4"


@pytest.mark.slow
async def test_cli_target_reloads_when_an_imported_module_changes(project: Project, lines: Lines) -> None:
    env = target_project(project)
    (project.root / "elsewhere").mkdir()
    async with cli(project, "-d", "0.02", "-w", "elsewhere", "pkg.app:main", env=env) as proc:
        first = await lines.next("READY")
        # pkg/app.py is outside the watched folder: only the watch on imports sees it.
        (project.root / "pkg" / "app.py").write_text(TARGET_APP + "\n# edited\n")
        second = await lines.next("READY")
        assert second[1] != first[1]
        assert "changed pkg/app.py" in await proc.status("changed")


@pytest.mark.slow
async def test_cli_target_with_a_missing_function_waits_for_a_fix(project: Project, lines: Lines) -> None:
    env = target_project(project)
    async with cli(project, "-d", "0.02", "pkg.app:nope", env=env) as proc:
        await proc.status("exited with code 1 · waiting for changes")
        assert "error: pkg.app has no attribute 'nope'" in "\n".join(proc.stderr)
        (project.root / "pkg" / "app.py").write_text(TARGET_APP + "\nnope = plain\n")
        assert (await lines.next("READY"))[2] == "plain"


# -- aioreload reload ------------------------------------------------------------------------


async def reload_command(cwd: Path, env: dict[str, str]) -> tuple[int, str]:
    with anyio.fail_after(15):
        done = await anyio.run_process(
            [sys.executable, "-m", "aioreload", "reload"],
            cwd=cwd,
            env={**env, "XDG_RUNTIME_DIR": os.environ["XDG_RUNTIME_DIR"]},
            check=False,
        )
    errors = done.stderr.decode().strip()
    assert len(errors.splitlines()) == 1, errors
    return done.returncode, errors


def control_folder(runtime_dir: Path) -> Path:
    return runtime_dir / f"aioreload-{os.getuid()}"


@pytest.mark.slow
async def test_cli_reload_from_another_process(project: Project, lines: Lines, runtime_dir: Path) -> None:
    subfolder = project.root / "sub"
    subfolder.mkdir()
    async with cli(project, "--", *child("ready_wait")) as proc:
        first = await lines.next("READY")
        await proc.status("started")
        code, said = await reload_command(subfolder, project.env)  # found from a folder below too
        second = await lines.next("READY")
        assert code == 0
        assert said == f"aioreload: reloaded {project.root} [pid {second[1]}]"
        await seen(lines, "CLEANED", first[1])
        assert "reload requested" in await proc.status("reload requested")
        folder = control_folder(runtime_dir)
        assert oct(folder.stat().st_mode & 0o777) == "0o700"
        sockets = list(folder.iterdir())
        assert [oct(path.stat().st_mode & 0o777) for path in sockets] == ["0o600"]
        proc.process.send_signal(signal.SIGTERM)
        assert await proc.exit_code() == 0
    assert list(folder.iterdir()) == []  # removed on exit


@pytest.mark.slow
async def test_cli_reload_with_no_supervisor_says_so(project: Project, runtime_dir: Path) -> None:
    assert await reload_command(project.root, project.env) == (
        1,
        f"aioreload: no aioreload is running in {project.root}",
    )
    control_folder(runtime_dir).mkdir(mode=0o700)
    code, said = await reload_command(project.root, project.env)
    assert code == 1
    assert "no aioreload is running" in said


@pytest.mark.slow
async def test_cli_reload_replaces_a_stale_socket(project: Project, lines: Lines, runtime_dir: Path) -> None:
    control_folder(runtime_dir).mkdir(mode=0o700)
    stale = str(control_folder(runtime_dir) / f"{_control_hash(project.root)}.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(stale)  # left behind, as by a supervisor killed with SIGKILL
    os.chmod(stale, 0o600)
    assert await reload_command(project.root, project.env) == (
        1,
        f"aioreload: no aioreload is running in {project.root} or a folder above it",
    )
    async with cli(project, "--", *child("ready_wait")) as proc:
        await lines.next("READY")
        await proc.status("started")
        code, _ = await reload_command(project.root, project.env)
        assert code == 0
        await lines.next("READY")


def _control_hash(folder: Path) -> str:
    import hashlib

    return hashlib.sha256(os.fsencode(os.path.realpath(folder))).hexdigest()[:16]


def _other_owner(path: Path) -> None:
    os.chown(path, 65534, 65534)


root_only = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give a file to another user")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("spoil", "needle"),
    [
        pytest.param(lambda folder, sock: os.chmod(sock, 0o666), "mode 0666, wanted 0600", id="socket-mode"),
        pytest.param(
            lambda folder, sock: os.chmod(folder, 0o750), "mode 0750, wanted 0700", id="folder-mode"
        ),
        pytest.param(
            lambda folder, sock: _other_owner(sock), "owned by uid 65534", id="socket-owner", marks=root_only
        ),
        pytest.param(
            lambda folder, sock: _other_owner(folder),
            "owned by uid 65534",
            id="folder-owner",
            marks=root_only,
        ),
    ],
)
async def test_cli_reload_refuses_a_socket_others_could_use(
    project: Project, lines: Lines, runtime_dir: Path, spoil: Callable[[Path, Path], None], needle: str
) -> None:
    async with cli(project, "--", *child("ready_wait")) as proc:
        await lines.next("READY")
        await proc.status("started")
        folder = control_folder(runtime_dir)
        [sock] = folder.iterdir()
        spoil(folder, sock)
        code, said = await reload_command(project.root, project.env)
        assert code == 2
        assert said.startswith("aioreload: error: ")
        assert needle in said
        assert "refusing to use it" in said
        assert lines.count("READY") == 1


@pytest.mark.slow
@root_only
async def test_cli_does_not_serve_in_a_folder_someone_else_owns(
    project: Project, lines: Lines, runtime_dir: Path
) -> None:
    folder = control_folder(runtime_dir)
    folder.mkdir(mode=0o700)
    _other_owner(folder)
    async with cli(project, "--", *child("ready_wait")) as proc:
        await lines.next("READY")
        line = await proc.status("`aioreload reload` is off")
        assert "owned by uid 65534" in line
        assert list(folder.iterdir()) == []


@pytest.mark.slow
async def test_cli_second_supervisor_in_a_folder_leaves_control_to_the_first(
    project: Project, lines: Lines
) -> None:
    async with cli(project, "--", *child("ready_wait")) as first:
        await lines.next("READY")
        await first.status("started")
        async with cli(project, "--", *child("ready_wait")) as second:
            await lines.next("READY")
            assert "another aioreload already serves" in await second.status("`aioreload reload` is off")


@pytest.mark.slow
@root_only
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SO_PEERCRED is Linux-only")
async def test_cli_control_socket_answers_its_owner_only(
    project: Project, lines: Lines, runtime_dir: Path
) -> None:
    python = shutil.which("python3", path="/usr/bin:/bin")
    if python is None:
        pytest.skip("no system python3 that another user could run")
    async with cli(project, "--", *child("ready_wait")) as proc:
        await lines.next("READY")
        await proc.status("started")
        folder = control_folder(runtime_dir)
        [sock] = folder.iterdir()
        for path in (runtime_dir, folder):  # let the other user reach the socket: only SO_PEERCRED is left
            os.chmod(path, 0o711)
        os.chmod(sock, 0o666)
        code = (
            "import socket, sys\n"
            "s = socket.socket(socket.AF_UNIX)\n"
            "s.connect(sys.argv[1])\n"
            "s.sendall(b'reload\\n')\n"
            "print(s.recv(200).decode())\n"
        )
        with anyio.fail_after(15):
            done = await anyio.run_process([python, "-c", code, str(sock)], user=65534, check=False)
        assert done.returncode == 0, done.stderr
        assert done.stdout.decode().strip() == "error refused: the request came from another user"
        assert lines.count("READY") == 1

"""What the command line accepts: numbers, signals, extensions, patterns, globs, the command.

Bad input is one line (``aioreload: error: ...``), exit 2, no traceback, and nothing started.
What is accepted is checked through the real command: each test writes once and reads the
first reload's status line, which must name the watched file alone (an ignored write, made
before it, would show as its own reload or as ``(+1)``).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import Lines, Project, child
from test_cli import Cli, cli

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("runtime_dir")]


def marker_command(project: Project) -> list[str]:
    """A command that leaves a file behind if it ever starts."""
    return ["--", sys.executable, "-c", f"open({str(project.root / 'started')!r}, 'w')"]


async def assert_refused(
    project: Project, args: list[str], needle: str, command: list[str] | None = None
) -> None:
    async with cli(project, *args, *(marker_command(project) if command is None else command)) as proc:
        code = await proc.exit_code()
    assert code == 2, proc.stderr
    assert len(proc.stderr) == 1, proc.stderr
    assert proc.stderr[0].startswith("aioreload: error: "), proc.stderr
    assert needle in proc.stderr[0], proc.stderr
    assert not (project.root / "started").exists()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["-d", "nan"], "--debounce must be a finite number of seconds >= 0, got nan"),
        (["-d", "inf"], "--debounce must be a finite number of seconds >= 0, got inf"),
        (["-s", "0"], "--stop-signal: 0 is not a signal that can stop a program here"),
        (["-s", "99999"], "--stop-signal: 99999 is not a signal that can stop a program here"),
        (["-s", "-15"], "--stop-signal: -15 is not a signal"),
        (["-s", "STOP"], "is not a signal that can stop a program here"),
        (["-s", "NOPE"], "--stop-signal: unknown signal 'NOPE'"),
        (["-t", "nan"], "--stop-timeout must be a finite number of seconds >= 0, got nan"),
        (["-t", "-1"], "--stop-timeout must be >= 0 seconds, got -1"),
        (["--crash-backoff", "nan"], "--crash-backoff must be a finite number of seconds >= 0, got nan"),
        (["--crash-backoff-max", "inf"], "--crash-backoff-max must be a finite number"),
    ],
)
async def test_bad_numbers_and_signals(project: Project, args: list[str], needle: str) -> None:
    await assert_refused(project, args, needle)


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        ("*.py", "extension '*.py' cannot match a file suffix"),
        ("", "extension '' cannot match a file suffix"),
        (".", "extension '.' cannot match a file suffix"),
        ("js,", "extension '' (in 'js,') cannot match a file suffix"),
        ("js,*.coffee", "extension '*.coffee' (in 'js,*.coffee')"),
        ("src/py", "extension 'src/py' cannot match a file suffix"),
    ],
)
async def test_bad_extensions(project: Project, value: str, needle: str) -> None:
    await assert_refused(project, ["-e", value], needle)


async def test_bad_watch_globs_and_ignore_patterns(project: Project, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (project.root / "app.py").write_text("")
    cases = [
        (["-w", "missing/*.toml"], "watch glob 'missing/*.toml': its folder 'missing' does not exist"),
        (["-w", "app.py/*.toml"], "its folder 'app.py' is not a folder"),
        (["-i", str(outside)], f"ignore pattern '{outside}' is an absolute path outside every watch root"),
        (["-i", "../x"], "climbs out of the watch root"),
        (["-i", ""], "ignore pattern '' is empty"),
    ]
    for args, needle in cases:
        await assert_refused(project, args, needle)


@pytest.mark.parametrize("explicit", [True, False])
async def test_an_empty_command_says_so(project: Project, explicit: bool) -> None:
    await assert_refused(
        project, [], "empty command: the program name is ''", ["--", ""] if explicit else [""]
    )


def test_reload_timeout_is_checked() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "aioreload", "reload", "-t", "nan"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 2
    assert out.stderr.splitlines() == [
        "aioreload: error: --timeout must be a finite number of seconds > 0, got nan"
    ]


def test_help_tells_the_dialect_the_spellings_and_the_default_ignores() -> None:
    helped = subprocess.run(
        [sys.executable, "-m", "aioreload", "--help"], capture_output=True, text=True, check=True
    ).stdout
    flat = " ".join(helped.split())
    for words in (
        ".gitignore's dialect",
        "**/logs/*",
        "an absolute path under a watch root",
        "js,coffee",
        "glob (conf/*.toml)",
        ".hypothesis",
        "JetBrains",
        "Emacs",
        "*.sqlite3",
        "*.db",
        "-journal, -wal and -shm",
        "*.log",
    ):
        assert words in flat, words


# -- what is accepted, through the real command ---------------------------------------------


async def first_reload(proc: Cli, lines: Lines, *paths: Path) -> str:
    """Once the child is up, write each path once, in order; the first reload's status line."""
    await lines.next("READY")
    for path in paths:
        path.write_text("x")
    await lines.next("READY")
    return await proc.status("started in")


def assert_only_change(proc: Cli, line: str, name: str) -> None:
    assert f"changed {name} ·" in line, proc.stderr
    assert [other for other in proc.stderr if "changed " in other] == [line], proc.stderr


def folders(project: Project, *names: str) -> None:
    for name in names:  # made before aioreload starts: a new folder is a change of its own
        (project.root / name).mkdir(parents=True)


async def test_extensions_split_on_commas(project: Project, lines: Lines) -> None:
    async with cli(project, "-e", "js,coffee", "-e", ".py", "--", *child("ready_wait")) as proc:
        root = project.root
        line = await first_reload(proc, lines, root / "a.txt", root / "a.json", root / "b.coffee")
        assert_only_change(proc, line, "b.coffee")


async def test_ignore_an_absolute_folder_and_double_star(project: Project, lines: Lines) -> None:
    folders(project, "logs", "x/cache", "cache", "src")
    root = project.root
    args = ["-i", str(root / "logs"), "-i", "**/cache/*", "-i", "src"]
    async with cli(project, *args, "--", *child("ready_wait")) as proc:
        ignored = [
            root / "logs" / "a.txt",
            root / "x" / "cache" / "b.txt",
            root / "cache" / "c",
            root / "src" / "d.py",
        ]
        line = await first_reload(proc, lines, *ignored, root / "e.txt")
        assert_only_change(proc, line, "e.txt")


async def test_watch_a_glob(project: Project, lines: Lines) -> None:
    folders(project, "conf/sub")
    root = project.root
    async with cli(project, "-w", "conf/*.toml", "--", *child("ready_wait")) as proc:
        assert "watching conf/*.toml" in await proc.status("started")
        others = [root / "conf" / "a.py", root / "conf" / "sub" / "b.toml", root / "top.toml"]
        line = await first_reload(proc, lines, *others, root / "conf" / "c.toml")
        assert_only_change(proc, line, "conf/c.toml")


async def test_an_app_writing_its_database_and_logs_does_not_reload_itself(
    project: Project, lines: Lines
) -> None:
    # What `python manage.py runserver --noreload` does on every start and request: SQLite
    # (database, journal, WAL, shared memory) and a log file, inside the watched project.
    writes = "db.sqlite3 db.sqlite3-journal db.sqlite3-wal db.sqlite3-shm cache.db server.log flycheck_app.py"
    script = f'for f in {writes}; do printf x >> "$f"; done; exec "$@"'
    async with cli(project, "--", "/bin/sh", "-c", script, "sh", *child("ready_wait")) as proc:
        line = await first_reload(proc, lines, project.root / "app.py")
        assert_only_change(proc, line, "app.py")
        assert (project.root / "db.sqlite3").read_text() == "xx"  # the new child wrote it again

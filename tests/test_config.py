"""[tool.aioreload] in pyproject.toml: loading, checking, precedence, and the TOML readers."""

from __future__ import annotations

import importlib
import signal
import sys
from pathlib import Path

import anyio
import pytest
import tomli
from conftest import Lines, Project, child
from test_cli import cli, restart_after_writing, seen

from aioreload import ConfigError, _config
from aioreload._config import load_config

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("runtime_dir")]

FULL = """\
[project]
name = "demo"
dependencies = [
    "anyio",  # a comment
    "[tool.aioreload] in a string is not a header",
]
released = 1979-05-27T07:32:00Z
authors = [{ name = "someone", email = "x@example.invalid" }]

[ tool . aioreload ]  # spaces are fine
watch = ["src", 'lib',
    "conf/*.toml",  # trailing comma next
]
ignore = \"\"\"*.log\"\"\"
stop-timeout = 3
stop_signal = "SIGTERM"
debounce = 0.25
crash-backoff = 1_000
crash_backoff_max = 1e3
"restart-on-crash" = true
poll = false
ext = ["py", "toml,cfg"]

[tool.other]
key = '''
[tool.aioreload]
'''
"""


def test_the_hand_written_310_reader_is_gone() -> None:
    assert not hasattr(_config, "read_table_subset")
    assert not hasattr(_config, "_Reader")


def test_tomli_is_the_310_reader() -> None:
    pyproject = tomli.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    assert "tomli>=2; python_version < '3.11'" in pyproject["project"]["dependencies"]


@pytest.mark.parametrize("reader", ["tomllib", "tomli"])
def test_load_reads_any_toml_with_either_reader(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reader: str
) -> None:
    if reader == "tomllib" and sys.version_info < (3, 11):
        pytest.skip("tomllib is Python 3.11+")
    monkeypatch.setattr(_config, "_toml", lambda: importlib.import_module(reader))
    (tmp_path / "pyproject.toml").write_text(FULL)
    settings, _ = load_config(tmp_path)
    assert settings == {
        "watch": [str(tmp_path / "src"), str(tmp_path / "lib"), str(tmp_path / "conf" / "*.toml")],
        "ignore": ["*.log"],
        "stop_timeout": 3.0,
        "stop_signal": signal.SIGTERM,
        "debounce": 0.25,
        "crash_backoff": 1000.0,
        "crash_backoff_max": 1000.0,
        "restart_on_crash": True,
        "poll": False,
        "ext": [".py", ".toml", ".cfg"],
    }
    (tmp_path / "pyproject.toml").write_text("[tool.aioreload\nwatch = 1\n")
    with pytest.raises(ConfigError, match=r"^pyproject.toml: invalid TOML: "):
        load_config(tmp_path)


def write(folder: Path, table: str) -> None:
    (folder / "pyproject.toml").write_text(f'[project]\nname = "demo"\n\n[tool.aioreload]\n{table}\n')


def test_load_checks_and_converts(tmp_path: Path) -> None:
    write(tmp_path, 'watch = "src"\nstop-signal = "term"\nstop_timeout = 2\nclear = true')
    sub = tmp_path / "sub"
    sub.mkdir()
    settings, path = load_config(sub)  # walks up
    assert path == tmp_path / "pyproject.toml"
    assert settings == {
        "watch": [str(tmp_path / "src")],
        "stop_signal": signal.SIGTERM,
        "stop_timeout": 2.0,
        "clear": True,
    }
    (sub / "pyproject.toml").write_text('[project]\nname = "inner"\n')
    assert load_config(sub) == ({}, sub / "pyproject.toml")  # the nearest file, even without the table


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ("stop_timout = 3", "unknown key 'stop_timout' (known: "),
        ('stop-timeout = "3"', "stop-timeout must be a number of seconds >= 0, got '3'"),
        ("debounce = -1", "debounce must be >= 0 seconds, got -1"),
        ("debounce = nan", "debounce must be a finite number of seconds >= 0, got nan"),
        ("debounce = inf", "debounce must be a finite number of seconds >= 0, got inf"),
        ("stop-timeout = nan", "stop-timeout must be a finite number of seconds >= 0, got nan"),
        ("crash-backoff = nan", "crash-backoff must be a finite number of seconds >= 0, got nan"),
        ("crash_backoff_max = -inf", "crash_backoff_max must be a finite number of seconds >= 0"),
        ("stop-signal = 0", "stop-signal: 0 is not a signal that can stop a program here"),
        ("stop-signal = 99999", "stop-signal: 99999 is not a signal that can stop a program here"),
        ('stop-signal = "SIGSTOP"', "is not a signal that can stop a program here"),
        ('ext = "*.py"', "extension '*.py' cannot match a file suffix"),
        ('ext = [""]', "extension '' cannot match a file suffix"),
        ("poll = 1", "poll must be true or false, got 1"),
        ("restart_on_crash = true\nrestart-on-crash = true", "'restart-on-crash' is given twice"),
        ("watch = [1]", "watch must be a string or a list of strings, got [1]"),
        ('stop-signal = "SIGNOPE"', "stop-signal: unknown signal 'SIGNOPE'"),
        ("stop-signal = true", "stop-signal must be a signal name or number, got True"),
        ("quiet = true\nverbose = true", "quiet and verbose cannot both be true"),
        ("[tool.aioreload.more]", "unknown key 'more'"),
    ],
)
async def test_cli_bad_configuration_is_one_line_exit_2(project: Project, table: str, message: str) -> None:
    write(project.root, table)
    marker = project.root / "started"
    async with cli(project, "--", sys.executable, "-c", f"open({str(marker)!r}, 'w')") as proc:
        assert await proc.exit_code() == 2
    assert len(proc.stderr) == 1, proc.stderr
    assert proc.stderr[0].startswith("aioreload: error: pyproject.toml: ")
    assert message in proc.stderr[0]
    assert not marker.exists()  # checked before anything started


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('watch = ["missing/*.toml"]', "watch glob"),
        ('ignore = ["/{outside}"]', "outside every watch root"),
    ],
)
async def test_cli_bad_patterns_in_the_file_are_one_line_exit_2(
    project: Project, tmp_path: Path, table: str, message: str
) -> None:
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    write(project.root, table.replace("/{outside}", str(outside)))
    async with cli(project, "--", "true") as proc:
        assert await proc.exit_code() == 2
    assert len(proc.stderr) == 1, proc.stderr
    assert message in proc.stderr[0]


async def test_cli_invalid_toml_is_one_line_exit_2(project: Project) -> None:
    (project.root / "pyproject.toml").write_text("[tool.aioreload\nwatch = 1\n")
    async with cli(project, "--", "true") as proc:
        assert await proc.exit_code() == 2
    assert len(proc.stderr) == 1, proc.stderr
    assert proc.stderr[0].startswith("aioreload: error: pyproject.toml: ")


async def test_cli_reads_the_file_and_flags_win(project: Project, lines: Lines) -> None:
    (project.root / "src").mkdir()
    (project.root / "other").mkdir()
    write(
        project.root,
        'watch = ["src"]\nignore = ["*.log"]\next = "py"\nstop-timeout = 3\nrestart_on_crash = true\n'
        'gitignore = false\ncrash-backoff = 2\nquiet = true\nstop-signal = "SIGTERM"',
    )
    async with cli(project, "-v", "--", "true") as proc:
        settings = await proc.status("settings (")
    assert f"{project.root / 'pyproject.toml'} and flags" in settings
    for word in (f"watch={project.root / 'src'}", "ignore=*.log", "ext=.py", "stop-timeout=3", "quiet=off"):
        assert f" {word} " in settings
    for word in ("restart-on-crash=on", "gitignore=off", "crash-backoff=2", "stop-signal=SIGTERM"):
        assert f" {word} " in settings
    flags = ["-v", "-w", "other", "-t", "7", "--no-restart-on-crash", "--gitignore", "-s", "INT", "-e", "txt"]
    async with cli(project, *flags, "--", "true") as proc:
        settings = await proc.status("settings (")
    for word in ("watch=other", "stop-timeout=7", "restart-on-crash=off", "gitignore=on"):
        assert f" {word} " in settings
    assert " stop-signal=SIGINT " in settings
    assert " ext=.txt " in settings
    assert " ignore=*.log " in settings  # not given on the command line: the file's


async def test_cli_finds_the_file_above_and_watches_relative_to_it(project: Project, lines: Lines) -> None:
    (project.root / "src").mkdir()
    (project.root / "deep" / "er").mkdir(parents=True)
    write(project.root, 'watch = ["src"]\ndebounce = 0.02')
    async with cli(project, "--", *child("ready_wait"), cwd=project.root / "deep" / "er") as proc:
        assert "watching ../../src (0 files)" in await proc.status("started")
        line = await restart_after_writing(proc, lines, project.root / "src" / "a.py")
        assert "changed ../../src/a.py" in line


async def test_cli_uses_the_stop_signal_from_the_file(project: Project, lines: Lines) -> None:
    write(project.root, 'stop-signal = "SIGTERM"\nstop-timeout = 0.2')
    async with cli(project, "--", *child("ignore_stop")) as proc:
        first = await lines.next("READY")
        proc.process.send_signal(signal.SIGHUP)
        await seen(lines, "GOT-SIGTERM", first[1])
        await lines.next("READY")
        assert "(SIGTERM ignored)" in await proc.status("killed after")


async def test_cli_quiet_from_the_file(project: Project, lines: Lines) -> None:
    write(project.root, "quiet = true")
    async with cli(project, "--", *child("exit_code", "5")) as proc:
        await lines.next("READY")
        with anyio.fail_after(10):
            await proc.status("exited with code 5")
    assert not [line for line in proc.stderr if "started" in line]

"""[tool.aioreload] in pyproject.toml: loading, checking, precedence, and the Python 3.10 reader."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import anyio
import pytest
from conftest import Lines, Project, child
from test_cli import cli, restart_after_writing, runtime_dir, seen  # noqa: F401 (runtime_dir: autouse fixture)

from aioreload import ConfigError
from aioreload._config import load_config, read_table_subset

pytestmark = pytest.mark.anyio

FULL = """\
[project]
name = "demo"
dependencies = [
    "anyio",  # a comment
    "[tool.aioreload] in a string is not a header",
]

[ tool . aioreload ]  # spaces are fine
watch = ["src", 'lib',
    "conf/settings.toml",  # trailing comma next
]
ignore = "*.log"
stop-timeout = 3
stop_signal = "SIGTERM"
debounce = 0.25
crash-backoff = 1_000
crash_backoff_max = 1e3
"restart-on-crash" = true
poll = false
ext = ["py", "toml"]
escaped = "tab\\tquote\\"\\u00e9"
signed = -0.5
plus = +1

[tool.other]
key = '''
[tool.aioreload]
'''
"""


def test_the_310_reader_agrees_with_tomllib() -> None:
    assert read_table_subset("[tool.aioreload]") == {}
    assert read_table_subset('[project]\nname = "x"\n') is None
    if sys.version_info >= (3, 11):
        import tomllib

        assert read_table_subset(FULL) == tomllib.loads(FULL)["tool"]["aioreload"]
    else:
        pytest.skip("tomllib is needed to compare")


@pytest.mark.parametrize(
    ("table", "line", "what"),
    [
        ('x = """\nmulti\n"""', 2, "multi-line strings"),
        ("x = {a = 1}", 2, "unsupported value"),
        ("a.b = 1", 2, "dotted keys"),
        ("when = 1979-05-27", 2, "unsupported value"),
        ('x = [["a"]]', 2, "nested arrays"),
        ("x 1", 2, "expected '='"),
        ("x = 1 2", 2, "unexpected text"),
        ("x = 1\nx = 2", 3, "'x' is defined twice"),
        ('x = ["a" "b"]', 2, "expected ','"),
        ("x = [\n  1,\n  {}]", 4, "unsupported value"),
    ],
)
def test_the_310_reader_names_the_line_it_cannot_read(table: str, line: int, what: str) -> None:
    with pytest.raises(ConfigError, match=rf"^line {line}: {what}.*Python 3\.11\+"):
        read_table_subset(f"[tool.aioreload]\n{table}\n")


def test_the_310_reader_refuses_sub_tables() -> None:
    with pytest.raises(ConfigError, match="line 3: sub-tables"):
        read_table_subset('[tool.aioreload]\nwatch = "."\n[tool.aioreload.extra]\n')


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
        ("debounce = -1", "debounce must be a number of seconds >= 0, got -1"),
        ("poll = 1", "poll must be true or false, got 1"),
        ("restart_on_crash = true\nrestart-on-crash = true", "'restart-on-crash' is given twice"),
        ("watch = [1]", "watch must be a string or a list of strings, got [1]"),
        ('stop-signal = "SIGNOPE"', "stop-signal: unknown signal 'SIGNOPE'"),
        ("stop-signal = true", "stop-signal must be a signal name or number, got True"),
        ("quiet = true\nverbose = true", "quiet and verbose cannot both be true"),
        pytest.param(
            "[tool.aioreload.more]",
            "unknown key 'more'" if sys.version_info >= (3, 11) else "sub-tables of [tool.aioreload]",
            id="sub-table",
        ),
    ],
)
async def test_cli_bad_configuration_is_one_line_exit_2(project: Project, table: str, message: str) -> None:
    write(project.root, table)
    async with cli(project, "--", "true") as proc:
        assert await proc.exit_code() == 2
    assert len(proc.stderr) == 1, proc.stderr
    assert proc.stderr[0].startswith("aioreload: error: pyproject.toml: ")
    assert message in proc.stderr[0]


@pytest.mark.skipif(sys.version_info < (3, 11), reason="Python 3.10 reads [tool.aioreload] alone")
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
    for word in (f"watch={project.root / 'src'}", "ignore=*.log", "ext=py", "stop-timeout=3", "quiet=off"):
        assert f" {word} " in settings
    for word in ("restart-on-crash=on", "gitignore=off", "crash-backoff=2", "stop-signal=SIGTERM"):
        assert f" {word} " in settings
    flags = ["-v", "-w", "other", "-t", "7", "--no-restart-on-crash", "--gitignore", "-s", "INT", "-e", "txt"]
    async with cli(project, *flags, "--", "true") as proc:
        settings = await proc.status("settings (")
    for word in ("watch=other", "stop-timeout=7", "restart-on-crash=off", "gitignore=on"):
        assert f" {word} " in settings
    assert " stop-signal=SIGINT " in settings
    assert " ext=txt " in settings
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

"""The ``aioreload`` command. The only place that exits, logs to the console or installs handlers."""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import socket
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from . import __version__, _validate
from ._config import OPTIONS, Options, load_config, resolve
from ._filter import PathFilter, split_watch
from ._sdnotify import SystemdNotifier
from ._sockets import inherited
from ._target import TARGET, find_module
from ._types import ConfigError

if TYPE_CHECKING:
    from ._foreground import Status

__all__ = ["main"]

USAGE = """\
aioreload [OPTIONS] -- COMMAND [ARGS...]
       aioreload [OPTIONS] MODULE:FUNCTION [ARGS...]
       aioreload [OPTIONS] serve MODULE:APP
       aioreload reload"""

DESCRIPTION = """\
Run COMMAND and restart it whenever a watched file changes. With MODULE:FUNCTION, run that
Python function (from the current folder or sys.path) as aioreload.run() would, and also
restart when a module it imported changes. `serve MODULE:APP` serves an ASGI app with uvicorn
on a socket aioreload holds (default 127.0.0.1:8000), with reloads that refuse no request.
`aioreload reload`, from another terminal, restarts the program of the aioreload running in
this folder."""

EPILOG = """\
examples:
  aioreload -- python bot.py             restart bot.py when a file under . changes
  aioreload -w src -e py -- python -m app
  aioreload app.main:serve --port 8000   run app/main.py's serve() with sys.argv[1:] = --port 8000
  aioreload -r -- python worker.py       also restart the worker when it crashes
  aioreload serve app:app                serve app.py's ASGI app on 127.0.0.1:8000 (needs uvicorn)
  aioreload --socket :8000 -- python -m uvicorn --fd 3 app:app
                                         hold port 8000, hand it to uvicorn as descriptor 3
  aioreload -s SIGTERM -t 10 -- uvicorn app:app
  aioreload reload                       (another terminal) restart the program now

configuration: [tool.aioreload] in the nearest pyproject.toml, with the long option names:
  watch = ["src"], stop-timeout = 3, restart-on-crash = true ... Flags win over the file.

patterns (-i, -w globs) use .gitignore's dialect: `*.log` and `build` match a name at any
depth (a folder with everything in it), `docs/*.html`, `**/logs/*` and `./build` are anchored
at the watch root, an absolute path under a watch root works too; `!name` re-includes.

ignored by default: .git, __pycache__, .venv, venv, node_modules, tool caches (.mypy_cache,
.pytest_cache, .ruff_cache, .hypothesis, .tox, .nox), editor swap, backup and temporary
files (vim, Emacs, JetBrains), *.pyc, SQLite databases (*.sqlite, *.sqlite3, *.db) and their
-journal, -wal and -shm files, *.log, and whatever .gitignore files ignore (unless
--no-gitignore).

held sockets (--socket, repeatable): HOST:PORT, [IPv6]:PORT, :PORT or unix:PATH, bound once
and handed to every child as descriptors 3, 4, ... with LISTEN_FDS, LISTEN_PID and
LISTEN_FDNAMES (systemd's socket activation). Started by socket activation itself, aioreload
hands on the sockets it was given instead. While no child accepts, connections wait.

warm spare: for a Python program (python script.py, python -m module, a console script whose
#! names Python, MODULE:FUNCTION, serve), a fresh interpreter waits with the libraries the
program imported (standard library and installed packages only, never your project) and becomes
the next child in milliseconds. Thrown away when any file it loaded, the installed packages or
the interpreter changed. --no-spare to start every child cold; -v says what was preloaded.

overlap: with held sockets, a child that reports readiness (aioreload.ready(), or READY=1 on
the NOTIFY_SOCKET each child gets) is replaced blue-green: the new one starts while the old
one serves, and the old one is stopped once the new one is ready. A new child that exits or
is not ready within --ready-timeout is stopped and the old one keeps serving. --no-overlap
for programs that must never run twice at once (a bot polling one account).

signals: SIGINT/SIGTERM stop the child gracefully and exit; a second SIGINT kills it at once;
SIGHUP reloads.

exit codes:
  N    the child's own code when aioreload is stopped (128+N when it died of signal N),
       or the code a MODULE:FUNCTION program finished with
  1    internal error; for `aioreload reload`: no aioreload runs here, or it could not reload
  2    bad usage or configuration; for `aioreload reload`: the control socket is not private
  126  the command cannot be executed
  127  the command was not found
"""


class _Parser(argparse.ArgumentParser):
    """Errors in one line, as every other aioreload error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"aioreload: error: {message} (see {self.prog} --help)\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="aioreload",
        usage=USAGE,
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = parser.add_argument
    on_off = argparse.BooleanOptionalAction
    add(
        "-w",
        "--watch",
        action="append",
        metavar="PATH",
        help="folder, file or glob (conf/*.toml) to watch (repeatable; default: .)",
    )
    add(
        "--no-watch",
        action="store_true",
        help="watch nothing: reload only on SIGHUP, `aioreload reload` or the child's request (production)",
    )
    add(
        "-i",
        "--ignore",
        action="append",
        metavar="PATTERN",
        help="ignore paths matching PATTERN, .gitignore-style (repeatable)",
    )
    add(
        "-e",
        "--ext",
        action="append",
        metavar="EXT",
        help="only watch files with these extensions: py, .py or js,coffee (repeatable)",
    )
    add("--gitignore", action=on_off, help="ignore what .gitignore files ignore (default: on)")
    add("-s", "--stop-signal", metavar="SIG", help="signal that stops the child (default: SIGINT)")
    add(
        "-t",
        "--stop-timeout",
        type=float,
        metavar="SEC",
        help="seconds before the child is killed (default: 5)",
    )
    add("-d", "--debounce", type=float, metavar="SEC", help="quiet period before reloading (default: 0.02)")
    add("-r", "--restart-on-crash", action=on_off, help="restart the child when it exits with an error")
    add(
        "--crash-backoff", type=float, metavar="SEC", help="first delay before a crash restart (default: 0.5)"
    )
    add(
        "--crash-backoff-max",
        type=float,
        metavar="SEC",
        help="longest delay, doubling per crash (default: 30)",
    )
    add("--poll", action=on_off, help="poll for changes instead of using OS notifications")
    add(
        "--socket",
        action="append",
        metavar="ADDR",
        help="hold a listening socket for the child: HOST:PORT, [IPv6]:PORT, :PORT, unix:PATH (repeatable)",
    )
    add("--overlap", action=on_off, help="start the new child before stopping the old one (default: on)")
    add("--spare", action=on_off, help="keep a warm spare interpreter for Python programs (default: on)")
    add(
        "--spare-exclude",
        action="append",
        metavar="MODULE",
        help="a module the spare must not import early (repeatable)",
    )
    add(
        "--ready-timeout",
        type=float,
        metavar="SEC",
        help="how long an overlapping reload waits for the new child to be ready (default: 30)",
    )
    add("--clear", action=on_off, help="clear the terminal before each restart")
    loudness = parser.add_mutually_exclusive_group()
    loudness.add_argument("-q", "--quiet", action="store_true", default=None, help="print only errors")
    loudness.add_argument("-v", "--verbose", action="store_true", default=None, help="print debug details")
    add("-V", "--version", action="version", version=f"aioreload {__version__}")
    add("command", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    return parser


def _reload_command(argv: Sequence[str]) -> int:
    """``aioreload reload``: ask the supervisor of this folder to reload."""
    from ._control import ControlError, UnsafeError, request_reload

    parser = _Parser(
        prog="aioreload reload",
        description="Restart the program of the aioreload running in this folder (or the closest "
        "folder above it), and wait until the new one has started.",
        epilog="exit codes: 0 reloaded; 1 no aioreload runs here, or it could not reload; "
        "2 bad usage, or the control folder or socket is not private (refused).",
    )
    parser.add_argument("-t", "--timeout", type=float, default=30.0, metavar="SEC", help="default: 30")
    parser.add_argument("-q", "--quiet", action="store_true", help="print only errors")
    args = parser.parse_args(argv)
    try:
        timeout = _validate.seconds("--timeout", args.timeout, positive=True)
    except ConfigError as exc:
        print(f"aioreload: error: {exc}", file=sys.stderr)
        return 2
    try:
        folder, pid = request_reload(Path.cwd(), timeout=timeout)
    except UnsafeError as exc:
        print(f"aioreload: error: {exc}", file=sys.stderr)
        return 2
    except ControlError as exc:
        print(f"aioreload: {exc}", file=sys.stderr)
        return 1
    if not args.quiet:
        print(f"aioreload: reloaded {folder} [pid {pid}]", file=sys.stderr)
    return 0


def _describe(watch: Sequence[str]) -> str:
    """What the first status line says is watched: one path as given, or how many."""
    if len(watch) != 1:
        return f"{len(watch)} paths"
    relative = os.path.relpath(watch[0])
    return watch[0] if relative.startswith(("../../..", "..\\..\\..")) else relative


async def _supervise(
    options: Options,
    command: list[str],
    status: Status,
    target: bool,
    roots: list[Path],
    keep: PathFilter,
    sockets: Sequence[str | socket.socket],
    notifier: SystemdNotifier,
) -> int:
    from ._foreground import count_files, run_in_foreground
    from ._supervisor import Supervisor

    supervisor = Supervisor(
        command,
        sockets=sockets,
        overlap=options.overlap,
        spare=options.spare,
        spare_exclude=options.spare_exclude,
        _prepare=target,
        watch=options.watch,
        ignore=options.ignore,
        extensions=options.ext,
        poll=options.poll,
        stop_signal=options.stop_signal,
        watch_imports=target and bool(options.watch),
        restart_on_crash=options.restart_on_crash,
        gitignore=options.gitignore,
        **options.durations(),  # the others keep the Supervisor's defaults (the help quotes them)
    )

    def count(stop: threading.Event) -> int:
        return count_files(roots, keep, stop)

    return await run_in_foreground(supervisor, status, control=os.getcwd(), count=count, notifier=notifier)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit code."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["reload"]:
        return _reload_command(args_list[1:])
    parser = _parser()
    args = parser.parse_args(args_list)
    command = list(args.command)
    explicit = command[:1] == ["--"]
    if explicit:
        command = command[1:]
    if not command:
        parser.error("no command given; usage: aioreload [OPTIONS] -- COMMAND [ARGS...]")
    serve = not explicit and command[0] == "serve"
    if serve and (len(command) != 2 or TARGET.fullmatch(command[1]) is None):
        parser.error("serve takes one ASGI app as MODULE:APP, such as: aioreload serve app:app")
    target = not explicit and (serve or TARGET.fullmatch(command[0]) is not None)
    try:
        _validate.command(command)
        settings, path = load_config(Path.cwd())
        options = resolve({name: getattr(args, name) for name in OPTIONS}, settings, path)
        if args.no_watch:
            options.watch = []
        # The watch roots and the filter the supervisor builds too (it resolves them the same
        # way): checked here, before anything starts, and used to count what is watched.
        roots, include = split_watch(options.watch, Path.cwd())
        keep = PathFilter(
            ignore=options.ignore,
            extensions=options.ext,
            roots=roots,
            gitignore=options.gitignore,
            include=include,
        )
    except ConfigError as exc:
        print(f"aioreload: error: {exc}", file=sys.stderr)
        return 2
    if target:
        name = command[-1] if serve else command[0]
        problem = find_module(name.partition(":")[0], os.getcwd())
        if problem is not None:
            print(f"aioreload: error: cannot run {name}: {problem}", file=sys.stderr)
            return 2
    if serve and importlib.util.find_spec("uvicorn") is None:
        print(
            "aioreload: error: serve needs uvicorn; install it with: pip install 'aioreload[serve]'",
            file=sys.stderr,
        )
        return 2
    # Started by systemd: speak its notify protocol (READY=1 after lifespan startup for serve).
    notifier = SystemdNotifier.from_environ(os.environ, wait_ready=serve)
    # Started by socket activation (systemd): hand on what we were given instead of binding.
    sockets: list[str | socket.socket] = [held.socket for held in inherited(os.environ)]
    if not sockets:
        sockets = list(options.socket) or (["127.0.0.1:8000"] if serve else [])
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("aioreload: %(levelname)s: %(message)s"))
    package_logger = logging.getLogger("aioreload")
    package_logger.addHandler(handler)
    level = logging.DEBUG if options.verbose else logging.ERROR if options.quiet else logging.WARNING
    package_logger.setLevel(level)

    import anyio

    from ._foreground import Status

    status = Status(
        command,
        sys.stderr,
        quiet=options.quiet,
        clear=options.clear,
        restart_on_crash=options.restart_on_crash,
        watching=_describe(options.watch) if options.watch else "",
        imports=target and bool(options.watch),
        verbose=bool(options.verbose),
    )
    if options.verbose:
        source = f"{options.config_file} and flags" if options.config_file else "flags"
        status.line(f"settings ({source}): {options.describe()}")
    if serve:
        child = [sys.executable, "-m", "aioreload._serve", command[1]]
    elif target:
        child = [sys.executable, "-m", "aioreload._target", *command]
    else:
        child = command
    try:
        return anyio.run(_supervise, options, child, status, target, roots, keep, sockets, notifier)
    except ConfigError as exc:
        status.line(f"error: {exc}", error=True)
        return 2
    except KeyboardInterrupt:
        return 130

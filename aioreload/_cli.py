"""The ``aioreload`` command. The only place that exits, logs to the console or installs handlers."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Sequence

import anyio

from . import __version__
from ._foreground import Status, run_in_foreground
from ._types import ConfigError

__all__ = ["main"]

EPILOG = """\
examples:
  aioreload -- python bot.py               restart bot.py when a file under . changes
  aioreload -w src -w config.toml -- python -m app
  aioreload --stop-signal SIGTERM -- uvicorn app:app

signals: SIGINT/SIGTERM stop the child gracefully and exit; a second SIGINT kills it at once;
SIGHUP reloads.

exit codes: the child's own code when it was stopped (128+N when it died of signal N),
1 internal error, 2 bad usage or configuration, 127 command not found.
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aioreload",
        usage="aioreload [OPTIONS] -- COMMAND [ARGS...]",
        description="Run COMMAND and restart it whenever watched files change.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "-w",
        "--watch",
        action="append",
        metavar="PATH",
        help="folder or file to watch (repeatable; default: .)",
    )
    parser.add_argument(
        "-i",
        "--ignore",
        action="append",
        default=[],
        metavar="GLOB",
        help="ignore paths matching GLOB (repeatable)",
    )
    parser.add_argument(
        "-e",
        "--ext",
        action="append",
        default=[],
        metavar="EXT",
        help="only watch files with this extension (repeatable)",
    )
    parser.add_argument(
        "-s",
        "--stop-signal",
        default=None,
        metavar="SIG",
        help="signal that stops the child (default: SIGINT)",
    )
    parser.add_argument(
        "-t",
        "--stop-timeout",
        type=float,
        default=5.0,
        metavar="SEC",
        help="seconds before the child is killed (default: 5)",
    )
    parser.add_argument(
        "-d",
        "--debounce",
        type=float,
        default=0.05,
        metavar="SEC",
        help="quiet period before reloading (default: 0.05)",
    )
    parser.add_argument(
        "--poll", action="store_true", help="poll for changes instead of using OS notifications"
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="print only errors")
    parser.add_argument("-v", "--verbose", action="store_true", help="print debug details")
    parser.add_argument("-V", "--version", action="version", version=f"aioreload {__version__}")
    parser.add_argument("command", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    return parser


def _parse_signal(parser: argparse.ArgumentParser, value: str | None) -> int | None:
    if value is None:
        return None
    name = value.upper()
    if name.isdigit():
        return int(name)
    if not name.startswith("SIG"):
        name = "SIG" + name
    try:
        return int(getattr(signal, name))
    except AttributeError:
        parser.error(f"unknown signal {value!r} (try SIGINT, SIGTERM or a number)")


async def _serve(args: argparse.Namespace, stop_signal: int | None, status: Status) -> int:
    from ._supervisor import Supervisor

    supervisor = Supervisor(
        args.command,
        watch=args.watch or ["."],
        ignore=args.ignore,
        extensions=args.ext,
        debounce=args.debounce,
        stop_signal=stop_signal,
        stop_timeout=args.stop_timeout,
    )
    return await run_in_foreground(supervisor, status)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        parser.error("no command given; usage: aioreload [OPTIONS] -- COMMAND [ARGS...]")
    args.command = command
    if args.stop_timeout < 0 or args.debounce < 0:
        parser.error("--stop-timeout and --debounce must be >= 0")
    stop_signal = _parse_signal(parser, args.stop_signal)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("aioreload: %(levelname)s: %(message)s"))
    package_logger = logging.getLogger("aioreload")
    package_logger.addHandler(handler)
    package_logger.setLevel(logging.DEBUG if args.verbose else logging.WARNING)
    status = Status(command, sys.stderr, quiet=args.quiet)
    try:
        return anyio.run(_serve, args, stop_signal, status)
    except ConfigError as exc:
        status.line(f"error: {exc}", error=True)
        return 2
    except KeyboardInterrupt:
        return 130

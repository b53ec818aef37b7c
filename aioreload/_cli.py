"""The ``aioreload`` command. The only place that exits, logs to the console or installs handlers."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Sequence
from typing import TextIO

import anyio

from . import __version__
from ._types import ConfigError, Event, EventKind, SpawnError

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


def _ms(seconds: float | None) -> str:
    return "?" if seconds is None else f"{seconds * 1000:.0f} ms"


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "exited"
    if code < 0:
        try:
            return f"died of {signal.Signals(-code).name}"
        except ValueError:
            return f"died of signal {-code}"
    return f"exited with code {code}"


class _Status:
    """Turns supervisor events into short human status lines on stderr."""

    def __init__(self, command: Sequence[str], stream: TextIO, quiet: bool) -> None:
        self.command = " ".join(command)
        self.stream = stream
        self.quiet = quiet
        self.parts: list[str] = []

    def line(self, text: str, *, error: bool = False) -> None:
        if self.quiet and not error:
            return
        print(f"aioreload: {text}", file=self.stream, flush=True)

    def on(self, event: Event) -> None:
        kind = event.kind
        if kind is EventKind.CHANGED:
            return
        if kind is EventKind.STOPPING:
            first = event.changes[0] if event.changes else None
            self.parts = [f"changed {os.path.relpath(first)}"] if first else []
        elif kind is EventKind.STOPPED:
            how = "killed" if event.killed else "stopped"
            self.parts.append(f"{how} in {_ms(event.elapsed)}")
        elif kind is EventKind.STARTED:
            lead = []
            if event.changes:
                more = len(event.changes) - 1
                lead = [f"changed {os.path.relpath(event.changes[0])}" + (f" (+{more})" if more else "")]
            elif event.reason is not None and event.reason.value != "start":
                lead = [f"{event.reason.value}"]
            stopped = [p for p in self.parts if not p.startswith("changed")]
            self.line(" · ".join([*lead, *stopped, f"started {self.command} [pid {event.pid}]"]))
            self.parts = []
        elif kind is EventKind.READY:
            self.line(f"ready in {_ms(event.elapsed)}")
        elif kind is EventKind.EXITED:
            self.line(
                f"{self.command} {_describe_exit(event.returncode)} · waiting for changes",
                error=event.returncode not in (0, None),
            )
        elif kind is EventKind.SKIPPED:
            self.line("reload cancelled by before_reload")
        elif kind is EventKind.SPAWN_FAILED:
            self.line(f"error: {event.message} · waiting for changes", error=True)


async def _serve(args: argparse.Namespace, stop_signal: int | None, status: _Status) -> int:
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
    received: list[int] = []
    code = 0
    body = anyio.CancelScope()
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, *_extra_signals()) as signals:
        events = supervisor.events()
        async with anyio.create_task_group() as tg:

            async def _report() -> None:
                with events:
                    async for event in events:
                        status.on(event)

            async def _signals() -> None:
                async for signum in signals:
                    if signum == getattr(signal, "SIGHUP", None):
                        if supervisor.state != "closed" and not received:
                            supervisor.request_reload()
                    elif received:
                        supervisor._kill_now()  # a second Ctrl+C: stop waiting
                    else:
                        received.append(signum)
                        body.cancel()

            tg.start_soon(_signals)
            tg.start_soon(_report)
            try:
                async with supervisor:
                    with body:
                        code = await supervisor.wait()
            except SpawnError as exc:
                status.line(f"error: {exc}", error=True)
                return 127 if isinstance(exc.__cause__, FileNotFoundError) else 126
            finally:
                tg.cancel_scope.cancel()
    if not received:
        return code
    last = supervisor.last_returncode
    if last is None:
        return 128 + received[0]
    return 128 - last if last < 0 else last


def _extra_signals() -> tuple[signal.Signals, ...]:
    return (signal.SIGHUP,) if sys.platform != "win32" else ()


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
    status = _Status(command, sys.stderr, args.quiet)
    try:
        return anyio.run(_serve, args, stop_signal, status)
    except ConfigError as exc:
        status.line(f"error: {exc}", error=True)
        return 2
    except KeyboardInterrupt:
        return 130

"""Checks shared by every way of configuring aioreload.

``Supervisor`` arguments, flags and ``[tool.aioreload]`` all pass through these, before
anything starts; each raises :class:`ConfigError` with one line naming the problem and the fix.
"""

from __future__ import annotations

import math
import signal
import socket
import sys
from collections.abc import Iterable

from ._sockets import Address
from ._sockets import parse as parse_address
from ._types import ConfigError

__all__ = ["command", "extensions", "seconds", "sockets", "stop_signal"]


def seconds(name: str, value: object, *, positive: bool = False) -> float:
    """``value`` as a finite number of seconds (``>= 0``, or ``> 0`` when ``positive``).

    Args:
        name: How the user spelled the setting (``--stop-timeout``, ``stop_timeout``...).
        value: The value given.
        positive: Refuse zero as well.

    Raises:
        ConfigError: not a number, not finite (``nan``, ``inf``), or out of range.
    """
    bound = "> 0" if positive else ">= 0"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{name} must be a number of seconds {bound}, got {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise ConfigError(f"{name} must be a finite number of seconds {bound}, got {number:g}")
    if number < 0 or (positive and number == 0):
        raise ConfigError(f"{name} must be {bound} seconds, got {number:g}")
    return number


def stop_signal(value: object) -> int:
    """A signal number or name (``15``, ``"SIGTERM"``, ``"term"``) as a number this OS knows.

    Raises:
        ConfigError: unknown name, or a number that is not a usable stop signal here.
    """
    if isinstance(value, bool):
        raise ConfigError(f"stop signal must be a signal name or number, got {value!r}")
    if isinstance(value, str):
        text = value.strip()
        if text.lstrip("-").isdigit():
            value = int(text)
        else:
            name = text.upper()
            name = name if name.startswith(("SIG", "CTRL_")) else f"SIG{name}"
            member = getattr(signal, name, None)
            if not text or not isinstance(member, int) or name.startswith("SIG_"):
                raise ConfigError(f"unknown signal {value!r} (try SIGINT, SIGTERM or a signal number)")
            value = int(member)
    if not isinstance(value, int):
        raise ConfigError(f"stop signal must be a signal name or number, got {value!r}")
    if value not in _usable():
        raise ConfigError(f"{value} is not a signal that can stop a program here (try SIGINT or SIGTERM)")
    return int(value)


def _usable() -> set[int]:
    if sys.platform == "win32":
        return {int(signal.CTRL_BREAK_EVENT), int(signal.CTRL_C_EVENT), int(signal.SIGTERM)}
    # SIGSTOP would freeze the child instead of stopping it. (SIGKILL is allowed: "stop hard".)
    return {int(number) for number in signal.valid_signals()} - {int(signal.SIGSTOP)}


def extensions(values: str | Iterable[str]) -> tuple[str, ...]:
    """File suffixes as given to ``-e``/``extensions``, each as ``.suffix``.

    ``py`` and ``.py`` are the same; a comma separates several (``js,coffee``, nodemon's
    spelling); spaces around each are dropped; duplicates are dropped.

    Raises:
        ConfigError: an item that cannot match the end of a file name: empty, only dots, or
            holding a wildcard (``*.py``) or a path separator.
    """
    found: list[str] = []
    for value in [values] if isinstance(values, str) else values:
        if not isinstance(value, str):
            raise ConfigError(f"an extension must be a string such as 'py', got {value!r}")
        for piece in value.split(","):
            bare = piece.strip()
            bare = bare[1:] if bare.startswith(".") else bare
            if not bare.strip(".") or any(char in bare for char in "*?[]/\\\0"):
                where = "" if piece == value else f" (in {value!r})"
                raise ConfigError(
                    f"extension {piece!r}{where} cannot match a file suffix; give suffixes such as "
                    "'py' or '.py', several as 'js,coffee'"
                )
            if f".{bare}" not in found:
                found.append(f".{bare}")
    return tuple(found)


def command(value: object) -> tuple[str, ...]:
    """The program and its arguments, checked: a non-empty list of strings, the first not empty.

    Raises:
        ConfigError: a string instead of a list, an empty list, a non-string item, or an empty
            program name (``aioreload -- ''``).
    """
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise ConfigError("command must be a list of strings, e.g. ['python', 'app.py']")
    items = tuple(value)
    if not items:
        raise ConfigError("no command given: name the program to run, e.g. ['python', 'app.py']")
    if not all(isinstance(item, str) for item in items):
        raise ConfigError("command must be a list of strings, e.g. ['python', 'app.py']")
    if not items[0]:
        raise ConfigError("empty command: the program name is '' (name the program to run)")
    return items


def sockets(values: Iterable[object]) -> tuple[Address | socket.socket, ...]:
    """Addresses to bind (parsed) and listening sockets to hand on, as given.

    Raises:
        ConfigError: a malformed address, something that is neither, or any on Windows.
    """
    if isinstance(values, (str, bytes)):
        raise ConfigError(f"sockets must be a list of addresses, got the string {values!r}; use [{values!r}]")
    out: list[Address | socket.socket] = []
    for value in values:
        if isinstance(value, socket.socket):
            out.append(value)
        elif isinstance(value, str):
            out.append(parse_address(value))
        else:
            raise ConfigError(
                f"a socket must be an address such as '127.0.0.1:8000' or a socket, got {value!r}"
            )
    if out and sys.platform == "win32":
        raise ConfigError("held sockets need a POSIX system (Linux, macOS); remove --socket on Windows")
    return tuple(out)

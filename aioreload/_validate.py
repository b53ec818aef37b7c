"""Checks shared by every way of configuring aioreload.

``Supervisor`` arguments, flags and ``[tool.aioreload]`` all pass through these; each raises
:class:`ConfigError` with one line naming the problem and the fix.
"""

from __future__ import annotations

import math
import signal
import sys

from ._types import ConfigError

__all__ = ["seconds", "stop_signal"]


def seconds(name: str, value: object, *, positive: bool = False) -> float:
    """``value`` as a finite number of seconds (``>= 0``, or ``> 0`` when ``positive``).

    Raises:
        ConfigError: not a number, not finite, or out of range.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{name} must be a number of seconds, got {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise ConfigError(f"{name} must be a finite number of seconds, got {value!r}")
    if number < 0 or (positive and number == 0):
        bound = "> 0" if positive else ">= 0"
        raise ConfigError(f"{name} must be {bound} seconds, got {value!r}")
    return number


def stop_signal(value: object) -> int:
    """A signal number or name (``15``, ``"SIGTERM"``, ``"term"``) as a number this OS knows.

    Raises:
        ConfigError: unknown name, or a number that is not a signal here.
    """
    if isinstance(value, bool):
        raise ConfigError(f"stop signal must be a signal name or number, got {value!r}")
    if isinstance(value, str):
        text = value.strip()
        if text.lstrip("-").isdigit():
            value = int(text)
        else:
            name = text.upper()
            name = name if name.startswith("SIG") or name.startswith("CTRL_") else f"SIG{name}"
            member = getattr(signal, name, None)
            if not isinstance(member, int):
                raise ConfigError(f"unknown stop signal {value!r} (use a name such as SIGTERM)")
            value = int(member)
    if not isinstance(value, int):
        raise ConfigError(f"stop signal must be a signal name or number, got {value!r}")
    valid = getattr(signal, "valid_signals", None)
    known = set(valid()) if valid is not None and sys.platform != "win32" else None
    if sys.platform == "win32":
        known = {int(signal.CTRL_BREAK_EVENT), int(signal.CTRL_C_EVENT), int(signal.SIGTERM)}
    if value not in (known or set()) or value in _UNCATCHABLE:
        raise ConfigError(f"stop signal {value} is not a usable stop signal here (try SIGTERM)")
    return int(value)


# SIGSTOP would freeze the child instead of stopping it. (SIGKILL is allowed: "stop hard".)
_UNCATCHABLE = {int(signal.SIGSTOP)} if hasattr(signal, "SIGSTOP") else set()

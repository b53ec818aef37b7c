"""The command line's options: names, defaults, validation and ``[tool.aioreload]``.

Precedence: command-line flags, then ``[tool.aioreload]`` in the nearest ``pyproject.toml``
(the current folder or the closest folder above it), then the defaults. A list given on the
command line replaces the list from the file. Keys use the long options' names, with dashes
or underscores: ``stop-timeout = 3`` or ``stop_timeout = 3``.

Numbers, signals and extensions from either place go through the same checks as the
``Supervisor``'s arguments (``_validate``), so a bad value is one line before anything starts.
The file is read with ``tomllib`` (Python 3.11+) or its backport ``tomli`` (3.10).
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import ModuleType
from typing import Any, TypedDict, final

from . import _validate
from ._types import ConfigError

__all__ = ["OPTIONS", "Durations", "Options", "find_pyproject", "load_config", "resolve"]

TABLE = "[tool.aioreload]"

# Each option's kind: how a value from the file is checked and converted.
OPTIONS: dict[str, str] = {
    "watch": "paths",
    "ignore": "strings",
    "ext": "strings",
    "gitignore": "bool",
    "stop_signal": "signal",
    "stop_timeout": "seconds",
    "debounce": "seconds",
    "restart_on_crash": "bool",
    "crash_backoff": "seconds",
    "crash_backoff_max": "seconds",
    "poll": "bool",
    "socket": "sockets",
    "overlap": "bool",
    "ready_timeout": "seconds",
    "spare": "bool",
    "spare_exclude": "strings",
    "clear": "bool",
    "quiet": "bool",
    "verbose": "bool",
}


class Durations(TypedDict, total=False):
    """The :class:`Supervisor` durations given by a flag or the file (seconds)."""

    stop_timeout: float
    debounce: float
    crash_backoff: float
    crash_backoff_max: float
    ready_timeout: float


@final
@dataclass
class Options:
    """Everything the command line can be told, after merging flags, file and defaults."""

    watch: list[str] = field(default_factory=lambda: ["."])
    ignore: list[str] = field(default_factory=list)
    ext: list[str] = field(default_factory=list)
    gitignore: bool = True
    stop_signal: int | None = None
    # Durations left at None take the Supervisor's own defaults.
    stop_timeout: float | None = None
    debounce: float | None = None
    restart_on_crash: bool = False
    crash_backoff: float | None = None
    crash_backoff_max: float | None = None
    poll: bool = False
    socket: list[str] = field(default_factory=list)
    overlap: bool = True
    ready_timeout: float | None = None
    spare: bool = True
    spare_exclude: list[str] = field(default_factory=list)
    clear: bool = False
    quiet: bool = False
    verbose: bool = False
    config_file: Path | None = None

    def durations(self) -> Durations:
        """The durations that were set, as :class:`Supervisor` keywords."""
        durations = Durations()
        if self.stop_timeout is not None:
            durations["stop_timeout"] = self.stop_timeout
        if self.debounce is not None:
            durations["debounce"] = self.debounce
        if self.crash_backoff is not None:
            durations["crash_backoff"] = self.crash_backoff
        if self.crash_backoff_max is not None:
            durations["crash_backoff_max"] = self.crash_backoff_max
        if self.ready_timeout is not None:
            durations["ready_timeout"] = self.ready_timeout
        return durations

    def describe(self) -> str:
        """The settings in one line, ``stop-timeout=5 gitignore=on ...``, for ``--verbose``."""
        words = []
        for name in OPTIONS:
            value = getattr(self, name)
            if isinstance(value, bool):
                shown = "on" if value else "off"
            elif isinstance(value, list):
                shown = ",".join(value) or "-"
            elif value is None:
                shown = "default"
            elif name == "stop_signal":
                shown = _signal_name(value)
            else:
                shown = f"{value:g}"
            words.append(f"{name.replace('_', '-')}={shown}")
        return " ".join(words)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)


def find_pyproject(start: Path) -> Path | None:
    """The nearest ``pyproject.toml`` in ``start`` or a folder above it."""
    for folder in (start, *start.parents):
        candidate = folder / "pyproject.toml"
        if candidate.is_file():
            return candidate
    return None


def _check(name: str, spelled: str, value: object, base: Path) -> object:
    """Check and convert one value from the file; ``spelled`` is the key as written."""
    kind = OPTIONS[name]
    where = f"{TABLE} {spelled}"
    if kind == "sockets":
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
            raise ConfigError(f"{where} must be an address or a list of addresses, got {value!r}")
        _validate.sockets(items)
        return list(items)
    if kind in ("paths", "strings"):
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
            raise ConfigError(f"{where} must be a string or a list of strings, got {value!r}")
        if kind == "paths":  # relative to the file's folder, wherever aioreload runs from
            return [os.path.normpath(base / item) for item in items]
        if name == "ext":
            return list(_validate.extensions(items))
        return list(items)
    if kind == "bool":
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, got {value!r}")
        return value
    if kind == "seconds":
        return _validate.seconds(where, value, positive=name == "ready_timeout")
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ConfigError(f"{where} must be a signal name or number, got {value!r}")
    try:
        return _validate.stop_signal(value)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def load_config(start: Path) -> tuple[dict[str, object], Path | None]:
    """The checked ``[tool.aioreload]`` settings of the nearest ``pyproject.toml``.

    Returns:
        The settings by option name (underscores), and the file they came from.

    Raises:
        ConfigError: the file cannot be read, or a key is unknown or has a wrong value.
    """
    path = find_pyproject(start)
    if path is None:
        return {}, None
    where = os.path.relpath(path, start) if path.parent == start else str(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{where}: cannot read it: {exc}") from None
    try:
        table = _read_table(text)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    if table is None:
        return {}, path
    settings: dict[str, object] = {}
    for spelled, value in table.items():
        name = spelled.replace("-", "_")
        if name not in OPTIONS:
            known = ", ".join(sorted(key.replace("_", "-") for key in OPTIONS))
            raise ConfigError(f"{where}: {TABLE} unknown key {spelled!r} (known: {known})")
        if name in settings:
            raise ConfigError(f"{where}: {TABLE} {spelled!r} is given twice (dash and underscore)")
        try:
            settings[name] = _check(name, spelled, value, path.parent)
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None
    if settings.get("quiet") and settings.get("verbose"):
        raise ConfigError(f"{where}: {TABLE} quiet and verbose cannot both be true")
    return settings, path


def resolve(flags: Mapping[str, object], settings: Mapping[str, object], path: Path | None) -> Options:
    """Merge command-line ``flags`` (``None`` = not given) over file ``settings`` over defaults.

    The flags are checked here (the file's values were checked by :func:`load_config`).

    Raises:
        ConfigError: a flag's number is not finite or out of range, its signal is unknown or
            unusable, or an extension cannot match a file suffix.
    """
    options = Options(config_file=path)
    for item in fields(Options):
        flag = flags.get(item.name)
        value = settings.get(item.name) if flag is None else _check_flag(item.name, flag)
        if value is None:
            continue
        setattr(options, item.name, value)
    # A flag beats the file: -v turns off quiet = true, and -q verbose = true.
    if flags.get("verbose"):
        options.quiet = False
    elif flags.get("quiet"):
        options.verbose = False
    return options


def _check_flag(name: str, value: object) -> object:
    flag = f"--{name.replace('_', '-')}"
    if name == "stop_signal":
        try:
            return _validate.stop_signal(value)
        except ConfigError as exc:
            raise ConfigError(f"{flag}: {exc}") from None
    if OPTIONS.get(name) == "seconds":
        return _validate.seconds(flag, value, positive=name == "ready_timeout")
    if name == "socket":
        assert isinstance(value, list)
        try:
            _validate.sockets(value)
        except ConfigError as exc:
            raise ConfigError(f"{flag}: {exc}") from None
        return value
    if name == "ext":
        assert isinstance(value, list)
        return list(_validate.extensions(value))
    return value


# -- reading [tool.aioreload] -----------------------------------------------------------------


def _toml() -> ModuleType:
    """The TOML reader: the standard library's from 3.11, its backport ``tomli`` before."""
    if sys.version_info >= (3, 11):
        import tomllib

        return tomllib
    import tomli  # pragma: no cover - Python 3.10

    return tomli  # pragma: no cover - Python 3.10


def _read_table(text: str) -> dict[str, Any] | None:
    toml = _toml()
    try:
        data = toml.loads(text)
    except toml.TOMLDecodeError as exc:
        raise ConfigError(f"invalid TOML: {exc}") from None
    tool = data.get("tool", {})
    table = tool.get("aioreload") if isinstance(tool, dict) else None
    if table is not None and not isinstance(table, dict):
        raise ConfigError(f"{TABLE} must be a table, got {table!r}")
    return table

"""The command line's options: names, defaults, validation and ``[tool.aioreload]``.

Precedence: command-line flags, then ``[tool.aioreload]`` in the nearest ``pyproject.toml``
(the current folder or the closest folder above it), then the defaults. A list given on the
command line replaces the list from the file. Keys use the long options' names, with dashes
or underscores: ``stop-timeout = 3`` or ``stop_timeout = 3``.

Reading TOML: Python 3.11+ has ``tomllib``. Python 3.10 has none, and aioreload adds no
run-time dependency, so there a small reader takes the ``[tool.aioreload]`` table alone. It
understands what the table needs: strings, numbers, booleans, arrays of them (over several
lines, with comments), bare or quoted keys; anything else in that table gets a one-line error
naming its line. The rest of the file is not read on 3.10, so an error elsewhere goes unseen.
"""

from __future__ import annotations

import os
import re
import signal
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypedDict, final

from ._types import ConfigError

__all__ = ["OPTIONS", "Durations", "Options", "find_pyproject", "load_config", "parse_signal", "resolve"]

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


def parse_signal(value: str | int) -> int:
    """``SIGTERM``, ``TERM``, ``term`` or ``15`` as a signal number.

    Raises:
        ConfigError: no such signal.
    """
    if isinstance(value, int):
        return value
    name = value.strip().upper()
    if name.isdigit():
        return int(name)
    if not name.startswith("SIG"):
        name = "SIG" + name
    number = getattr(signal, name, None)
    if not isinstance(number, int):
        raise ConfigError(f"unknown signal {value!r} (try SIGINT, SIGTERM or a number)")
    return int(number)


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
    if kind in ("paths", "strings"):
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
            raise ConfigError(f"{TABLE} {spelled} must be a string or a list of strings, got {value!r}")
        if kind == "paths":  # relative to the file's folder, wherever aioreload runs from
            return [os.path.normpath(base / item) for item in items]
        return list(items)
    if kind == "bool":
        if not isinstance(value, bool):
            raise ConfigError(f"{TABLE} {spelled} must be true or false, got {value!r}")
        return value
    if kind == "seconds":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise ConfigError(f"{TABLE} {spelled} must be a number of seconds >= 0, got {value!r}")
        return float(value)
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ConfigError(f"{TABLE} {spelled} must be a signal name or number, got {value!r}")
    try:
        return parse_signal(value)
    except ConfigError as exc:
        raise ConfigError(f"{TABLE} {spelled}: {exc}") from None


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

    Raises:
        ConfigError: a value is out of range or a signal is unknown.
    """
    options = Options(config_file=path)
    for item in fields(Options):
        value = flags.get(item.name)
        if value is None:
            value = settings.get(item.name)
        if value is None:
            continue
        if item.name == "stop_signal":
            assert isinstance(value, (str, int))
            value = parse_signal(value)
        elif OPTIONS.get(item.name) == "seconds":
            assert isinstance(value, (int, float))
            if value < 0:
                raise ConfigError(f"--{item.name.replace('_', '-')} must be >= 0, got {value}")
        setattr(options, item.name, value)
    # A flag beats the file: -v turns off quiet = true, and -q verbose = true.
    if flags.get("verbose"):
        options.quiet = False
    elif flags.get("quiet"):
        options.verbose = False
    return options


# -- reading [tool.aioreload] -----------------------------------------------------------------


def _read_table(text: str) -> dict[str, Any] | None:
    if sys.version_info >= (3, 11):
        import tomllib

        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"invalid TOML: {exc}") from None
        table = data.get("tool", {}).get("aioreload")
        if table is not None and not isinstance(table, dict):
            raise ConfigError(f"{TABLE} must be a table, got {table!r}")
        return table
    return read_table_subset(text)  # pragma: no cover - Python 3.10


_HEADER = re.compile(r"^[ \t]*\[[ \t]*tool[ \t]*\.[ \t]*aioreload[ \t]*\][ \t]*(?:#[^\n]*)?$", re.M)
_SUBTABLE = re.compile(r"^[ \t]*\[+[ \t]*tool[ \t]*\.[ \t]*aioreload[ \t]*\.", re.M)
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_BASIC = re.compile(r'"((?:[^"\\\n]|\\.)*)"')
_LITERAL = re.compile(r"'([^'\n]*)'")
_NUMBER = re.compile(r"[+-]?(?:0|[1-9](?:_?\d)*)(\.\d(?:_?\d)*)?([eE][+-]?\d(?:_?\d)*)?")
_ESCAPES = {"b": "\b", "t": "\t", "n": "\n", "f": "\f", "r": "\r", '"': '"', "\\": "\\"}
_ENDS = " \t\r\n,]#"


class _Reader:
    """Reads the values of one table: the subset of TOML that ``[tool.aioreload]`` needs."""

    def __init__(self, text: str, pos: int) -> None:
        self.text = text
        self.pos = pos

    def fail(self, what: str) -> ConfigError:
        line = self.text.count("\n", 0, self.pos) + 1
        return ConfigError(
            f"line {line}: {what} (on Python 3.10 aioreload reads strings, numbers, true/false "
            f"and arrays of them in {TABLE}; use Python 3.11+ for more)"
        )

    def skip(self, *, newlines: bool) -> None:
        text = self.text
        while self.pos < len(text):
            char = text[self.pos]
            if char in " \t" or (newlines and char in "\r\n"):
                self.pos += 1
            elif char == "#":
                end = text.find("\n", self.pos)
                self.pos = len(text) if end == -1 else end
            else:
                return

    def key(self) -> str:
        match = _BARE_KEY.match(self.text, self.pos)
        if match:
            self.pos = match.end()
            return match.group(0)
        if self.text.startswith(("'", '"'), self.pos):
            value = self.value()
            if isinstance(value, str):
                return value
        raise self.fail("expected a key")

    def value(self) -> object:
        text, pos = self.text, self.pos
        if text.startswith(('"""', "'''"), pos):
            raise self.fail("multi-line strings are not supported")
        if text.startswith("[", pos):
            return self.array()
        for pattern in (_BASIC, _LITERAL):
            match = pattern.match(text, pos)
            if match:
                self.pos = match.end()
                return _unescape(match.group(1)) if pattern is _BASIC else match.group(1)
        for word, result in (("true", True), ("false", False)):
            if text.startswith(word, pos) and self._ends_at(pos + len(word)):
                self.pos = pos + len(word)
                return result
        match = _NUMBER.match(text, pos)
        if match and self._ends_at(match.end()):
            self.pos = match.end()
            number = match.group(0).replace("_", "")
            return float(number) if match.group(1) or match.group(2) else int(number)
        raise self.fail("unsupported value")

    def array(self) -> list[object]:
        self.pos += 1
        items: list[object] = []
        while True:
            self.skip(newlines=True)
            if self.text.startswith("]", self.pos):
                self.pos += 1
                return items
            if self.text.startswith("[", self.pos):
                raise self.fail("nested arrays are not supported")
            items.append(self.value())
            self.skip(newlines=True)
            if self.text.startswith(",", self.pos):
                self.pos += 1
            elif not self.text.startswith("]", self.pos):
                raise self.fail("expected ',' or ']' in an array")

    def _ends_at(self, pos: int) -> bool:
        return pos >= len(self.text) or self.text[pos] in _ENDS


def _unescape(body: str) -> str:
    def one(match: re.Match[str]) -> str:
        code = match.group(1)
        if code in _ESCAPES:
            return _ESCAPES[code]
        return chr(int(code[1:], 16))

    try:
        return re.sub(r"\\(u[0-9A-Fa-f]{4}|U[0-9A-Fa-f]{8}|[btnfr\"\\])", one, body)
    except (ValueError, OverflowError):
        raise ConfigError(f"bad escape in string {body!r}") from None


def read_table_subset(text: str) -> dict[str, Any] | None:
    """The ``[tool.aioreload]`` table of a ``pyproject.toml``'s text, without ``tomllib``.

    Returns:
        The table, or ``None`` when the file has none.

    Raises:
        ConfigError: the table holds something this reader does not understand.
    """
    sub = _SUBTABLE.search(text)
    if sub is not None:
        raise _Reader(text, sub.start()).fail(f"sub-tables of {TABLE} are not supported")
    header = _HEADER.search(text)
    if header is None:
        return None
    reader = _Reader(text, header.end())
    table: dict[str, Any] = {}
    while True:
        reader.skip(newlines=True)
        if reader.pos >= len(text) or text[reader.pos] == "[":
            break
        key = reader.key()
        reader.skip(newlines=False)
        if text.startswith(".", reader.pos):
            raise reader.fail("dotted keys are not supported")
        if not text.startswith("=", reader.pos):
            raise reader.fail(f"expected '=' after {key!r}")
        reader.pos += 1
        reader.skip(newlines=False)
        value = reader.value()
        reader.skip(newlines=False)
        if reader.pos < len(text) and text[reader.pos] not in "\r\n":
            raise reader.fail(f"unexpected text after the value of {key!r}")
        if key in table:
            raise reader.fail(f"{key!r} is defined twice")
        table[key] = value
    return table

"""Whether a command runs a Python program, and which one: the warm spare's question. Stdlib only.

A spare can stand in for ``python [OPTIONS] script.py ARGS``, ``python [OPTIONS] -m module
ARGS`` and a console script whose first line names a Python interpreter (``uvicorn app:app``,
``gunicorn ...``): the spare is started as ``INTERPRETER [OPTIONS] _sparechild.py`` and, when
it takes over, runs the script or module exactly as the interpreter would have. Anything
else (``-c``, ``-`` or no script, an option we do not know, another program) starts cold.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, final

__all__ = ["PythonCommand", "parse"]

# Options that take a value, alone (-W x) or glued (-Wx); and those that take none.
_WITH_VALUE = frozenset("WX")
_FLAGS = frozenset("bBdEhiIOPqRsSuv")  # not -x: it would skip the bootstrap's first line
_NOT_SPARED = frozenset("hi")  # help, interactive: nothing to stand in for
_PYTHON_NAME = re.compile(r"python(3(\.\d+)?)?[tw]?(\.exe)?")  # Python 3 only
_SHEBANG_MAX = 512


@final
@dataclass(frozen=True)
class PythonCommand:
    """A command that runs a Python program, taken apart.

    Attributes:
        interpreter: The interpreter's path, found as ``exec`` would find it.
        options: Interpreter options before the program (``-u``, ``-X dev``...), as given.
        kind: ``script`` (a file, console scripts included) or ``module`` (``-m``).
        target: The script's path as given, or the module's name.
        args: The program's own arguments.
    """

    interpreter: str
    options: tuple[str, ...]
    kind: Literal["script", "module"]
    target: str
    args: tuple[str, ...]


def parse(command: Sequence[str], env: Mapping[str, str], cwd: str | None = None) -> PythonCommand | None:
    """``command`` as a Python program, or ``None`` when a spare cannot stand in for it."""
    if not command:
        return None
    path = env.get("PATH", os.defpath)
    program = _which(command[0], path, cwd)
    if program is None:
        return None
    if _PYTHON_NAME.fullmatch(os.path.basename(program)):
        parsed = _parse_interpreter(program, command[1:])
        if parsed is not None and parsed.kind == "script" and not _source_file(parsed.target, cwd):
            return None  # a folder, a zip application, a missing file: the interpreter's own way
        return parsed
    interpreter = _shebang_python(program, path)
    if interpreter is None:
        return None
    # The kernel hands the interpreter the path exec was given: as typed, or found on PATH.
    target = command[0] if os.sep in command[0] else program
    return PythonCommand(interpreter, (), "script", target, tuple(command[1:]))


def _which(name: str, path: str, cwd: str | None) -> str | None:
    if os.sep in name:
        found = name if os.path.isabs(name) else os.path.join(cwd or os.getcwd(), name)
        return found if os.access(found, os.X_OK) and os.path.isfile(found) else None
    return shutil.which(name, path=path)


def _parse_interpreter(interpreter: str, rest: Sequence[str]) -> PythonCommand | None:
    options: list[str] = []
    index = 0
    while index < len(rest):
        word = rest[index]
        if word == "--":
            index += 1
            break
        if not word.startswith("-") or word == "-":
            break
        letters = word[1:]
        if letters.startswith("-") or letters.startswith("c"):  # --long options, -c: cold
            return None
        for position, letter in enumerate(letters):
            if letter in _WITH_VALUE:
                glued = letters[position + 1 :]
                if glued:
                    options.append(word)
                else:
                    if index + 1 >= len(rest):
                        return None
                    options.extend((word, rest[index + 1]))
                    index += 1
                break
            if letter == "m":  # -m module, -um module, -mmodule
                flags, glued = letters[:position], letters[position + 1 :]
                if flags:
                    options.append(f"-{flags}")
                if glued:
                    module, after = glued, index + 1
                elif index + 1 < len(rest):
                    module, after = rest[index + 1], index + 2
                else:
                    return None
                return PythonCommand(interpreter, tuple(options), "module", module, tuple(rest[after:]))
            if letter not in _FLAGS or letter in _NOT_SPARED:
                return None
        else:
            options.append(word)
        index += 1
    if index >= len(rest) or rest[index] == "-":
        return None
    return PythonCommand(interpreter, tuple(options), "script", rest[index], tuple(rest[index + 1 :]))


def _source_file(path: str, cwd: str | None) -> bool:
    """Whether ``path`` is a Python source file the bootstrap can run: not a folder, zip or .pyc."""
    full = path if os.path.isabs(path) else os.path.join(cwd or os.getcwd(), path)
    if not os.path.isfile(full) or full.endswith((".pyc", ".pyz", ".zip")):
        return False
    try:
        with open(full, "rb") as f:
            return f.read(2) != b"PK"  # a zip application under any name
    except OSError:
        return False


def _shebang_python(program: str, path: str) -> str | None:
    """The interpreter a console script's ``#!`` line names, when it is Python (no options)."""
    try:
        with open(program, "rb") as f:
            first = f.readline(_SHEBANG_MAX)
    except OSError:
        return None
    if not first.startswith(b"#!"):
        return None
    words = first[2:].decode("utf-8", "replace").split()
    if words[:1] == ["/usr/bin/env"] and len(words) == 2:
        words = [shutil.which(words[1], path=path) or ""]
    if len(words) != 1 or not words[0] or not _PYTHON_NAME.fullmatch(os.path.basename(words[0])):
        return None
    return words[0] if os.access(words[0], os.X_OK) else None

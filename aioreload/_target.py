"""``aioreload pkg.module:main``: run a Python callable as the supervised program.

The command line starts ``python -m aioreload._target pkg.module:main [ARGS...]`` as its child
(same interpreter, the current folder first on ``sys.path``), with imported-module watching
on. In the child this module imports ``pkg.module``, looks up ``main`` (a dotted path such as
``app.run`` works too) and runs it the way :func:`aioreload.run` runs its function: a coroutine
function under ``asyncio.run``; returning ends the program for good with that exit code;
raising prints the traceback and waits for a fix. ``sys.argv`` becomes ``[TARGET, ARGS...]``.

Before starting anything, the command line checks that the module can be found, without
running any of its code, so a typo is one line of error rather than a child that fails.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import os
import re
import sys
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["TARGET", "find_module", "load", "main"]

TARGET = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*")
"""``module.path:attribute.path``."""


class TargetError(Exception):
    """The target names something that is not there, or not callable."""


def find_module(name: str, folder: str) -> str | None:
    """Check that module ``name`` can be imported from ``folder``, without importing it.

    Parent packages are located, not run (a package that edits its own ``__path__`` at import
    could hide a module from this check; the child then reports the real error).

    Returns:
        ``None`` when the module is there, else a one-line explanation.
    """
    parts = name.split(".")
    search = [folder, *sys.path[1:]]
    try:
        spec = importlib.machinery.PathFinder.find_spec(parts[0], search)
        spec = spec or importlib.util.find_spec(parts[0])  # builtins, editable installs...
    except (ImportError, ValueError):
        spec = None
    found = 1
    for index in range(1, len(parts)):
        if spec is None:
            break
        locations = spec.submodule_search_locations
        if locations is None:
            return f"{'.'.join(parts[:index])} is a module, not a package: it has no {parts[index]!r}"
        spec = importlib.machinery.PathFinder.find_spec(".".join(parts[: index + 1]), list(locations))
        found = index + 1
    if spec is None:
        return f"no module named {'.'.join(parts[:found])!r} in {folder} or on sys.path"
    return None


def load(target: str) -> Callable[[], Any]:
    """Import the module of ``target`` and return the callable it names.

    Raises:
        TargetError: the attribute is missing or not callable.
    """
    module_name, _, attribute = target.partition(":")
    value: Any = importlib.import_module(module_name)
    walked = module_name
    for part in attribute.split("."):
        if not hasattr(value, part):
            raise TargetError(f"{walked} has no attribute {part!r} (target {target})")
        value = getattr(value, part)
        walked += f"{':' if walked == module_name else '.'}{part}"
    if not callable(value):
        raise TargetError(f"{target} is not callable (it is a {type(value).__name__})")
    return value  # type: ignore[no-any-return]


def main(argv: Sequence[str]) -> int:
    """Run ``argv[0]`` (``module:function``) with ``argv[1:]`` as its arguments; the exit code."""
    from ._run import _run_child

    target, *args = argv
    sys.argv = [target, *args]
    try:
        function = load(target)
    except TargetError as exc:
        print(f"aioreload: error: {exc}", file=sys.stderr, flush=True)
        return 1  # a fix to the module (which is watched) starts it again
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # the module failed to import: show where, wait for a fix
        from . import _modules

        _modules.print_user_traceback(exc)
        _modules.report_crash(exc)
        return 1
    return _run_child(function)


if __name__ == "__main__":
    if len(sys.argv) < 2 or not TARGET.fullmatch(sys.argv[1]):
        sys.exit("usage: python -m aioreload._target module.path:function [ARGS...]")
    if os.getcwd() not in sys.path:  # `python -P` or PYTHONSAFEPATH: still run from here
        sys.path.insert(0, os.getcwd())
    sys.exit(main(sys.argv[1:]))

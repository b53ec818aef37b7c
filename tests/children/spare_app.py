"""The warm spare's test program: what it found already imported, what it imports, then it waits.

Copied into the project as ``app.py`` by ``test_spare.py`` and run as ``python app.py NAME...``:
each ``NAME`` is a module imported at start; ``@NAME`` one imported lazily, inside a function
called once the program said it is ready (a user module, found on ``sys.path[0]``: the project;
``missing`` when there is none).
Reports one line ``READY <pid> <base64 JSON>`` to ``TEST_REPORT_SOCK``, the JSON holding its
generation, the project's version file, ``random.random()``, which of the named modules, their
parent packages and ``json`` were in ``sys.modules`` before the program imported anything
(``preloaded``; ``at_start`` lists them all), and each module's ``VERSION``, ``VALUE`` or
``MARK``. Answers SIGUSR1 with ``ALIVE <pid>``; stops on SIGINT.
Self-contained (standard library and ``aioreload``): it runs in throwaway virtual environments.
"""

import sys

AT_START = frozenset(sys.modules)  # first thing: what the interpreter (or the spare) imported

import base64  # noqa: E402
import importlib  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402

_sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
_sock.connect(os.environ["TEST_REPORT_SOCK"])


def report(*words: object) -> None:
    _sock.sendall((" ".join(str(w) for w in words) + "\n").encode())


def describe(module: object) -> object:
    for attribute in ("VERSION", "VALUE", "MARK"):
        if hasattr(module, attribute):
            return getattr(module, attribute)
    return None


def parents(name: str) -> list[str]:
    """``a.b.c``: ``a``, ``a.b`` and ``a.b.c``."""
    parts = name.split(".")
    return [".".join(parts[:end]) for end in range(1, len(parts) + 1)]


def lazily(names: list[str]) -> dict[str, object]:
    """Import ``names`` now, long after the start (the spare never saw them); ``missing`` if absent."""
    found: dict[str, object] = {}
    for name in names:
        try:
            found[name] = describe(importlib.import_module(name))
        except ModuleNotFoundError:
            found[name] = "missing"
    return found


def main() -> None:
    eager = [name for name in sys.argv[1:] if not name.startswith("@")]
    lazy = [name[1:] for name in sys.argv[1:] if name.startswith("@")]
    modules = {name: describe(importlib.import_module(name)) for name in eager}
    import aioreload

    aioreload.report_ready()  # the modules it imported so far: what the next spare preloads
    modules.update(lazily(lazy))
    with open(os.environ["TEST_VERSION_FILE"]) as f:
        version = f.read().strip()
    facts = {
        "generation": int(os.environ.get("AIORELOAD_GENERATION", "0")),
        "version": version,
        "random": random.random(),
        "preloaded": sorted({p for name in [*eager, *lazy, "json"] for p in parents(name) if p in AT_START}),
        "modules": modules,
        "bootstrap": "aioreload._sparechild" in sys.modules,
        "at_start": sorted(AT_START),
    }
    signal.signal(signal.SIGUSR1, lambda *_: report("ALIVE", os.getpid()))
    payload = base64.b64encode(json.dumps(facts).encode()).decode()
    try:  # from the report on: the test may stop it as soon as it has the line
        report("READY", os.getpid(), payload)
        while True:
            signal.pause()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()

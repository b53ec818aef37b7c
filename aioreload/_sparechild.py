"""The warm spare's side: a fresh interpreter that preloads libraries, then becomes the program.

Run by path, with the program's own interpreter, options and words
(``INTERPRETER [OPTIONS] .../aioreload/_sparechild.py script.py ARGS`` or ``... -m module
ARGS``), so it needs nothing but the standard library: aioreload need not be installed where
the program runs. Every Python child of a supervisor with spares on starts this way; the
first one is told to start at once (a cold start), the others wait warm.

It imports nothing a cold start of the program would not have imported (only modules the
interpreter has loaded before any program runs: ``os``, ``sys``, ``marshal``, ``site``), so
``sys.modules`` holds only what was asked for. From its first line, ``sys.argv`` and
``sys.path[0]`` are the program's: a library imported early sees what it would see later,
and a project module that shadows a library module is found first, as in a cold start.

Messages on the private channel (``AIORELOAD_FD``); supervisor → spare as frames (4-byte
length, then ``marshal`` version 4 of plain data: readable by every Python 3):

* ``{"op": "preload", "modules": [...]}``: import these (each failure is skipped), then
  answer ``{"op": "warm", "files": {path: mtime_ns}, "dirs": {...}, "tainted": [...]}``:
  the files loaded and the ``site-packages`` folders, for the supervisor to check just before
  it uses the spare; ``tainted`` names files loaded from anywhere else (the spare is then
  not used).
* ``{"op": "start", "env": {...}, "prepare": bool, "orig_argv": [...]}``: become the
  program. With ``prepare``, a program that knows its own module (``aioreload.run``,
  ``MODULE:FUNCTION``, ``serve``) imports it, says ``prepared`` and waits for ``go`` (a JSON
  line, read by ``aioreload.child``): new code that cannot import never replaces the old child.

spare → supervisor, JSON lines like every child's: ``warm`` above, and ``{"op": "modules",
"modules": [[name, file], ...]}`` when the program says it is ready and when it ends: what it
imported from the standard library and installed packages, in import order. This is what the
next spare preloads.
"""

import marshal
import os
import sys

TYPE_CHECKING = False  # not typing's: importing typing is what a cold start would not do
if TYPE_CHECKING:  # never at run time: a cold start would not have imported typing (nor __future__)
    from types import ModuleType
    from typing import Any

_fd = int(os.environ.get("AIORELOAD_FD", "-1"))
_allowed = ()  # type: tuple[str, ...]
_reported = set()  # type: set[str]
_FRAME = 4


def _read(count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = os.read(_fd, count - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data


def _receive() -> "dict[str, Any]":
    """The next frame from the supervisor (blocking)."""
    size = int.from_bytes(_read(_FRAME), "big")
    message = marshal.loads(_read(size))
    if not isinstance(message, dict):
        raise EOFError
    return message


def _json(value: object) -> str:
    """JSON for the plain data we send (str, int, float, bool, list, dict), without ``json``."""
    if isinstance(value, str):
        out = []
        for char in value:
            if char in '"\\':
                out.append("\\" + char)
            elif char < " ":
                out.append(f"\\u{ord(char):04x}")
            else:
                out.append(char)
        return '"' + "".join(out) + '"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, dict):
        return "{" + ",".join(f"{_json(str(k))}:{_json(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_json(v) for v in value) + "]"
    return "null"


def _send(op: str, **fields: object) -> None:
    data = (_json({"op": op, **fields}) + "\n").encode("utf-8", "backslashreplace")
    view = memoryview(data)
    while view:
        view = view[os.write(_fd, view) :]


def _library_folders() -> tuple[list[str], list[str]]:
    """(standard library, site-packages folders), as configured: no sysconfig import needed."""
    standard = [os.path.dirname(os.__file__)]
    packages: list[str] = []
    site = sys.modules.get("site")
    if site is not None:
        for getter in ("getsitepackages", "getusersitepackages"):
            found: str | list[str] = getattr(site, getter, lambda: [])()
            packages.extend([found] if isinstance(found, str) else found)
    return standard, [folder for folder in packages if os.path.isdir(folder)]


def _module_file(module: "ModuleType") -> "str | None":
    spec = getattr(module, "__spec__", None)
    origin = getattr(spec, "origin", None) if spec is not None else None
    if isinstance(origin, str) and getattr(spec, "has_location", False):
        return origin
    path = getattr(module, "__file__", None)
    return path if isinstance(path, str) else None


def _loaded() -> tuple[dict[str, int], list[str]]:
    """Files of every loaded module: ``(inside, outside)`` the library folders."""
    inside: dict[str, int] = {}
    outside: list[str] = []
    for name, module in list(sys.modules.items()):
        path = _module_file(module)
        if name in ("__main__", "aioreload._sparechild") or not path:  # ourselves
            continue
        real = os.path.realpath(path)
        if real.startswith(_allowed):
            try:
                inside[real] = os.stat(real).st_mtime_ns
            except OSError:
                outside.append(real)
        elif os.path.exists(real):
            outside.append(real)
    return inside, outside


def _preload(message: "dict[str, Any]", site: list[str]) -> None:
    failed: list[str] = []
    for name in message.get("modules", []):
        if name in sys.modules:
            continue
        try:
            __import__(name)
        except (Exception, SystemExit):  # skipped: the program imports it again, or fails as it would
            failed.append(name)
    files, tainted = _loaded()
    dirs: dict[str, int] = {}
    for folder in site:
        try:
            dirs[folder] = os.stat(folder).st_mtime_ns
            with os.scandir(folder) as entries:  # a .pth file edited in place leaves the folder's time
                for entry in entries:
                    if entry.name.endswith(".pth"):
                        files[entry.path] = entry.stat().st_mtime_ns
        except OSError:
            pass
    executable = os.path.realpath(sys.executable)
    try:  # noqa: SIM105 - no contextlib here (see the module docstring)
        files[executable] = os.stat(executable).st_mtime_ns
    except OSError:
        pass
    _send("warm", files=files, dirs=dirs, tainted=tainted, failed=failed)


def report_modules() -> None:
    """Tell the supervisor what the program imported from the libraries (new ones only).

    Called when the program says it is ready (``aioreload.ready()``) and when it ends, in the
    program's own thread: the spare adds no thread to the program (a thread would take signals
    meant for the main thread, and makes ``fork`` warn).
    """
    found: list[list[str]] = []
    for name, module in list(sys.modules.items()):
        if name in _reported or name in ("__main__", "aioreload._sparechild"):
            continue
        path = _module_file(module)
        if path and path.startswith(_allowed):  # paths as loaded: no realpath per module at exit
            _reported.add(name)
            found.append([name, path])
    if not found:
        return
    # The program's own aioreload may be writing on the channel from another thread: then its
    # channel (and its lock) carries our line too, so that the two never interleave.
    child = sys.modules.get("aioreload.child")
    channel = getattr(child, "_channel", None)
    try:
        if channel is not None:
            channel.send("modules", modules=found)
        else:
            _send("modules", modules=found)
    except OSError:
        pass


def _become(message: "dict[str, Any]", program: list[str]) -> None:
    """Turn this process into the program, as a cold start of its command would be."""
    os.environ.update(message.get("env", {}))
    if message.get("prepare"):
        os.environ["AIORELOAD_PREPARE"] = "1"  # the program's aioreload says when it imported
    if hasattr(sys, "orig_argv"):
        sys.orig_argv = list(message.get("orig_argv", sys.orig_argv))
    main = type(sys)("__main__")
    main.__dict__.update(__builtins__=__builtins__, __annotations__={})
    sys.modules["__main__"] = main
    # An exception the program lets out goes on up: the interpreter prints it, runs atexit
    # handlers, waits for threads and exits (or dies of SIGINT) as after a cold start; only
    # our own frames are taken out of the traceback it prints.
    sys.excepthook = _without_our_frames(sys.excepthook)
    try:
        if program[0] == "-m":
            import runpy  # as -m does

            runpy._run_module_as_main(program[1], alter_argv=True)  # type: ignore[attr-defined]
            return
        path = os.path.abspath(program[0])
        main.__file__ = path
        main.__cached__ = None  # type: ignore[attr-defined]
        main.__loader__ = type(globals()["__loader__"])("__main__", path)  # a SourceFileLoader, as ours
        main.__spec__ = None
        main.__package__ = None
        with open(path, "rb") as f:
            code = compile(f.read(), path, "exec", dont_inherit=True)
        exec(code, main.__dict__)
    finally:
        report_modules()


def _without_our_frames(hook: "Any") -> "Any":
    here = os.path.realpath(__file__)

    def excepthook(kind: "Any", value: "Any", tb: "Any") -> None:
        while tb is not None and os.path.realpath(tb.tb_frame.f_code.co_filename) == here:
            tb = tb.tb_next
        hook(kind, value.with_traceback(tb) if value is not None else value, tb)

    return excepthook


def _main() -> None:
    global _allowed
    here = os.path.dirname(os.path.realpath(__file__))
    if sys.path and os.path.realpath(sys.path[0] or ".") == here:
        del sys.path[0]  # our own folder, which a cold start of the program would not have
    program = sys.argv[1:]
    module_mode = program[:1] == ["-m"]
    # From here on, what a cold start of the program would have: its argv and sys.path[0].
    sys.argv = ["-m", *program[2:]] if module_mode else program
    if not (sys.flags.isolated or getattr(sys.flags, "safe_path", False)):
        first = os.getcwd() if module_mode else os.path.dirname(os.path.realpath(program[0]))
        sys.path.insert(0, first)
    standard, site = _library_folders()
    folders = [*standard, *site]
    _allowed = tuple({os.path.join(p, "") for p in (*folders, *map(os.path.realpath, folders))})
    sys.modules["aioreload._sparechild"] = sys.modules[__name__]  # for aioreload.ready()
    try:
        message = _receive()
        if message.get("op") == "preload":
            _preload(message, [os.path.realpath(p) for p in site])
            message = _receive()
    except (KeyboardInterrupt, OSError, EOFError, ValueError):  # stopped, or the supervisor is gone
        os._exit(0)
    if message.get("op") != "start":
        os._exit(0)
    _become(message, program)


if __name__ == "__main__":
    _main()

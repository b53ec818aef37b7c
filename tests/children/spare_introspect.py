"""What a program can see of how it was started, for comparing a cold start with a spare's.

Copied by ``test_spare.py`` into the project as a script, as ``pkg/mod.py`` (run with ``-m``)
and as a console script (a ``#!`` line naming the interpreter is put first). Reports one line
``READY <pid> <base64 JSON>`` to ``TEST_REPORT_SOCK`` from its ``if __name__ == "__main__":``
block, then waits for SIGINT. Standard library only.
"""

GLOBALS_AT_START = {name: type(value).__name__ for name, value in dict(globals()).items()}

import base64  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import stat  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402

NOT_COMPARED = ("AIORELOAD_", "LISTEN_", "NOTIFY_SOCKET")


def describe_fd(fd: int) -> str:
    """What a descriptor is (its kind, or the file it names), not where it points in detail."""
    try:
        mode = os.fstat(fd).st_mode
    except OSError:
        return "closed"
    for kind in ("SOCK", "FIFO", "CHR", "REG", "DIR"):
        if getattr(stat, f"S_IS{kind}")(mode):
            return kind.lower()
    return "other"


def stream(name: str) -> dict[str, object]:
    value = getattr(sys, name)
    return {
        "fileno": value.fileno(),
        "isatty": value.isatty(),
        "encoding": value.encoding,
        "errors": value.errors,
        "line_buffering": value.line_buffering,
        "write_through": value.write_through,
    }


def facts() -> dict[str, object]:
    main = sys.modules["__main__"]
    spec = getattr(main, "__spec__", None)
    # Not this report's socket, nor the supervisor's channel (a spare's was opened earlier, so
    # its number differs), nor the descriptor listdir used (closed by now).
    ours = (_sock.fileno(), int(os.environ.get("AIORELOAD_FD", "-1")))
    fds = {fd: describe_fd(fd) for fd in map(int, os.listdir("/proc/self/fd")) if fd not in ours}
    return {
        "argv": sys.argv,
        "orig_argv": sys.orig_argv,
        "executable": sys.executable,
        "prefix": sys.prefix,
        "name": __name__,
        "file": __file__,
        "cached": globals().get("__cached__"),
        "package": __package__,
        "spec": None if spec is None else spec.name,
        "loader": type(getattr(main, "__loader__", None)).__name__,
        "main_is_this_module": main.__dict__ is globals(),
        "doc": __doc__ is not None,
        "globals_at_start": GLOBALS_AT_START,
        "path": sys.path,
        "cwd": os.getcwd(),
        "env": {k: v for k, v in os.environ.items() if not k.startswith(NOT_COMPARED)},
        "aioreload_env": sorted(k for k in os.environ if k.startswith("AIORELOAD_")),
        "flags": list(sys.flags),
        "warnoptions": sys.warnoptions,
        "xoptions": sys._xoptions,
        "streams": {name: stream(name) for name in ("stdin", "stdout", "stderr")},
        "fds": {fd: kind for fd, kind in fds.items() if kind != "closed"},
        "signals": {
            signal.Signals(n).name: str(signal.getsignal(n))
            for n in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGPIPE, signal.SIGUSR1)
        },
        "blocked": sorted(int(s) for s in signal.pthread_sigmask(signal.SIG_BLOCK, [])),
        "own_group": os.getpgrp() == os.getpid(),
        "threads": threading.active_count(),
        "umask": os.umask(os.umask(0)),
    }


if __name__ == "__main__":
    _sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    _sock.connect(os.environ["TEST_REPORT_SOCK"])
    payload = base64.b64encode(json.dumps(facts()).encode()).decode()
    try:  # from the report on: the test may stop it as soon as it has the line
        _sock.sendall(f"READY {os.getpid()} {payload}\n".encode())
        while True:
            signal.pause()
    except KeyboardInterrupt:
        pass

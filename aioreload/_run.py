"""``aioreload.run(main)``: one line that makes a program reload itself.

The heir of ``server_reloader.main(run_server, before_reload=...)``. The same call plays both
roles: in a process no supervisor started, it becomes the supervisor and re-runs the very same
command line (interpreter, ``-X``/``-W`` options, ``-m module`` or script, arguments, working
folder) as its child; in that child it runs ``main``. Only the standard library is imported
until the supervising half needs anyio and watchfiles.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import signal
import sys
import traceback
from collections.abc import Awaitable, Callable, Iterable
from functools import partial
from typing import TYPE_CHECKING, Any, NoReturn

from . import _ipc, child

if TYPE_CHECKING:
    from ._requests import BeforeReload

__all__ = ["run"]

Main = Callable[[], "int | Awaitable[int | None] | None"]


def _exit_code(value: object) -> int:
    if value is None:
        return 0
    if isinstance(value, int):
        return value
    print(value, file=sys.stderr)
    return 1


def _run_child(main: Main) -> int:
    """Run ``main`` and tell the supervisor when it finished for good."""
    from . import _modules

    try:
        child._prepared()  # told to prepare: the module imported; wait for the word to go
        if inspect.iscoroutinefunction(main):
            import asyncio

            result = asyncio.run(main())
        else:
            result = main()
            if inspect.isawaitable(result):
                import asyncio

                async def _await() -> Any:
                    return await result

                result = asyncio.run(_await())
    except KeyboardInterrupt:
        return 130  # stopped by the supervisor for a reload: not the end
    except SystemExit as exc:
        _finishing()
        code = _exit_code(exc.code)
    except BaseException as exc:  # a crash: report where, let the supervisor wait for a fix
        traceback.print_exc()
        _modules.report_crash(exc)
        return 1
    else:
        _finishing()
        code = _exit_code(result)
    channel = child._get_channel()
    if channel is not None:
        with contextlib.suppress(OSError):
            channel.send("exit", code=code)
    return code


def _finishing() -> None:
    """``main`` is done: a stop signal now must not turn "finished" into "interrupted".

    A program that writes into its own watched folder and then returns makes the supervisor
    stop it at once; if that SIGINT landed after ``main`` returned, the program would be
    started again (and write again...). From here on it is ignored: the exit message goes out
    and the process ends by itself, which is what the supervisor's stop waits for anyway.
    """
    with contextlib.suppress(ValueError, AttributeError, OSError):  # not the main thread
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def _command() -> list[str]:
    """This process's own command line, ready to run again."""
    original = list(getattr(sys, "orig_argv", []) or [sys.executable, *sys.argv])
    return [sys.executable, *original[1:]]


def run(
    main: Main,
    *,
    watch: Iterable[str | os.PathLike[str]] = (),
    ignore: Iterable[str] = (),
    stop_signal: int | None = None,
    stop_timeout: float = 5.0,
    debounce: float = 0.02,
    before_reload: BeforeReload | None = None,
    before_exit: Callable[[], object] | None = None,
    watch_imports: bool = True,
    quiet: bool = False,
    spare: bool = True,
    ready_timeout: float = 30.0,
) -> NoReturn:
    """Run ``main`` under a reloader and exit with its exit code.

    Called in a program no supervisor started, this becomes the supervisor: it re-runs the
    same command line as a child and restarts it whenever a module the child imported (or a
    path in ``watch``) changes, or when the child calls :func:`trigger_reload`. In that child,
    it runs ``main`` — a plain function or a coroutine function (run with ``asyncio.run``).

    * ``main`` returns (or calls ``sys.exit``): the program is finished for good; the
      supervisor exits with the same code (``None`` counts as 0).
    * ``main`` raises: the traceback is printed, the files it names are watched too, and the
      supervisor waits for a fix, then starts the program again.
    * A change whose code cannot even be imported (a ``SyntaxError``...) leaves the running
      program alone: the new one imports it first, and replaces it only if that worked.
    * Ctrl+C or SIGTERM to the supervisor: the child is stopped gracefully, ``before_exit``
      runs, and the supervisor exits with the child's code.

    Example::

        import aioreload

        async def serve() -> None:
            ...

        if __name__ == "__main__":
            aioreload.run(serve, before_reload=lambda request: print("reloading code..."))

    Args:
        main: What the program does.
        watch: Extra folders or files to watch besides the imported modules.
        ignore: Glob patterns of paths under ``watch`` to ignore.
        stop_signal: Signal that stops the child (default SIGINT).
        stop_timeout: Seconds to wait for the child to stop before killing it.
        debounce: Quiet period, in seconds, before a burst of changes reloads.
        before_reload: Runs in the supervisor before each reload; ``False`` cancels it.
        before_exit: Runs in the supervisor once the child is stopped for good.
        watch_imports: Reload when a module the program imported changes (default). Turn it
            off for a program that decides for itself when to reload.
        quiet: No status lines on stderr (errors still print).
        spare: Keep a warm spare interpreter with the program's libraries imported, so a
            reload costs a fraction of a cold start (see :class:`Supervisor`).
        ready_timeout: Seconds the new code may take to import (the module's top level)
            while the old program runs; after that the reload counts as failed.

    Raises:
        SystemExit: always, with the exit code; ``run`` does not return.
    """
    if os.environ.get(_ipc.ENV_REASON):
        # A supervisor started us (the variable is set for every child, channel or not: on
        # Windows there is none, and a child must never become a supervisor of its own).
        raise SystemExit(_run_child(main))
    import anyio

    from ._foreground import Status, run_in_foreground
    from ._supervisor import Supervisor
    from ._types import AioreloadError

    command = _command()
    status = Status([os.path.basename(command[0]), *command[1:]], sys.stderr, quiet=quiet)
    try:
        supervisor = Supervisor(
            command,
            watch=watch,
            ignore=ignore,
            stop_signal=stop_signal,
            stop_timeout=stop_timeout,
            debounce=debounce,
            before_reload=before_reload,
            watch_imports=watch_imports,
            spare=spare,
            ready_timeout=ready_timeout,
            _prepare=True,
        )
        code = anyio.run(partial(run_in_foreground, supervisor, status, control=os.getcwd()))
    except AioreloadError as exc:
        status.line(f"error: {exc}", error=True)
        code = 2
    if before_exit is not None:
        before_exit()
    raise SystemExit(code)

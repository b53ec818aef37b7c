"""Spawning, stopping and guarding the child process. Every platform branch lives here.

OS-level choices, with the options considered:

* **Process tree.** The child leads a new session on POSIX (``start_new_session``), so the
  stop signal and SIGKILL reach every process it started with one ``killpg``, and the
  terminal's Ctrl+C does not reach it behind the supervisor's back. On Windows it gets a new
  process group, stopped with CTRL_BREAK_EVENT and killed with ``taskkill /T /F``.
  Grandchildren that start sessions of their own (daemons) escape the group; catching those
  would need cgroups (Linux) or job objects (Windows), which we leave for later.

* **Is the group empty?** After the leader exits, members of its group may still be running.
  ``killpg(pgid, 0)`` answers "someone is there", but counts zombies, and an init that does
  not reap orphans (seen in containers and micro-VMs) leaves them forever. On Linux we read
  ``/proc/*/stat`` and count only live members; elsewhere ``killpg(pgid, 0)`` is the answer.

* **Supervisor death.** If the supervisor is killed with SIGKILL it cannot stop its child.
  Options: ``PR_SET_PDEATHSIG`` (Linux only, reaches only the direct child, and needs
  ``preexec_fn``, which is unsafe with threads); a pipe the child itself watches (needs a
  cooperating child); a watchdog process. We run one tiny ``/bin/sh`` watchdog per supervisor
  (about 1 MiB, no Python) in its own session. It reads the current child's process group id
  from a pipe whose only writer is the supervisor. When the supervisor dies for any reason,
  the kernel closes the pipe, ``read`` sees end-of-file, and the watchdog signals the last
  group (stop signal, then SIGKILL after 0.5 s). This uses only POSIX behaviour, so it works
  on Linux and macOS alike; Windows would use a job object (not implemented yet).

* **Inherited ignored signals.** A supervisor started in the background (``nohup cmd &``)
  inherits SIGINT as ignored, and an ignored disposition survives ``exec``: the child would
  ignore its stop signal and every reload would wait for the full timeout. ``preexec_fn`` could
  reset it but is unsafe with threads. Instead, while spawning, we swap an ignored stop signal
  for a no-op handler in the supervisor (``exec`` resets handled signals to the default) and
  swap it back at once; a signal arriving in that window is dropped, as it would have been.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, final

import anyio
import anyio.abc

from ._types import SpawnError

__all__ = ["Child", "Guardian", "default_stop_signal", "signal_name"]

logger = logging.getLogger(__name__)

WINDOWS = sys.platform == "win32"
_PROC_STAT = "/proc/self/stat"
# How often we look for surviving group members once the leader has exited.
_GROUP_POLL = 0.005


def default_stop_signal() -> int:
    """The signal that asks a child to stop by default.

    SIGINT on POSIX: it makes a plain ``asyncio.run`` program cancel its tasks and run its
    ``finally`` blocks, where SIGTERM's default action kills it outright. CTRL_BREAK on Windows.
    """
    if sys.platform == "win32":
        return int(signal.CTRL_BREAK_EVENT)
    return int(signal.SIGINT)


def signal_name(signum: int) -> str:
    """``SIGINT`` for 2, and so on; the number itself when it has no name."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return str(signum)


@contextlib.contextmanager
def _default_disposition(signum: int) -> Iterator[None]:
    """Make sure a child exec'd inside this block does not inherit ``signum`` as ignored."""
    if WINDOWS or signal.getsignal(signum) is not signal.SIG_IGN:
        yield
        return
    try:
        previous = signal.signal(signum, lambda *_: None)
    except ValueError:  # not the main thread: nothing we can do, leave it
        yield
        return
    try:
        yield
    finally:
        signal.signal(signum, previous)


def _live_group_members(pgid: int) -> bool:
    """Whether any non-zombie process is left in process group ``pgid``."""
    if WINDOWS:
        return False
    if os.path.exists(_PROC_STAT):
        with os.scandir("/proc") as entries:
            names = [entry.name for entry in entries if entry.name.isdigit()]
        for name in names:
            try:
                with open(f"/proc/{name}/stat", "rb") as f:
                    stat = f.read()
            except OSError:
                continue
            # pid (comm) state ppid pgrp ... ; comm may contain spaces and parentheses.
            fields = stat[stat.rfind(b")") + 2 :].split()
            if len(fields) > 2 and int(fields[2]) == pgid and fields[0] not in (b"Z", b"X"):
                return True
        return False
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


@final
class Child:
    """One running child process and the process group it leads.

    Owned by the supervisor: it is always stopped (or found exited) before being dropped.
    """

    def __init__(self, process: anyio.abc.Process, started: float) -> None:
        self._process = process
        self.pid: int = process.pid
        self.started = started
        self._signalled = False

    def __repr__(self) -> str:
        return f"<Child pid={self.pid} returncode={self.returncode}>"

    @classmethod
    async def spawn(
        cls,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        cwd: str | None,
        pass_fds: Sequence[int] = (),
        stop_signal: int,
    ) -> Child:
        """Start ``argv`` in a new session (POSIX) or process group (Windows).

        stdin, stdout and stderr are inherited, so a chatty child can never block on a pipe
        nobody reads.

        Raises:
            SpawnError: the program is missing or cannot be executed.
        """
        kwargs: dict[str, Any] = {}
        if sys.platform == "win32":
            kwargs["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP
        else:
            kwargs["start_new_session"] = True
            kwargs["pass_fds"] = tuple(pass_fds)
        started = time.monotonic()
        try:
            with _default_disposition(stop_signal):
                process = await anyio.open_process(
                    list(argv), stdin=None, stdout=None, stderr=None, env=dict(env), cwd=cwd, **kwargs
                )
        except FileNotFoundError as exc:
            raise SpawnError(f"command not found: {argv[0]!r} (is it installed and on PATH?)") from exc
        except PermissionError as exc:
            raise SpawnError(f"cannot execute {argv[0]!r}: permission denied") from exc
        except OSError as exc:
            raise SpawnError(f"cannot start {argv[0]!r}: {exc.strerror or exc}") from exc
        return cls(process, started)

    @property
    def returncode(self) -> int | None:
        """The exit status once the child has been reaped, else ``None``."""
        return self._process.returncode

    async def wait(self) -> int:
        """Wait for the group leader to exit and return its status."""
        return await self._process.wait()

    def send_signal(self, signum: int) -> None:
        """Send ``signum`` to the whole process group (Windows: to the child)."""
        if WINDOWS:
            with contextlib.suppress(OSError):
                self._process.send_signal(signal.Signals(signum))
        else:
            _signal_group(self.pid, signum)

    def kill(self) -> None:
        """Kill the whole process group at once."""
        if WINDOWS:
            subprocess.run(
                ["taskkill", "/T", "/F", "/PID", str(self.pid)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                check=False,
            )
            with contextlib.suppress(OSError):
                self._process.kill()
        else:
            _signal_group(self.pid, signal.SIGKILL)

    async def stop(self, signum: int, timeout: float) -> tuple[int, bool]:
        """Stop the group gracefully: ``signum``, up to ``timeout`` seconds, then SIGKILL.

        The signal is sent at most once per child, however often ``stop`` is called. Returns
        once the leader is reaped and no live member of its group is left.

        Returns:
            The leader's exit status and whether SIGKILL was needed.
        """
        if not self._signalled and self.returncode is None:
            self._signalled = True
            self.send_signal(signum)
        killed = False
        with anyio.move_on_after(timeout) as scope:
            await self.wait()
            # Group members are not our children, so nothing can be awaited: poll briefly.
            while _live_group_members(self.pid):  # noqa: ASYNC110
                await anyio.sleep(_GROUP_POLL)
        if scope.cancelled_caught:
            killed = True
            self.kill()
            with anyio.CancelScope(shield=True):
                await self.wait()
        elif not WINDOWS:
            # Catch members that left the group-alive check racing with their own exit.
            _signal_group(self.pid, signal.SIGKILL)
        return self.wait_status(), killed

    def wait_status(self) -> int:
        """The reaped exit status; only valid after :meth:`wait` returned."""
        code = self.returncode
        assert code is not None
        return code


# The watchdog: remember the last group id written to us; on end of input (the supervisor is
# gone), signal that group, give it half a second, then kill it. "0" means "no child now".
_GUARDIAN_SCRIPT = """
pg=0
while IFS= read -r line; do pg=$line; done
[ "$pg" = 0 ] && exit 0
kill -s "$1" -- "-$pg" 2>/dev/null || exit 0
i=0
while [ $i -lt 10 ] && kill -s 0 -- "-$pg" 2>/dev/null; do sleep 0.05; i=$((i+1)); done
kill -s KILL -- "-$pg" 2>/dev/null
exit 0
"""


@final
class Guardian:
    """Kills the current child's process group if the supervisor process dies (POSIX).

    See the module docstring for the mechanism. A no-op on Windows.
    """

    def __init__(self, process: anyio.abc.Process | None) -> None:
        self._process = process

    @classmethod
    async def start(cls, stop_signal: int) -> Guardian:
        """Start the watchdog process."""
        if WINDOWS:
            return cls(None)
        process = await anyio.open_process(
            ["/bin/sh", "-c", _GUARDIAN_SCRIPT, "aioreload-guardian", signal_name(stop_signal)[3:]],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        return cls(process)

    @property
    def pid(self) -> int | None:
        """The watchdog's process id (``None`` on Windows)."""
        return None if self._process is None else self._process.pid

    async def watch(self, pgid: int) -> None:
        """Tell the watchdog which process group to clean up (0: none)."""
        if self._process is not None and self._process.stdin is not None:
            with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
                await self._process.stdin.send(b"%d\n" % pgid)

    async def aclose(self) -> None:
        """Tell the watchdog there is nothing to clean, end it and reap it."""
        if self._process is None:
            return
        with anyio.CancelScope(shield=True):
            await self.watch(0)
            await self._process.aclose()

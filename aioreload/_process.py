r"""Spawning, stopping and guarding the child process. Every process-level platform branch lives here.

OS-level choices, with the options considered:

* **Process tree.** The child leads a new session on POSIX (``start_new_session``): one
  ``killpg`` reaches every process it started, and the terminal's Ctrl+C does not reach it
  behind our back. On Windows it gets a new process group (CTRL_BREAK_EVENT, ``taskkill /T
  /F``). Grandchildren that start sessions of their own (daemons) escape the group; catching
  those needs cgroups or job objects, left for later.

* **Is the group empty?** ``killpg(pgid, 0)`` counts zombies, and an init that does not reap
  orphans (containers, micro-VMs) keeps them forever. On Linux we read ``/proc/*/stat`` and
  count live members only, in a worker thread (never on the event loop), looking again after
  5 ms, then backing off to 100 ms; elsewhere ``killpg(pgid, 0)`` answers.

* **Members that outlive the leader.** A leader that exits on the stop signal has heard it;
  what is left is usually a shell's background job (``sh -c 'worker & exec app'``), which
  POSIX starts with SIGINT ignored and which would hold every reload for all of
  ``stop_timeout``. Members get at most 0.5 s more (the watchdog's grace too), then the group
  is killed and a warning names each process still there (``/proc``, else POSIX ``ps``).

* **Supervisor death.** ``PR_SET_PDEATHSIG`` is Linux-only, reaches only the direct child and
  needs ``preexec_fn`` (unsafe with threads); a pipe watched by the child needs its help. We
  run one tiny ``/bin/sh`` watchdog (no Python) in its own session, reading the current
  group id from a pipe only the supervisor writes. When the supervisor dies, ``read`` sees
  end-of-file and the watchdog signals the last group (stop signal, SIGKILL after 0.5 s).
  POSIX only; Windows would use a job object (not implemented yet).

* **Held sockets at descriptors 3, 4, ...** (``_sockets``). ``pass_fds`` keeps a descriptor's
  number, and ``LISTEN_PID`` must be the child's own pid, which the parent cannot put in the
  environment it passes to ``exec``. ``preexec_fn`` is refused by ``anyio.open_process`` (and
  unsafe with threads), ``os.posix_spawn`` would lose the event loop's process watcher, and
  ``dash`` only redirects descriptors 0-9. So the child starts as a tiny shell that moves
  the descriptors, sets ``LISTEN_PID=$$`` and ``exec``\ s the command (same pid): ``bash``
  (2 ms), or a Python trampoline where there is no bash (15 ms). Only children with held
  sockets pay for it.

* **Inherited ignored signals.** Started with SIGINT ignored (``nohup cmd &``), we would pass
  the ignored stop signal on through ``exec``. ``preexec_fn`` could reset it but is unsafe
  with threads; instead, while spawning, an ignored stop signal gets a no-op handler here
  (``exec`` resets handled signals to the default), swapped back at once.

The terminal and job control (Ctrl+Z, ``fg``, ``bg``) live in ``_terminal``.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, final

import anyio
import anyio.abc
import anyio.to_thread

if sys.platform != "win32":
    import fcntl

from ._types import SpawnError

__all__ = [
    "Child",
    "Guardian",
    "default_stop_signal",
    "signal_name",
]

logger = logging.getLogger(__name__)

WINDOWS = sys.platform == "win32"
_PROC_STAT = "/proc/self/stat"
_POLL_FIRST, _POLL_MAX = 0.005, 0.1  # looks for members left after the leader: backing off
MEMBER_GRACE = 0.5  # how long members may outlive a leader that exited on the stop signal
_KILL_WAIT = 1.0  # for killed members to be gone (one stuck in the kernel may never go)
_NAMED = 5  # processes a warning names before "and N more"

Member = tuple[int, str]  # a process group member: pid, command name ("" when unknown)


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


def _proc_members(pgid: int) -> Iterator[Member]:
    """Live (non-zombie) members of group ``pgid``, read from ``/proc`` (Linux; blocking)."""
    with os.scandir("/proc") as entries:
        names = [entry.name for entry in entries if entry.name.isdigit()]
    for name in names:
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # pid (comm) state ppid pgrp ... ; comm may contain spaces and parentheses.
        close = stat.rfind(b")")
        fields = stat[close + 2 :].split()
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] not in (b"Z", b"X"):
            yield int(name), stat[stat.find(b"(") + 1 : close].decode(errors="replace")


def _live_group_members(pgid: int) -> bool:
    """Whether any non-zombie process is left in group ``pgid`` (blocking: run it in a thread)."""
    if WINDOWS:
        return False
    if os.path.exists(_PROC_STAT):
        return next(_proc_members(pgid), None) is not None
    return _group_exists(pgid)  # no /proc: zombies count too


def _group_members(pgid: int) -> list[Member]:
    """The live members of group ``pgid`` with their command names (blocking: run it in a thread)."""
    if WINDOWS:
        return []
    if os.path.exists(_PROC_STAT):
        return list(_proc_members(pgid))
    # No /proc (macOS, the BSDs): POSIX ps lists every process; keep the group's.
    try:
        listing = subprocess.run(
            ["ps", "-A", "-o", "pid=", "-o", "pgid=", "-o", "comm="],
            capture_output=True,
            text=True,
            timeout=2,
            check=False,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    members = []
    for line in listing.splitlines():
        words = line.split(None, 2)
        if len(words) == 3 and words[1] == str(pgid) and words[0].isdigit():
            members.append((int(words[0]), os.path.basename(words[2].strip())))
    return members


def _describe(members: Sequence[Member]) -> str:
    """``pid 12 (sleep), pid 13 (python3)``, capped at a few names."""
    named = [f"pid {pid} ({name})" if name else f"pid {pid}" for pid, name in members[:_NAMED]]
    more = len(members) - len(named)
    return ", ".join(named) + (f" and {more} more" if more > 0 else "")


def _group_exists(pgid: int) -> bool:
    """Whether any process, zombies included, is in group ``pgid`` (``killpg(pgid, 0)``).

    No process at all is the common case once the leader is reaped, and it needs no scan of
    ``/proc``; only when something is there do we look (in a thread) whether it is alive.
    """
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


_PYTHON_SHIM = (
    "import os,sys\n"
    "n=int(sys.argv[1])\n"
    "for i,fd in enumerate(sys.argv[2:2+n]):os.dup2(int(fd),3+i);os.close(int(fd))\n"
    "os.environ['LISTEN_PID']=str(os.getpid())\n"
    "os.execvp(sys.argv[2+n],sys.argv[2+n:])"
)


def _shim(fds: Sequence[int], argv: Sequence[str]) -> list[str]:
    """``argv`` behind a shell that puts ``fds`` at 3, 4, ... and sets ``LISTEN_PID``.

    Every one of ``fds`` must be at 3 + len(fds) or above, so that no move overwrites one
    still to be moved.
    """
    bash = _bash()
    if bash is not None:
        moves = " ".join(f"{target}<&{fd} {fd}<&-" for target, fd in enumerate(fds, 3))
        return [bash, "-c", f'exec {moves}; LISTEN_PID=$$ exec "$0" "$@"', *argv]
    return [sys.executable, "-I", "-S", "-c", _PYTHON_SHIM, str(len(fds)), *map(str, fds), *argv]


@functools.lru_cache(maxsize=1)
def _bash() -> str | None:
    if os.environ.get("AIORELOAD_NO_BASH") == "1":  # the tests' way to the Python trampoline
        return None
    return shutil.which("bash")


def _check_runnable(program: str, env: Mapping[str, str], cwd: str | None) -> None:
    """Raise :class:`SpawnError` as ``exec`` would fail, for a program started through a shell."""
    if os.sep in program and not os.path.isabs(program) and cwd:
        program = os.path.join(cwd, program)  # the child's folder, not ours
    found = shutil.which(program, path=env.get("PATH", os.defpath))
    if found is None:  # the causes are what exec would have raised, for the exit code (126, 127)
        if os.sep in program and os.path.exists(program):
            denied = PermissionError(errno.EACCES, os.strerror(errno.EACCES), program)
            raise SpawnError(f"cannot execute {program!r}: permission denied") from denied
        missing = FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), program)
        raise SpawnError(f"command not found: {program!r} (is it installed and on PATH?)") from missing


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
        self.killed_members: list[Member] = []
        """What the last :meth:`stop` had to kill (pid, command name), as its warning said."""

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
        listen_fds: Sequence[int] = (),
        stop_signal: int,
    ) -> Child:
        """Start ``argv`` in a new session (POSIX) or process group (Windows).

        stdin, stdout and stderr are inherited, so a chatty child can never block on a pipe
        nobody reads. ``listen_fds`` land at descriptors 3, 4, ... in the child, with
        ``LISTEN_PID`` set to its pid (POSIX; ``pass_fds`` must not be among 3..3+N-1).

        Raises:
            SpawnError: the program is missing or cannot be executed.
        """
        kwargs: dict[str, Any] = {}
        if sys.platform == "win32":
            kwargs["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP
        else:
            kwargs["start_new_session"] = True
            kwargs["pass_fds"] = tuple(pass_fds)
        high: list[int] = []
        started = time.monotonic()
        try:
            if listen_fds:
                _check_runnable(argv[0], env, cwd)  # the shell would only say so in the child's output
                # Copies above the target range, for the shell to move; ours are closed below.
                for fd in listen_fds:
                    high.append(fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3 + len(listen_fds)))
                argv = _shim(high, argv)
                kwargs["pass_fds"] += tuple(high)
            with _default_disposition(stop_signal):
                process = await anyio.open_process(
                    list(argv), stdin=None, stdout=None, stderr=None, env=dict(env), cwd=cwd, **kwargs
                )
        except SpawnError:  # said already (by _check_runnable)
            raise
        except FileNotFoundError as exc:
            raise SpawnError(f"command not found: {argv[0]!r} (is it installed and on PATH?)") from exc
        except PermissionError as exc:
            raise SpawnError(f"cannot execute {argv[0]!r}: permission denied") from exc
        except OSError as exc:
            raise SpawnError(f"cannot start {argv[0]!r}: {exc.strerror or exc}") from exc
        finally:
            for fd in high:
                os.close(fd)
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
        """Stop the group gracefully: ``signum``, then SIGKILL for whatever did not stop in time.

        The signal is sent once per child, however often ``stop`` is called, and also when the
        leader has already exited. The leader gets ``timeout`` seconds, the members that
        outlive it what is left, at most :data:`MEMBER_GRACE`. What is killed is named in a
        warning and kept in :attr:`killed_members`. Returns once no live member is left.

        Returns:
            The leader's exit status, and whether the leader itself had to be killed.
        """
        if not self._signalled:  # even to a group whose leader has exited: its members
            self._signalled = True
            self.send_signal(signum)
        began = anyio.current_time()
        with anyio.move_on_after(timeout):
            await self.wait()
        leader_killed = self.returncode is None
        if leader_killed:
            waited = timeout
        else:
            waited = min(max(0.0, began + timeout - anyio.current_time()), MEMBER_GRACE)
            with anyio.move_on_after(waited) as scope:
                await self._group_gone()
            if not scope.cancelled_caught:
                if not WINDOWS:
                    # Catch members that left the group-alive check racing with their own exit.
                    _signal_group(self.pid, signal.SIGKILL)
                return self.wait_status(), False
        with anyio.CancelScope(shield=True):
            members = await anyio.to_thread.run_sync(_group_members, self.pid)
            self.kill()
            await self.wait()
            with anyio.move_on_after(_KILL_WAIT):  # SIGKILL lands in the others a moment later
                await self._group_gone()
        self._warn_killed(members, signum, waited, leader_killed)
        return self.wait_status(), leader_killed

    async def _group_gone(self) -> None:
        """Return once no live member of the group is left; each look runs in a worker thread."""
        if WINDOWS or not _group_exists(self.pid):  # one cheap syscall answers the usual case
            return
        delay = _POLL_FIRST
        while await anyio.to_thread.run_sync(_live_group_members, self.pid, abandon_on_cancel=True):
            await anyio.sleep(delay)
            delay = min(delay * 2, _POLL_MAX)

    def _warn_killed(self, members: list[Member], signum: int, waited: float, leader: bool) -> None:
        if leader and not any(pid == self.pid for pid, _ in members):
            members.insert(0, (self.pid, ""))  # no /proc or ps answer: still name the leader
        self.killed_members = members
        if members:  # else they finished between the last look and the kill
            after = "" if leader else " after the program exited"
            logger.warning(
                "%s ignored %s for %.1fs%s; killed", _describe(members), signal_name(signum), waited, after
            )

    def wait_status(self) -> int:
        """The reaped exit status; only valid after :meth:`wait` returned."""
        code = self.returncode
        assert code is not None
        return code


# The watchdog: remember the last line of group ids written to us; on end of input (the
# supervisor is gone), signal those groups, give them half a second, then kill them. "0" means
# "no child now"; during an overlapping reload there are two groups.
_GUARDIAN_SCRIPT = """
pgs=0
while IFS= read -r line; do pgs=$line; done
[ "$pgs" = 0 ] && exit 0
for pg in $pgs; do kill -s "$1" -- "-$pg" 2>/dev/null; done
i=0
while [ $i -lt 10 ]; do
  alive=
  for pg in $pgs; do kill -s 0 -- "-$pg" 2>/dev/null && alive=1; done
  [ -z "$alive" ] && exit 0
  sleep 0.05; i=$((i+1))
done
for pg in $pgs; do kill -s KILL -- "-$pg" 2>/dev/null; done
exit 0
"""


@final
class Guardian:
    """Kills the current child's process group if the supervisor process dies (POSIX).

    See the module docstring for the mechanism. A no-op on Windows.
    """

    def __init__(self, process: anyio.abc.Process | None) -> None:
        self._process = process
        self._groups: set[int] = set()

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

    async def add(self, pgid: int) -> None:
        """Have the watchdog clean up group ``pgid`` too."""
        self._groups.add(pgid)
        await self._tell()

    async def discard(self, pgid: int) -> None:
        """Group ``pgid`` is gone: forget it."""
        self._groups.discard(pgid)
        await self._tell()

    async def _tell(self) -> None:
        line = " ".join(str(pgid) for pgid in sorted(self._groups)) or "0"
        if self._process is not None and self._process.stdin is not None:
            with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
                await self._process.stdin.send(line.encode() + b"\n")

    async def aclose(self) -> None:
        """Tell the watchdog there is nothing to clean, end it and reap it."""
        if self._process is None:
            return
        with anyio.CancelScope(shield=True):
            self._groups.clear()
            await self._tell()
            await self._process.aclose()

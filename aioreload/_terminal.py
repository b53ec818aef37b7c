"""The terminal and job control, for a supervisor that owns its process (CLI, ``aioreload.run``).

OS-level choices: the child leads its own session (see ``_process``), so the terminal's
job-control signals never reach it, and its group is orphaned, so the kernel discards SIGTSTP
sent to it. We therefore forward Ctrl+Z as SIGSTOP and ``fg``/``bg`` as SIGCONT ourselves, and
touch the terminal's modes only while we are its foreground job. POSIX only; on Windows both
are no-ops.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import sys
from collections.abc import Callable
from typing import Any, final

__all__ = ["Terminal", "handle_job_control", "job_control_signals"]

WINDOWS = sys.platform == "win32"


@final
class Terminal:
    """The terminal on stdin, whose modes are put back after a child dies mid-prompt (POSIX).

    On our controlling terminal only the foreground process group may change them:
    ``tcsetattr`` from a background job (``aioreload ... &``, or Ctrl+Z then ``bg``) raises
    SIGTTOU, which stops the whole program ("Stopped (tty output)"), and the modes are the
    foreground job's business then. So :meth:`restore` acts there only in the foreground, with
    SIGTTOU blocked in case the shell moves us to the background between the check and the
    call. Any other terminal (one we were merely handed as stdin) has no job control.
    """

    def __init__(self) -> None:
        self._fd = -1
        self._saved: list[Any] | None = None
        self._ttys: list[int] = []
        if WINDOWS:
            return
        import termios

        self._ttys = [fd for fd in (0, 1, 2) if os.isatty(fd)]

        with contextlib.suppress(OSError, termios.error, ValueError, AttributeError):
            if sys.stdin is not None and sys.stdin.isatty():
                self._saved = termios.tcgetattr(sys.stdin.fileno())
                self._fd = sys.stdin.fileno()

    def restore(self) -> None:
        """Put back the modes saved at start, when the terminal is ours to change."""
        if self._saved is None or WINDOWS:
            return
        import termios

        try:
            ours = os.tcgetpgrp(self._fd) == os.getpgrp()  # we are its foreground job
        except OSError as exc:  # ENOTTY: not our controlling terminal, so no job control
            ours = exc.errno == errno.ENOTTY
        if not ours:
            return
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTTOU})
        try:
            with contextlib.suppress(OSError, termios.error, ValueError):
                termios.tcsetattr(self._fd, termios.TCSANOW, self._saved)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)

    def hung_up(self) -> bool:
        """Whether a terminal we started on has hung up (its window closed).

        The kernel turns a hung-up terminal's descriptors into ones whose calls fail with EIO
        before it sends anyone SIGHUP, so this tells the hangup's SIGHUP from ``kill -HUP``.
        """
        for fd in self._ttys:
            try:
                os.tcgetpgrp(fd)
            except OSError as exc:
                if exc.errno == errno.EIO:
                    return True
        return False


def job_control_signals() -> tuple[signal.Signals, ...]:
    """SIGTSTP and SIGCONT, for :func:`handle_job_control` (POSIX).

    None on Windows, nor when we started with SIGTSTP ignored: whoever started us asked for a
    program that Ctrl+Z does not stop, and the child inherits that as before.
    """
    if WINDOWS or signal.getsignal(signal.SIGTSTP) is signal.SIG_IGN:
        return ()
    return (signal.SIGTSTP, signal.SIGCONT)


def handle_job_control(signum: int, signal_child: Callable[[int], None], terminal: Terminal) -> bool:
    """Act on Ctrl+Z, ``fg`` and ``bg``; ``False`` when ``signum`` is not theirs.

    The child leads its own session, so the terminal's SIGTSTP never reaches it. On SIGTSTP we
    stop its group with SIGSTOP (the kernel discards SIGTSTP sent to the group of a session
    leader: it is orphaned), put the terminal's modes back for the shell, and stop ourselves
    with SIGTSTP's default action, so the shell sees an ordinary stopped job. When ``fg`` or
    ``bg`` continues us, we continue the child's group; SIGCONT from anywhere else does too.

    Args:
        signum: The signal received.
        signal_child: Sends a signal to the child's process group (nothing when none runs).
        terminal: Restored before we stop.
    """
    if WINDOWS or signum not in (signal.SIGTSTP, signal.SIGCONT):
        return False
    if signum == signal.SIGTSTP:
        signal_child(signal.SIGSTOP)
        terminal.restore()
        _stop_self()
    signal_child(signal.SIGCONT)
    return True


def _stop_self() -> None:
    """Stop this process as Ctrl+Z would, and return once it is continued."""
    try:
        previous = signal.signal(signal.SIGTSTP, signal.SIG_DFL)
    except ValueError:  # not the main thread: SIGSTOP needs no disposition
        os.kill(os.getpid(), signal.SIGSTOP)
        return
    try:  # delivered to this thread before kill() returns; discarded if our group is orphaned
        os.kill(os.getpid(), signal.SIGTSTP)
    finally:
        signal.signal(signal.SIGTSTP, previous)

"""Starting, reading, measuring and reliably killing the processes under test.

Every tool starts in a new session (its own process group), so the harness can deliver a
terminal-style Ctrl+C with ``killpg`` and can kill everything at the end. Children that
started sessions of their own (aioreload's children and watchdog) are found through psutil's
process tree and, as a last resort, through a marker in their environment.
"""

from __future__ import annotations

import contextlib
import os
import queue
import select
import signal
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import psutil

MARKER = "AIORELOAD_BENCH_MARKER"
_MARK = f"{os.getpid()}-{time.time_ns()}"


@dataclass(frozen=True)
class Line:
    """A START or EVENT line and the harness's monotonic time when it was read."""

    kind: str
    read_ns: int
    fields: tuple[str, ...]

    @property
    def pid(self) -> int:
        return int(self.fields[0])

    @property
    def version(self) -> str:
        return self.fields[1]

    @property
    def stamp_ns(self) -> int:
        return int(self.fields[-1])


def bench_env(extra: Mapping[str, str]) -> dict[str, str]:
    env = dict(os.environ)
    env.update(extra)
    env[MARKER] = _MARK
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    env["NO_UPDATE_NOTIFIER"] = "1"
    env.pop("PYTHONPATH", None)
    return env


class Proc:
    """One tool process with its stdout read line by line in a thread.

    With ``capture=False`` its stdout goes straight to the log file instead (no reader thread,
    no START lines): for servers that print a line per request, measured over HTTP instead.
    """

    def __init__(
        self, argv: Sequence[str], *, cwd: Path, env: Mapping[str, str], log: Path, capture: bool = True
    ) -> None:
        self.argv = list(argv)
        self.log_path = log
        self._log: IO[bytes] = open(log, "ab")  # noqa: SIM115  (closed in close())
        self._log.write(f"\n=== {' '.join(self.argv)}\n".encode())
        self._log.flush()
        self.lines: queue.Queue[Line] = queue.Queue()
        self.started_ns = time.monotonic_ns()
        self.popen = subprocess.Popen(
            self.argv,
            cwd=cwd,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if capture else self._log,
            stderr=self._log,
            start_new_session=True,
        )
        self.pid = self.popen.pid
        self.known: dict[int, psutil.Process] = {}
        self._reader: threading.Thread | None = None
        if capture:
            self._reader = threading.Thread(target=self._read, name=f"reader-{self.pid}", daemon=True)
            self._reader.start()

    def _read(self) -> None:
        stdout = self.popen.stdout
        assert stdout is not None
        for raw in stdout:
            now = time.monotonic_ns()
            self._log.write(raw)
            self._log.flush()
            parts = raw.decode(errors="replace").split()
            if len(parts) >= 3 and parts[0] in ("START", "EVENT"):
                self.lines.put(Line(parts[0], now, tuple(parts[1:])))

    def next_line(self, timeout: float) -> Line | None:
        """The next START/EVENT line, or ``None`` after ``timeout`` seconds without one."""
        try:
            return self.lines.get(timeout=max(0.0, timeout))
        except queue.Empty:
            return None

    def drain(self, seconds: float) -> list[Line]:
        """Every line that arrives in the next ``seconds`` (the settle wait)."""
        deadline = time.monotonic() + seconds
        got = []
        while (line := self.next_line(deadline - time.monotonic())) is not None:
            got.append(line)
        return got

    def wait_start(
        self, timeout: float, want: str | None = None, *, not_pid: int | None = None
    ) -> tuple[Line | None, list[Line]]:
        """Wait for a START line (with version ``want``, from a pid other than ``not_pid``).

        Returns the line (``None`` on timeout) and the other lines seen meanwhile.
        """
        deadline = time.monotonic() + timeout
        others: list[Line] = []
        while (line := self.next_line(deadline - time.monotonic())) is not None:
            if line.kind == "START" and (want is None or line.version == want) and line.pid != not_pid:
                return line, others
            others.append(line)
        return None, others

    def tree(self) -> list[psutil.Process]:
        """The tool and all its descendants (remembered for the final kill)."""
        try:
            root = psutil.Process(self.pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []
        for proc in procs:
            self.known.setdefault(proc.pid, proc)
        return procs

    def ctrl_c(self, timeout: float) -> tuple[float | None, list[str]]:
        """SIGINT to the tool's process group, as a terminal's Ctrl+C does.

        Returns seconds until the tool exited (``None``: still running after ``timeout``) and
        the processes of this run still alive 1 s after it exited ("pid cmdline"): former
        descendants, including any it started while shutting down.
        """
        self.tree()
        elapsed = self._signal_and_wait(signal.SIGINT, timeout)
        if elapsed is None:
            return None, []
        remaining = marked()
        names = {p.pid: _describe(p) for p in remaining}
        _, alive = psutil.wait_procs(remaining, timeout=1.0)
        return elapsed, [names[p.pid] for p in alive if _live(p)]

    def _signal_and_wait(self, signum: int, timeout: float) -> float | None:
        """Signal the tool's group; seconds until the tool exited, ``None`` after ``timeout``."""
        # A pidfd is readable the moment the process exits; Popen.wait(timeout) polls every 50 ms.
        pidfd = os.pidfd_open(self.pid) if hasattr(os, "pidfd_open") else None
        try:
            began = time.monotonic()
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signum)
            if pidfd is not None:
                exited, _, _ = select.select([pidfd], [], [], timeout)
                if not exited:
                    return None
            else:
                try:
                    self.popen.wait(timeout)
                except subprocess.TimeoutExpired:
                    return None
            elapsed = time.monotonic() - began
        finally:
            if pidfd is not None:
                os.close(pidfd)
        self.popen.wait()
        return elapsed

    def close(self) -> list[str]:
        """Kill everything this tool ever started and reap it.

        Returns the processes of this run that were still found afterwards by their marker
        (orphans the tool left behind) and were killed then.
        """
        self.tree()
        kill_all(list(self.known.values()))
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(5)
        psutil.wait_procs([p for p in self.known.values() if p.pid != self.pid], timeout=2.0)
        leftovers = sweep()
        if self._reader is not None:
            self._reader.join(timeout=5)
        if self._reader is None or not self._reader.is_alive():  # closing under a blocked reader would hang
            if self.popen.stdout is not None:
                self.popen.stdout.close()
            self._log.close()
        return leftovers


def _describe(proc: psutil.Process) -> str:
    try:
        return f"{proc.pid} {' '.join(proc.cmdline())[:160]}"
    except psutil.Error:
        return str(proc.pid)


def kill_all(procs: list[psutil.Process]) -> None:
    """SIGKILL these processes and the process groups they lead (never the harness's group).

    psutil checks each process's identity (creation time), so a recycled pid is left alone.
    """
    own_group = os.getpgrp()
    running = [p for p in procs if p.pid != os.getpid() and p.is_running()]
    leaders = {p.pid for p in running}
    for proc in running:
        with contextlib.suppress(OSError):
            group = os.getpgid(proc.pid)
            if group != own_group and group in leaders:
                os.killpg(group, signal.SIGKILL)
        with contextlib.suppress(psutil.Error):
            proc.kill()


def _live(proc: psutil.Process) -> bool:
    """Running and not a zombie (an init that reaps slowly leaves exited orphans as zombies)."""
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def marked() -> list[psutil.Process]:
    """Every live process carrying this run's marker in its environment (not the harness)."""
    found = []
    me = os.getpid()
    for proc in psutil.process_iter():
        if proc.pid == me:
            continue
        with contextlib.suppress(psutil.Error):
            if proc.environ().get(MARKER) == _MARK and _live(proc):
                found.append(proc)
    return found


def sweep() -> list[str]:
    """Kill any process still carrying this run's marker; describe what was found."""
    found = marked()
    names = [_describe(p) for p in found]
    kill_all(found)
    psutil.wait_procs(found, timeout=2.0)
    return names


@dataclass(frozen=True)
class Usage:
    cpu_percent: float
    rss_mib: float
    processes: int


def measure_idle(proc: Proc, seconds: float, interval: float = 0.5) -> Usage:
    """CPU (% of one core) and peak total RSS of the tool's process tree over ``seconds``."""

    def cpu_by_pid() -> dict[int, float]:
        totals = {}
        for p in proc.tree():
            with contextlib.suppress(psutil.Error):
                t = p.cpu_times()
                totals[p.pid] = t.user + t.system
        return totals

    start = cpu_by_pid()
    began = time.monotonic()
    peak_rss = 0
    count = 0
    stop = threading.Event()
    while True:
        rss = 0
        procs = proc.tree()
        for p in procs:
            with contextlib.suppress(psutil.Error):
                rss += p.memory_info().rss
        peak_rss = max(peak_rss, rss)
        count = max(count, len(procs))
        left = seconds - (time.monotonic() - began)
        if left <= 0:
            break
        stop.wait(min(interval, left))  # sampling period, not synchronisation
    end = cpu_by_pid()
    wall = time.monotonic() - began
    used = sum(end[pid] - start.get(pid, 0.0) for pid in end)
    return Usage(100.0 * used / wall, peak_rss / 2**20, count)

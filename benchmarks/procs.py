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
import re
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


# aioreload's stderr (read with ``stderr_lines=True``): the ``-v`` line of a warm spare that
# is ready, and the status line of each start ("started from spare in 2 ms [pid 123]").
SPARE_READY = re.compile(r"spare \[pid (\d+)\] ready: (\d+) modules(?:, (\d+) MiB)? preloaded in (\d+) ms")
STARTED = re.compile(r"started( from spare)? in (\d+) ms \[pid (\d+)\]")


@dataclass(frozen=True)
class Line:
    """A line the harness acts on and its monotonic time when it was read.

    Kinds: ``START`` (pid, version, stamp) from the child; ``EVENT`` (kind, generation, pid,
    source, stamp) from embedded.py; from aioreload's stderr, ``SPARE`` (pid, modules, MiB or
    ``-``, preload ms) when a warm spare is ready and ``SPAWN`` (pid, ``spare`` or ``cold``, ms)
    for each child it starts.
    """

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
        self,
        argv: Sequence[str],
        *,
        cwd: Path,
        env: Mapping[str, str],
        log: Path,
        capture: bool = True,
        stderr_lines: bool = False,
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
            stderr=subprocess.PIPE if stderr_lines else self._log,
            start_new_session=True,
        )
        self.pid = self.popen.pid
        self.known: dict[int, psutil.Process] = {}
        self._readers: list[threading.Thread] = []
        self._log_lock = threading.Lock()
        if capture:
            self._readers.append(threading.Thread(target=self._read, name=f"reader-{self.pid}", daemon=True))
        if stderr_lines:
            self._readers.append(
                threading.Thread(target=self._read_err, name=f"stderr-{self.pid}", daemon=True)
            )
        for reader in self._readers:
            reader.start()

    def _keep(self, raw: bytes) -> None:
        with self._log_lock:
            self._log.write(raw)
            self._log.flush()

    def _read(self) -> None:
        stdout = self.popen.stdout
        assert stdout is not None
        for raw in stdout:
            now = time.monotonic_ns()
            self._keep(raw)
            parts = raw.decode(errors="replace").split()
            if len(parts) >= 3 and parts[0] in ("START", "EVENT"):
                self.lines.put(Line(parts[0], now, tuple(parts[1:])))

    def _read_err(self) -> None:
        stderr = self.popen.stderr
        assert stderr is not None
        for raw in stderr:
            now = time.monotonic_ns()
            self._keep(raw)
            text = raw.decode(errors="replace")
            if (ready := SPARE_READY.search(text)) is not None:
                pid, modules, mib, ms = ready.groups()
                self.lines.put(Line("SPARE", now, (pid, modules, mib or "-", ms)))
            elif (started := STARTED.search(text)) is not None:
                spare, ms, pid = started.groups()
                self.lines.put(Line("SPAWN", now, (pid, "spare" if spare else "cold", ms)))

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
        for reader in self._readers:
            reader.join(timeout=5)
        if not any(r.is_alive() for r in self._readers):  # closing under a blocked reader would hang
            for stream in (self.popen.stdout, self.popen.stderr):
                if stream is not None:
                    stream.close()
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
        return bool(proc.status() != psutil.STATUS_ZOMBIE)
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
    spare_rss_mib: float | None = None  # peak RSS of aioreload's warm spare (``None``: none seen)


SPARE_BOOTSTRAP = "_sparechild.py"


def _is_spare(proc: psutil.Process, child_pid: int | None) -> bool:
    """aioreload's warm spare: started through its bootstrap, and not the running child.

    Every Python child of aioreload with spares on runs through ``_sparechild.py``, the
    current one included; the current child is the pid of the last START line.
    """
    if proc.pid == child_pid:
        return False
    try:
        return any(word.endswith(SPARE_BOOTSTRAP) for word in proc.cmdline())
    except psutil.Error:
        return False


def measure_idle(proc: Proc, seconds: float, child_pid: int | None = None, interval: float = 0.5) -> Usage:
    """CPU (% of one core) and peak total RSS of the tool's process tree over ``seconds``.

    ``child_pid`` is the running child (from its START line): any other process in the tree
    that runs aioreload's ``_sparechild.py`` is the warm spare, whose peak RSS is also returned.
    """

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
    peak_spare: int | None = None
    count = 0
    stop = threading.Event()
    while True:
        rss = spare = 0
        spares = 0
        procs = proc.tree()
        for p in procs:
            with contextlib.suppress(psutil.Error):
                used = p.memory_info().rss
                rss += used
                if _is_spare(p, child_pid):
                    spare += used
                    spares += 1
        peak_rss = max(peak_rss, rss)
        if spares:
            peak_spare = max(peak_spare or 0, spare)
        count = max(count, len(procs))
        left = seconds - (time.monotonic() - began)
        if left <= 0:
            break
        stop.wait(min(interval, left))  # sampling period, not synchronisation
    end = cpu_by_pid()
    wall = time.monotonic() - began
    used = sum(end[pid] - start.get(pid, 0.0) for pid in end)
    spare_mib = None if peak_spare is None else peak_spare / 2**20
    return Usage(100.0 * used / wall, peak_rss / 2**20, count, spare_mib)

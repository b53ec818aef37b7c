"""The measurements. Every wait is on a line read from a pipe, except the documented settles."""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import subprocess
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench_setup import BENCH, WORK
from procs import Line, Proc, bench_env, measure_idle
from tools import CHILD, EMBEDDED, Tool, burst_paths, write_version

START_TIMEOUT = 30.0  # first START after launching a tool
EDIT_TIMEOUT = 10.0  # an edit or trigger not answered by then counts as missed
STOP_TIMEOUT = 30.0  # Ctrl+C not obeyed by then counts as a timeout
SPARE_TIMEOUT = 15.0  # START → warm spare ready (2 s delay + preload); later: go on without it
BURST_WINDOW = 3.0


@dataclass(frozen=True)
class Config:
    rounds: int
    edits: int  # per tool per round
    triggers: int
    bursts: int  # per tool per round
    settle: float  # after each observed restart
    first_settle: float  # after a tool's first START, before the first edit
    idle_sizes: tuple[int, ...]
    idle_seconds: float
    idle_settle: float


@dataclass
class Results:
    # samples[metric][tool][round] -> values
    samples: dict[str, dict[str, dict[int, list[float]]]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    )
    counts: dict[str, dict[str, int]] = field(default_factory=lambda: defaultdict(lambda: defaultdict(int)))
    idle: dict[int, dict[str, dict[str, Any]]] = field(default_factory=lambda: defaultdict(dict))
    notes: list[str] = field(default_factory=list)

    def add(self, metric: str, tool: str, rnd: int, value: float) -> None:
        self.samples[metric][tool][rnd].append(value)

    def count(self, what: str, tool: str, n: int = 1) -> None:
        self.counts[what][tool] += n

    def note(self, text: str) -> None:
        print(f"  ! {text}", flush=True)
        self.notes.append(text)

    def values(self, metric: str, tool: str) -> list[float]:
        return [v for rnd in sorted(self.samples[metric][tool]) for v in self.samples[metric][tool][rnd]]


_versions = itertools.count(int(time.time()) % 100_000 * 1000)


def _ms(ns: int) -> float:
    return ns / 1e6


def finish(proc: Proc, tool: Tool, res: Results, context: str) -> None:
    """Kill what is left of a tool's run; orphans it left behind are an anomaly worth noting."""
    leftovers = proc.close()
    if leftovers:
        res.count("cleanup_leftovers", tool.name, len(leftovers))
        res.note(f"{tool.name}: at cleanup after {context}, killed processes it had left: {leftovers}")


def launch(tool: Tool, tree: Path, log: str = "") -> Proc:
    env = bench_env({"BENCH_TREE": str(tree)})
    path = WORK / "logs" / f"{log or tool.name}.log"
    return Proc(tool.argv(tree), cwd=BENCH, env=env, log=path, stderr_lines=tool.spare)


def spare_ready(line: Line) -> bool:
    """aioreload says a warm spare is ready (the CLI's ``-v`` line, embedded.py's event)."""
    return line.kind == "SPARE" or (line.kind == "EVENT" and line.fields[0] == "spare-ready")


def _spare_pid(line: Line) -> int:
    return int(line.fields[0] if line.kind == "SPARE" else line.fields[2])


class Watch:
    """One launch's lines, read through this so that spares and child sources are noticed.

    Remembers how each child was started (``spawns``: pid → ``spare`` or ``cold``, from the
    CLI's status line or embedded.py's ``started`` event) and whether a warm spare became
    ready since the current child's START (``spare``).
    """

    def __init__(self, proc: Proc, tool: Tool, rnd: int, res: Results, prefix: str = "") -> None:
        self.proc, self.tool, self.rnd, self.res, self.prefix = proc, tool, rnd, res, prefix
        self.current: Line | None = None
        self.spare: Line | None = None
        self.spawns: dict[int, str] = {}

    def _see(self, lines: list[Line]) -> None:
        for line in lines:
            if line.kind == "SPAWN":
                self.spawns[line.pid] = line.fields[1]
            elif line.kind == "EVENT" and line.fields[0] == "started" and line.fields[2].isdigit():
                self.spawns[int(line.fields[2])] = "spare" if line.fields[3] == "spare" else "cold"
            elif spare_ready(line) and self.current is not None and _spare_pid(line) != self.current.pid:
                self._spare(line)

    def _spare(self, line: Line) -> None:
        if self.spare is not None and _spare_pid(self.spare) == _spare_pid(line):
            return  # the same spare's second line (aioreload's own log says it too)
        self.spare = line
        assert self.current is not None
        name, rnd, p = self.tool.name, self.rnd, self.prefix
        self.res.add(f"{p}spare_wait", name, rnd, _ms(line.read_ns - self.current.read_ns))
        # CLI: (pid, modules, MiB, preload ms); embedded.py: (kind, generation, pid, "K:M:ms", ns)
        _, modules, mib, preload = line.fields if line.kind == "SPARE" else ("", *line.fields[3].split(":"))
        for metric, value in (("modules", modules), ("mib", mib), ("preload", preload)):
            if value.isdigit():
                self.res.add(f"{p}spare_{metric}", name, rnd, float(value))

    def wait_start(
        self, timeout: float, want: str | None = None, *, not_pid: int | None = None
    ) -> tuple[Line | None, list[Line]]:
        line, others = self.proc.wait_start(timeout, want, not_pid=not_pid)
        self._see(others)
        if line is not None:
            self.current, self.spare = line, None
        return line, others

    def drain(self, seconds: float) -> list[Line]:
        lines = self.proc.drain(seconds)
        self._see(lines)
        return lines

    def source(self, pid: int) -> str | None:
        """How the child with this pid was started (``None``: the tool does not say)."""
        return self.spawns.get(pid)

    def await_spare(self) -> None:
        """For aioreload with spares on: wait until a spare for the current child is ready.

        A plain script's spare is prepared 2 s after the child started (or when it calls
        ``aioreload.ready()``), so edits 0.3 s apart would all start cold; people edit slower.
        """
        if not self.tool.spare or self.current is None or self.spare is not None:
            return
        deadline = time.monotonic() + SPARE_TIMEOUT
        seen: list[Line] = []
        while self.spare is None and (line := self.proc.next_line(deadline - time.monotonic())) is not None:
            seen.append(line)
            self._see([line])
        _extra_starts(self.res, self.tool, seen, "while waiting for the warm spare")
        if self.spare is None:
            self.res.count(f"{self.prefix}spare_missing", self.tool.name)
            self.res.note(f"{self.tool.name}: no warm spare ready within {SPARE_TIMEOUT} s of a START")


def _breakdown(t0: int, lines: list[Line], start: Line, cause: str) -> dict[str, float] | None:
    """Where an embedded-supervisor reload went, from its EVENT lines (ms per step, in time order).

    ``cause`` names the harness's action at ``t0`` ("write" or "kill"). The steps are labelled
    by the events as they happened (a supervisor may stop the old child before it reports the
    change, or a trigger has no "changed" event at all).
    """
    marks: dict[str, int] = {}
    for line in lines:
        if line.kind == "EVENT" and line.fields[0] in ("changed", "stopping", "stopped", "started"):
            marks.setdefault(line.fields[0], line.stamp_ns)
    if "started" not in marks:
        return None
    order = sorted(marks, key=marks.__getitem__)
    parts = {f"{cause}→{order[0]}": _ms(marks[order[0]] - t0)}
    for before, after in itertools.pairwise(order):
        parts[f"{before}→{after}"] = _ms(marks[after] - marks[before])
    parts[f"{order[-1]}→START"] = _ms(start.stamp_ns - marks[order[-1]])
    parts["START→read"] = _ms(start.read_ns - start.stamp_ns)
    return parts


def _extra_starts(res: Results, tool: Tool, lines: list[Line], context: str) -> None:
    starts = [ln for ln in lines if ln.kind == "START"]
    if starts:
        res.count("extra_starts", tool.name, len(starts))
        seen = ", ".join(f"pid {s.pid} v{s.version}" for s in starts)
        res.note(f"{tool.name}: {len(starts)} extra START line(s) {context}: {seen}")


def first_start(proc: Proc, tool: Tool, rnd: int, cfg: Config, res: Results, metric: str) -> Line | None:
    first, _ = proc.wait_start(START_TIMEOUT)
    if first is None:
        res.note(f"{tool.name}: no START within {START_TIMEOUT} s of launch (see logs/{tool.name}.log)")
        return None
    res.add(metric, tool.name, rnd, _ms(first.read_ns - proc.started_ns))
    _extra_starts(res, tool, proc.drain(cfg.first_settle), "during the first settle")
    return first


def stop_tool(proc: Proc, tool: Tool, rnd: int, res: Results, metric: str) -> None:
    """Scenario 5: Ctrl+C and time until the tool has exited."""
    elapsed, leftover = proc.ctrl_c(STOP_TIMEOUT)
    if elapsed is None:
        res.count(f"{metric}_timeouts", tool.name)
        res.note(f"{tool.name}: still running {STOP_TIMEOUT} s after Ctrl+C ({metric})")
    else:
        res.add(metric, tool.name, rnd, elapsed * 1000)
    if leftover:
        res.count(f"{metric}_leftovers", tool.name, len(leftover))
        res.note(f"{tool.name}: outlived the tool by more than 1 s after Ctrl+C ({metric}): {leftover}")


def edits(w: Watch, tree: Path, cfg: Config, metric: str = "edit") -> Line | None:
    """Scenario 1: 1 + ``cfg.edits`` edits; the first of a launch is kept apart (``METRIC_first``).

    The first reload is the one aioreload learns what to preload from (a plain script says
    what it imported when it exits), so it is cold; every tool's first is reported apart.
    Returns the current child's START line.
    """
    tool, rnd, res = w.tool, w.rnd, w.res
    for i in range(cfg.edits + 1):
        name = metric if i else f"{metric}_first"
        if i:
            w.await_spare()
        version = next(_versions)
        t0 = time.monotonic_ns()
        write_version(tree, version)
        line, others = w.wait_start(EDIT_TIMEOUT, str(version))
        if line is None:
            res.count(f"missed_{metric}s", tool.name)
            res.note(f"{tool.name}: edit to v{version} not answered within {EDIT_TIMEOUT} s")
            _extra_starts(res, tool, others, f"while waiting for v{version}")
            continue
        res.add(name, tool.name, rnd, _ms(line.read_ns - t0))
        res.add(f"{name}_child", tool.name, rnd, _ms(line.stamp_ns - t0))
        _extra_starts(res, tool, others, f"before v{version}")
        if i and tool.name == EMBEDDED and (parts := _breakdown(t0, others, line, "write")) is not None:
            for step, ms in parts.items():
                res.add(f"breakdown:edit:{step}", tool.name, rnd, ms)
        _extra_starts(res, tool, w.drain(cfg.settle), f"in the {cfg.settle} s after v{version}")
        if (source := w.source(line.pid)) is not None:
            res.count(f"{name}_{source}", tool.name)
    return w.current


def session(tool: Tool, tree: Path, rnd: int, cfg: Config, res: Results) -> None:
    """One round for one tool: launch, edits, triggers, Ctrl+C."""
    proc = launch(tool, tree)
    try:
        w = Watch(proc, tool, rnd, res)
        first = first_start(proc, tool, rnd, cfg, res, "startup")
        if first is None:
            return
        w.current = first
        current = edits(w, tree, cfg)
        if tool.trigger and current is not None:
            _triggers(w, current, cfg)
        stop_tool(proc, tool, rnd, res, "stop")
    finally:
        finish(proc, tool, res, "its edit session")


def burst_session(tool: Tool, tree: Path, rnd: int, cfg: Config, res: Results) -> None:
    """Scenario 3 in a launch of its own, so its aftermath cannot disturb the other figures."""
    proc = launch(tool, tree)
    try:
        if first_start(proc, tool, rnd, cfg, res, "startup_burst") is None:
            return
        for _ in range(cfg.bursts):
            _burst(proc, tool, tree, rnd, res)
        stop_tool(proc, tool, rnd, res, "stop_after_burst")
    finally:
        finish(proc, tool, res, "its burst session")


def _triggers(w: Watch, current: Line, cfg: Config) -> None:
    """Scenario 2: SIGUSR1 to the child, which asks its supervisor for a reload."""
    tool, rnd, res = w.tool, w.rnd, w.res
    for _ in range(cfg.triggers):
        w.await_spare()
        t0 = time.monotonic_ns()
        os.kill(current.pid, signal.SIGUSR1)
        line, others = w.wait_start(EDIT_TIMEOUT, not_pid=current.pid)
        if line is None:
            res.count("missed_triggers", tool.name)
            res.note(f"{tool.name}: trigger from pid {current.pid} not answered within {EDIT_TIMEOUT} s")
            break
        res.add("trigger", tool.name, rnd, _ms(line.read_ns - t0))
        if tool.name == EMBEDDED and (parts := _breakdown(t0, others, line, "kill")) is not None:
            for step, ms in parts.items():
                res.add(f"breakdown:trigger:{step}", tool.name, rnd, ms)
        _extra_starts(res, tool, others, "before the triggered START")
        current = line
        _extra_starts(res, tool, w.drain(cfg.settle), f"in the {cfg.settle} s after a trigger")
        if (source := w.source(line.pid)) is not None:
            res.count(f"trigger_{source}", tool.name)


def _burst(proc: Proc, tool: Tool, tree: Path, rnd: int, res: Results) -> None:
    """Scenario 3: 999 files then the version file, as fast as possible; count STARTs for 3 s."""
    version = next(_versions)
    paths = burst_paths(tree)
    t0 = time.monotonic_ns()
    for i, path in enumerate(paths):
        path.write_text(f"X = {version + i}\n")
    write_version(tree, version)
    written = time.monotonic_ns()
    lines = proc.drain(BURST_WINDOW - _ms(written - t0) / 1000)
    starts = [ln for ln in lines if ln.kind == "START"]
    final = [ln for ln in starts if ln.version == str(version)]
    res.add("burst_write", tool.name, rnd, _ms(written - t0))
    res.add("burst_starts", tool.name, rnd, len(starts))
    last_ok = bool(starts) and starts[-1].version == str(version)
    res.add("burst_final_ok", tool.name, rnd, 1.0 if last_ok else 0.0)
    if final:
        res.add("burst_final", tool.name, rnd, _ms(final[0].read_ns - t0))
    if not last_ok:
        last = starts[-1].version if starts else "none"
        res.note(f"{tool.name}: after the burst the last START was {last}, expected v{version}")
    _extra_starts(res, tool, proc.drain(1.0), f"in the 1 s after the {BURST_WINDOW:.0f} s burst window")


COLD = "python child.py"
COLD_IMPORT = "python child.py, importing aioreload"


def cold_start(
    n: int, rnd: int, res: Results, tree: Path, runs: tuple[tuple[str, list[str], str], ...] | None = None
) -> None:
    """The child alone: from Popen to its START line, n times per run (name, argv, import flag).

    By default ``python child.py`` with and without importing aioreload.
    """
    for _ in range(n):
        for name, argv, flag in runs or ((COLD, CHILD, "0"), (COLD_IMPORT, CHILD, "1")):
            _cold_once(name, argv, flag, rnd, res, tree)


def _cold_once(name: str, argv: list[str], flag: str, rnd: int, res: Results, tree: Path) -> None:
    env = bench_env({"BENCH_TREE": str(tree), "BENCH_IMPORT_AIORELOAD": flag})
    proc = Proc(argv, cwd=BENCH, env=env, log=WORK / "logs" / "cold.log")
    try:
        line, _ = proc.wait_start(START_TIMEOUT)
        if line is not None:
            res.add("cold", name, rnd, _ms(line.read_ns - proc.started_ns))
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.popen.wait(5)
    finally:
        proc.close()


def idle(tool: Tool, tree: Path, size: int, cfg: Config, res: Results) -> None:
    """Scenario 4: CPU and RSS of the whole tree while nothing changes."""
    proc = launch(tool, tree)
    info: dict[str, Any] = {}
    res.idle[size][tool.name] = info
    try:
        first, _ = proc.wait_start(120.0)
        if first is None:
            res.note(f"{tool.name}: no START within 120 s watching {size} files")
            return
        info["startup_ms"] = _ms(first.read_ns - proc.started_ns)
        w = Watch(proc, tool, 0, res, prefix="idle_")
        w.current = first
        w.drain(cfg.first_settle)
        # Proof that the watch is live: one edit must come back before we measure.
        version = next(_versions)
        t0 = time.monotonic_ns()
        write_version(tree, version)
        line, _ = w.wait_start(60.0, str(version))
        if line is None:
            res.note(f"{tool.name}: edit not answered within 60 s watching {size} files")
        else:
            info["edit_ms"] = _ms(line.read_ns - t0)
        w.await_spare()  # the steady state of aioreload includes its warm spare
        w.drain(cfg.idle_settle)
        child = w.current.pid if w.current is not None else None
        usage = measure_idle(proc, cfg.idle_seconds, child_pid=child)
        info.update(cpu=usage.cpu_percent, rss=usage.rss_mib, procs=usage.processes)
        if usage.spare_rss_mib is not None:
            info["spare_rss"] = usage.spare_rss_mib
        elapsed, leftover = proc.ctrl_c(STOP_TIMEOUT)
        info["stop_ms"] = None if elapsed is None else elapsed * 1000
        if leftover:
            res.note(
                f"{tool.name}: outlived the tool by more than 1 s after Ctrl+C ({size} files): {leftover}"
            )
        summary = f"cpu {usage.cpu_percent:6.2f}%  rss {usage.rss_mib:7.1f} MiB  procs {usage.processes}"
        if usage.spare_rss_mib is not None:
            summary += f"  (spare {usage.spare_rss_mib:.1f} MiB)"
        print(f"  idle {size:>6} {tool.name:<20} {summary}", flush=True)
    finally:
        finish(proc, tool, res, f"idle with {size} files")

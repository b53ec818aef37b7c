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


def launch(tool: Tool, tree: Path) -> Proc:
    env = bench_env({"BENCH_TREE": str(tree)})
    return Proc(tool.argv(tree), cwd=BENCH, env=env, log=WORK / "logs" / f"{tool.name}.log")


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


def _first_start(proc: Proc, tool: Tool, rnd: int, cfg: Config, res: Results, metric: str) -> Line | None:
    first, _ = proc.wait_start(START_TIMEOUT)
    if first is None:
        res.note(f"{tool.name}: no START within {START_TIMEOUT} s of launch (see logs/{tool.name}.log)")
        return None
    res.add(metric, tool.name, rnd, _ms(first.read_ns - proc.started_ns))
    _extra_starts(res, tool, proc.drain(cfg.first_settle), "during the first settle")
    return first


def _stop(proc: Proc, tool: Tool, rnd: int, res: Results, metric: str) -> None:
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


def session(tool: Tool, tree: Path, rnd: int, cfg: Config, res: Results) -> None:
    """One round for one tool: launch, edits, triggers, Ctrl+C."""
    proc = launch(tool, tree)
    try:
        current = _first_start(proc, tool, rnd, cfg, res, "startup")
        if current is None:
            return
        for _ in range(cfg.edits):
            version = next(_versions)
            t0 = time.monotonic_ns()
            write_version(tree, version)
            line, others = proc.wait_start(EDIT_TIMEOUT, str(version))
            if line is None:
                res.count("missed_edits", tool.name)
                res.note(f"{tool.name}: edit to v{version} not answered within {EDIT_TIMEOUT} s")
                _extra_starts(res, tool, others, f"while waiting for v{version}")
                continue
            res.add("edit", tool.name, rnd, _ms(line.read_ns - t0))
            res.add("edit_child", tool.name, rnd, _ms(line.stamp_ns - t0))
            _extra_starts(res, tool, others, f"before v{version}")
            if tool.name == EMBEDDED and (parts := _breakdown(t0, others, line, "write")) is not None:
                for step, ms in parts.items():
                    res.add(f"breakdown:edit:{step}", tool.name, rnd, ms)
            current = line
            _extra_starts(res, tool, proc.drain(cfg.settle), f"in the {cfg.settle} s after v{version}")
        if tool.trigger:
            _triggers(proc, tool, current, rnd, cfg, res)
        _stop(proc, tool, rnd, res, "stop")
    finally:
        finish(proc, tool, res, "its edit session")


def burst_session(tool: Tool, tree: Path, rnd: int, cfg: Config, res: Results) -> None:
    """Scenario 3 in a launch of its own, so its aftermath cannot disturb the other figures."""
    proc = launch(tool, tree)
    try:
        if _first_start(proc, tool, rnd, cfg, res, "startup_burst") is None:
            return
        for _ in range(cfg.bursts):
            _burst(proc, tool, tree, rnd, res)
        _stop(proc, tool, rnd, res, "stop_after_burst")
    finally:
        finish(proc, tool, res, "its burst session")


def _triggers(proc: Proc, tool: Tool, current: Line, rnd: int, cfg: Config, res: Results) -> None:
    """Scenario 2: SIGUSR1 to the child, which asks its supervisor for a reload."""
    for _ in range(cfg.triggers):
        t0 = time.monotonic_ns()
        os.kill(current.pid, signal.SIGUSR1)
        line, others = proc.wait_start(EDIT_TIMEOUT, not_pid=current.pid)
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
        _extra_starts(res, tool, proc.drain(cfg.settle), f"in the {cfg.settle} s after a trigger")


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


def cold_start(n: int, rnd: int, res: Results, tree: Path) -> None:
    """The child alone: from Popen to its START line, n times, with and without importing aioreload."""
    for _ in range(n):
        for name, flag in ((COLD, "0"), (COLD_IMPORT, "1")):
            _cold_once(name, flag, rnd, res, tree)


def _cold_once(name: str, flag: str, rnd: int, res: Results, tree: Path) -> None:
    env = bench_env({"BENCH_TREE": str(tree), "BENCH_IMPORT_AIORELOAD": flag})
    proc = Proc(CHILD, cwd=BENCH, env=env, log=WORK / "logs" / "cold.log")
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
        proc.drain(cfg.first_settle)
        # Proof that the watch is live: one edit must come back before we measure.
        version = next(_versions)
        t0 = time.monotonic_ns()
        write_version(tree, version)
        line, _ = proc.wait_start(60.0, str(version))
        if line is None:
            res.note(f"{tool.name}: edit not answered within 60 s watching {size} files")
        else:
            info["edit_ms"] = _ms(line.read_ns - t0)
        proc.drain(cfg.idle_settle)
        usage = measure_idle(proc, cfg.idle_seconds)
        info.update(cpu=usage.cpu_percent, rss=usage.rss_mib, procs=usage.processes)
        elapsed, leftover = proc.ctrl_c(STOP_TIMEOUT)
        info["stop_ms"] = None if elapsed is None else elapsed * 1000
        if leftover:
            res.note(
                f"{tool.name}: outlived the tool by more than 1 s after Ctrl+C ({size} files): {leftover}"
            )
        summary = f"cpu {usage.cpu_percent:6.2f}%  rss {usage.rss_mib:7.1f} MiB  procs {usage.processes}"
        print(f"  idle {size:>6} {tool.name:<20} {summary}", flush=True)
    finally:
        finish(proc, tool, res, f"idle with {size} files")

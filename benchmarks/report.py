"""Turning samples into markdown tables, results.md, results.json and the chart."""

from __future__ import annotations

import json
import platform
import statistics
import subprocess
import sys
from collections.abc import Sequence
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from bench_setup import BENCH, PROVENANCE, REPO, WORK, nodemon_bin
from scenarios import COLD, COLD_IMPORT, Config, Results
from tools import AIORELOAD, EMBEDDED, Tool


def median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def p90(values: Sequence[float]) -> float | None:
    if len(values) < 2:
        return values[0] if values else None
    return statistics.quantiles(values, n=10, method="inclusive")[8]


def fmt(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def paired_ratio(res: Results, metric: str, ours: str, peer: str) -> tuple[float | None, int]:
    """Median over rounds of (median of ours in that round) / (median of peer in that round)."""
    a, b = res.samples[metric][ours], res.samples[metric][peer]
    ratios = [
        statistics.median(a[r]) / statistics.median(b[r])
        for r in a
        if a[r] and b.get(r) and statistics.median(b[r]) > 0
    ]
    return (statistics.median(ratios) if ratios else None), len(ratios)


def _ratio_cell(res: Results, metric: str, tool: str) -> str:
    if tool == AIORELOAD:
        return "1 (reference)"
    ratio, n = paired_ratio(res, metric, AIORELOAD, tool)
    return "-" if ratio is None else f"{ratio:.2f} ({n} rounds)"


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _stats(values: Sequence[float]) -> list[str]:
    """n, median, p90."""
    return [str(len(values)), fmt(median(values)), fmt(p90(values))]


def _edit_table(res: Results, names: Sequence[str]) -> str:
    rows = []
    for name in names:
        rows.append(
            [
                name,
                *_stats(res.values("edit", name)),
                fmt(median(res.values("edit_child", name))),
                str(res.counts["missed_edits"][name]),
                str(res.counts["extra_starts"][name]),
                _ratio_cell(res, "edit", name),
            ]
        )
    header = ["tool", "n", "median", "p90", "median (child's clock)", "missed", "extra STARTs"]
    return table([*header, "aioreload-cli / tool"], rows)


def _trigger_table(res: Results, tools: Sequence[Tool]) -> str:
    cold = res.values("cold", COLD)
    cold_import = res.values("cold", COLD_IMPORT)
    rows = [
        [COLD + " (cold start, no tool)", *_stats(cold), "-", "-", "-"],
        [COLD_IMPORT + " (cold start, no tool)", *_stats(cold_import), "-", "-", "-"],
    ]
    for tool in tools:
        if not tool.trigger:
            continue
        values = res.values("trigger", tool.name)
        over = [
            statistics.median(values) - statistics.median(c) if values and c else None
            for c in (cold, cold_import)
        ]
        rows.append(
            [tool.name, *_stats(values), fmt(over[0]), fmt(over[1]), _ratio_cell(res, "trigger", tool.name)]
        )
    header = ["tool", "n", "median", "p90", "median minus cold median", "... minus cold-with-import median"]
    return table([*header, "aioreload-cli / tool"], rows)


def _burst_table(res: Results, names: Sequence[str]) -> str:
    rows = []
    for name in names:
        starts = res.values("burst_starts", name)
        ok = res.values("burst_final_ok", name)
        stops = res.values("stop_after_burst", name)
        rows.append(
            [
                name,
                str(len(starts)),
                ", ".join(str(int(s)) for s in starts) or "-",
                f"{int(sum(ok))}/{len(ok)}",
                fmt(median(res.values("burst_final", name))),
                fmt(median(res.values("burst_write", name))),
                f"{fmt(median(stops))} ({res.counts['stop_after_burst_timeouts'][name]} timeouts, "
                f"{res.counts['stop_after_burst_leftovers'][name]} leftover processes)",
            ]
        )
    header = ["tool", "bursts", "STARTs in 3 s (each burst)", "final version running"]
    header += ["burst start → final START, median ms", "write time, median ms"]
    return table([*header, "Ctrl+C → exit after the burst, median ms"], rows)


def _idle_table(res: Results, names: Sequence[str]) -> str:
    rows = []
    for size in sorted(res.idle):
        for name in names:
            info = res.idle[size].get(name)
            if info is None:
                continue
            rows.append(
                [
                    f"{size:,}",
                    name,
                    fmt(info.get("startup_ms")),
                    fmt(info.get("edit_ms")),
                    fmt(info.get("cpu"), 2),
                    fmt(info.get("rss"), 1),
                    str(info.get("procs", "-")),
                    fmt(info.get("stop_ms")),
                ]
            )
    header = ["files", "tool", "launch → START ms", "edit → START ms", "CPU %", "RSS MiB", "processes"]
    return table([*header, "Ctrl+C → exit ms"], rows)


def _stop_table(res: Results, names: Sequence[str]) -> str:
    rows = []
    for name in names:
        values = res.values("stop", name)
        rows.append(
            [
                name,
                *_stats(values),
                fmt(max(values) if values else None),
                str(res.counts["stop_timeouts"][name]),
                str(res.counts["stop_leftovers"][name]),
                _ratio_cell(res, "stop", name),
                fmt(median(res.values("startup", name))),
                str(res.counts["cleanup_leftovers"][name]),
            ]
        )
    header = ["tool", "n", "median", "p90", "max", "timeouts", "leftover processes", "aioreload-cli / tool"]
    return table(
        [*header, "launch → first START, median ms", "orphans killed at cleanup (all scenarios)"], rows
    )


def _breakdown_table(res: Results, what: str) -> str:
    rows = []
    prefix = f"breakdown:{what}:"
    for metric in [m for m in res.samples if m.startswith(prefix)]:  # first-seen order
        step = metric.removeprefix(prefix)
        values = res.values(metric, EMBEDDED)
        if values:
            rows.append([step, str(len(values)), fmt(median(values), 1), fmt(p90(values), 1)])
    return table(["step", "n", "median", "p90"], rows) if rows else ""


def tables(res: Results, tools: Sequence[Tool]) -> str:
    names = [t.name for t in tools]
    parts = [
        "### 1. Edit → new child's first line (ms)\n",
        _edit_table(res, names),
        "\n### 2. In-process trigger → new child's first line (ms); target: cold start + 15 ms at most\n",
        _trigger_table(res, tools),
        "\n### 3. Burst of 1,000 writes (999 files, then the version file)\n",
        _burst_table(res, names),
        "\n### 4. Idle (CPU % of one core and peak summed RSS of the whole process tree)\n",
        _idle_table(res, names),
        "\n### 5. Ctrl+C (SIGINT to the tool's process group) → tool exits (ms)\n",
        _stop_table(res, names),
    ]
    for what in ("edit", "trigger"):
        breakdown = _breakdown_table(res, what)
        if breakdown:
            title = f"Where {EMBEDDED}'s {what} latency goes (ms, from its event stream)"
            parts += [f"\n### {title}\n", breakdown]
    return "\n".join(parts) + "\n"


def _run_text(argv: list[str]) -> str:
    try:
        return subprocess.run(argv, capture_output=True, text=True, check=False, timeout=30).stdout.strip()
    except OSError:
        return "?"


def machine_info() -> dict[str, str]:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        cpu = platform.processor() or "?"
    versions = {
        pkg: _version(pkg) for pkg in ("aioreload", "watchfiles", "uvicorn", "hupper", "watchdog", "anyio")
    }
    nodemon = _run_text([str(nodemon_bin()), "--version"])
    try:
        installed = json.loads(PROVENANCE.read_text())
    except (OSError, ValueError):
        installed = {}
    uncommitted = installed.get("uncommitted") or "none"
    return {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "uname -a": _run_text(["uname", "-a"]),
        "CPU": f"{cpu}, nproc {_run_text(['nproc'])}",
        "Python": sys.version.split()[0] + f" ({sys.executable})",
        "node": _run_text(["node", "--version"]),
        "aioreload installed from": f"commit {installed.get('commit', '?')} of {REPO}, with uncommitted "
        f"changes in: {uncommitted} (installed sources sha256 {installed.get('installed_sha256', '?')})",
        "versions": ", ".join(f"{k} {v}" for k, v in versions.items()) + f", nodemon {nodemon}",
    }


def _version(pkg: str) -> str:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return "not installed"


def method(cfg: Config, tools: Sequence[Tool], command: str) -> str:
    tool_lines = "\n".join(f"- **{t.name}**: {t.note}" for t in tools)
    return f"""Command: `{command}`

Tools (each runs the same `child.py`, which prints `START <pid> <version> <monotonic_ns>` after
importing `version.py` from the watched tree, and exits 0 on SIGINT/SIGTERM):

{tool_lines}

Method:
- Rounds: {cfg.rounds}; in each round every tool runs once, in a rotated order, one at a time
  (edits {cfg.edits}, triggers {cfg.triggers}, bursts {cfg.bursts} per tool per round, then Ctrl+C).
  Ratios are aioreload-cli ÷ tool, the median over rounds of the per-round medians.
- Edit = one in-place write of `VERSION = N` to the version file; latency is from just before
  the write until the harness reads the START line carrying N from the tool's stdout pipe
  (reader thread; "child's clock" uses the child's own monotonic stamp instead).
- Fixed waits (the only sleeps): {cfg.first_settle} s after a tool's first START before the first
  edit, a {cfg.settle} s settle after each observed restart (extra START lines seen during it are
  counted as extra restarts), and {cfg.idle_settle} s before the idle measurement.
- Trigger: SIGUSR1 to the child, whose handler calls `aioreload.request_reload()` or
  `hupper.get_reloader().trigger_reload()`; measured from `kill()` to the new pid's START line.
  Cold start: `Popen(python child.py)` to its START line, outside any tool; measured both plain
  and importing aioreload first, as the child does under aioreload (to separate the import cost).
- Burst: 999 existing files in 10 folders rewritten, then the version file; START lines counted
  for 3 s from the first write.
- Idle: tree of N files (100 per folder) plus the version file; after the first START,
  {cfg.first_settle} s, one edit answered (proof the watch is live) and {cfg.idle_settle} s, CPU and
  RSS of the tool and all descendants are sampled for {cfg.idle_seconds} s (psutil; RSS is summed, so
  shared pages count once per process).
- Ctrl+C: SIGINT to the tool's process group, as a terminal sends it (for aioreload this is the
  same as signalling the tool alone: its child runs in a session of its own). Time until the tool
  process exits; descendants alive 1 s later are reported as leftovers.
"""


def write_all(
    res: Results, cfg: Config, tools: Sequence[Tool], command: str, elapsed: float, extra: str = ""
) -> str:
    """Write results.md (``extra``, the ASGI section, goes at its end), results.json and the chart."""
    body = tables(res, tools)
    info = machine_info()
    notes = "\n".join(f"- {n}" for n in res.notes) or "- none"
    text = "# aioreload benchmark results\n\n" + "\n".join(f"- {k}: {v}" for k, v in info.items())
    text += f"\n- run time: {elapsed / 60:.1f} min\n\n{method(cfg, tools, command)}\n## Results\n\n{body}"
    text += f"\n## Anomalies seen during the run\n\n{notes}\n\n![edit latency](latency.png)\n"
    if extra:
        text += "\n" + extra
    (BENCH / "results.md").write_text(text)
    raw = {
        "samples": {m: {t: dict(r) for t, r in v.items()} for m, v in res.samples.items()},
        "counts": {k: dict(v) for k, v in res.counts.items()},
        "idle": {str(k): v for k, v in res.idle.items()},
        "notes": res.notes,
        "machine": info,
    }
    (WORK / "results.json").write_text(json.dumps(raw, indent=1))
    chart(res, [t.name for t in tools], BENCH / "latency.png")
    return body


def chart(res: Results, names: Sequence[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = [(name, res.values("edit", name)) for name in names if res.values("edit", name)]
    if not data:
        return
    fig, ax = plt.subplots(figsize=(10, 5.5))
    ax.boxplot([v for _, v in data], whis=(10, 90), showfliers=False)
    for i, (_, values) in enumerate(data, start=1):
        xs = [i + 0.25 * ((j * 7919) % 100 / 100 - 0.5) for j in range(len(values))]
        ax.scatter(xs, values, s=10, alpha=0.6, zorder=3)
    ax.set_xticks(range(1, len(data) + 1), [name for name, _ in data], rotation=20, ha="right")
    ax.set_yscale("log")
    ax.set_ylabel("edit → new child's first line (ms, log scale)")
    ax.set_title("Edit → first line latency per tool (box: quartiles, whiskers: p10 to p90; dots: samples)")
    ax.grid(axis="y", which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)

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
from scenarios import COLD, COLD_IMPORT, SPARE_TIMEOUT, Config, Results
from tools import AIORELOAD, EMBEDDED, Tool

SPARE_GOAL = 0.6  # tiny child: aioreload-cli's edit → first line at most this times nodemon's


def median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def p90(values: Sequence[float]) -> float | None:
    if len(values) < 2:
        return values[0] if values else None
    return statistics.quantiles(values, n=10, method="inclusive")[8]


def fmt(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def round_ratios(res: Results, metric: str, ours: str, peer: str, peer_metric: str = "") -> list[float]:
    """Per round: (median of ours in that round) / (median of peer in that round).

    ``peer_metric`` (default: ``metric``) lets the peer be another measurement, such as a
    cold start.
    """
    a, b = res.samples[metric][ours], res.samples[peer_metric or metric][peer]
    return [
        statistics.median(a[r]) / statistics.median(b[r])
        for r in sorted(a)
        if a[r] and b.get(r) and statistics.median(b[r]) > 0
    ]


def paired_ratio(res: Results, metric: str, ours: str, peer: str) -> tuple[float | None, int]:
    """Median over rounds of (median of ours in that round) / (median of peer in that round)."""
    ratios = round_ratios(res, metric, ours, peer)
    return (statistics.median(ratios) if ratios else None), len(ratios)


def verdict(per_round: Sequence[float], limit: float) -> str:
    """A goal "at most ``limit``" judged on the median over rounds, and on every round."""
    if not per_round:
        return "not measured"
    if all(x <= limit for x in per_round):
        return "met"
    return "met on the median, not in every round" if statistics.median(per_round) <= limit else "NOT met"


def ratio_goal(text: str, per_round: Sequence[float], limit: float) -> str:
    """One goal line: the text, the verdict, the median ratio and each round's."""
    ratio = statistics.median(per_round) if per_round else None
    rounds = ", ".join(f"{x:.2f}" for x in per_round) or "-"
    return (
        f"- {text}: **{verdict(per_round, limit)}** (ratio {fmt(ratio, 2)}, median over "
        f"{len(per_round)} round(s); per round: {rounds})."
    )


def spare_cell(res: Results, metric: str, name: str) -> str:
    """Reloads started from the warm spare, of those whose start aioreload reported."""
    spare, cold = res.counts[f"{metric}_spare"][name], res.counts[f"{metric}_cold"][name]
    return f"{spare}/{spare + cold}" if spare + cold else "-"


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


def first_cell(res: Results, metric: str, name: str) -> str:
    """A launch's first reload: median (n), with how many aioreload started from a spare."""
    values = res.values(f"{metric}_first", name)
    spare = spare_cell(res, f"{metric}_first", name)
    return f"{fmt(median(values))} ({len(values)})" + (f", spare {spare}" if spare != "-" else "")


def _edit_table(res: Results, names: Sequence[str]) -> str:
    rows = []
    for name in names:
        rows.append(
            [
                name,
                first_cell(res, "edit", name),
                *_stats(res.values("edit", name)),
                fmt(median(res.values("edit_child", name))),
                spare_cell(res, "edit", name),
                str(res.counts["missed_edits"][name]),
                str(res.counts["extra_starts"][name]),
                _ratio_cell(res, "edit", name),
            ]
        )
    header = ["tool", "first reload: median (n)", "n", "median", "p90", "median (child's clock)"]
    header += ["from spare", "missed", "extra STARTs"]
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
            [
                tool.name,
                *_stats(values),
                fmt(over[0]),
                fmt(over[1]),
                spare_cell(res, "trigger", tool.name),
                _ratio_cell(res, "trigger", tool.name),
            ]
        )
    for row in rows[:2]:
        row.insert(-1, "-")
    header = ["tool", "n", "median", "p90", "median minus cold median", "... minus cold-with-import median"]
    return table([*header, "from spare", "aioreload-cli / tool"], rows)


def _burst_table(res: Results, names: Sequence[str]) -> str:
    rows = []
    for name in names:
        starts = res.values("burst_starts", name)
        if not starts and not res.values("startup_burst", name):
            continue  # not in the burst scenario
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
                    fmt(info.get("spare_rss"), 1),
                    str(info.get("procs", "-")),
                    fmt(info.get("stop_ms")),
                ]
            )
    header = ["files", "tool", "launch → START ms", "edit → START ms", "CPU %", "RSS MiB"]
    return table([*header, "of which the warm spare, MiB", "processes", "Ctrl+C → exit ms"], rows)


def spare_table(res: Results, tools: Sequence[Tool], prefix: str = "") -> str:
    """The warm spare of the aioreload rows: how soon it was ready, what it held ("" if none)."""
    rows = []
    for tool in tools:
        if not tool.spare:
            continue
        name = tool.name
        rows.append(
            [
                name,
                str(len(res.values(f"{prefix}spare_wait", name))),
                fmt(median(res.values(f"{prefix}spare_wait", name))),
                fmt(median(res.values(f"{prefix}spare_preload", name))),
                fmt(median(res.values(f"{prefix}spare_modules", name))),
                fmt(median(res.values(f"{prefix}spare_mib", name))),
                str(res.counts[f"{prefix}spare_missing"][name]),
            ]
        )
    header = ["tool", "spares ready", "child's START → spare ready, median ms", "preload, median ms"]
    header += ["modules preloaded", "spare RSS when ready (its `-v` line), median MiB"]
    return table([*header, f"no spare within {SPARE_TIMEOUT:g} s"], rows) if rows else ""


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


SUMMARY_LABELS = {
    AIORELOAD: "aioreload CLI",
    "aioreload-cli-no-spare": "aioreload --no-spare",
    "uvicorn": "uvicorn --reload",
}
SUMMARY_SKIP = ("aioreload-cli-d0.01", EMBEDDED)


def summary(res: Results, names: Sequence[str]) -> str:
    """Tools as columns, as in README.md's benchmark table."""
    cols = [n for n in names if n not in SUMMARY_SKIP]
    size = max(res.idle) if res.idle else None

    def idle(name: str, key: str, digits: int, unit: str = "") -> str:
        info = res.idle[size].get(name, {}) if size is not None else {}
        return fmt(info.get(key), digits) + unit if info.get(key) is not None else "-"

    def burst(name: str) -> str:
        starts = res.values("burst_starts", name)
        if not starts:
            return "-"
        ok = res.values("burst_final_ok", name)
        each = "1 each" if all(n == 1 for n in starts) else ", ".join(str(int(n)) for n in starts)
        return f"{each}, {int(sum(ok))}/{len(ok)}"

    def edit(name: str) -> str:
        values = res.values("edit", name)
        return f"{fmt(median(values))} ({fmt(p90(values))})"

    rows = [
        ["edit → first line, median (p90) ms", *(edit(n) for n in cols)],
        ["ratio aioreload ÷ peer", *(_ratio_cell(res, "edit", n).split(" ")[0] for n in cols)],
        ["a launch's first reload, median ms", *(fmt(median(res.values("edit_first", n))) for n in cols)],
        [
            "in-process trigger → first line, median ms",
            *(fmt(median(res.values("trigger", n))) for n in cols),
        ],
        ["1,000-file burst: restarts, final content", *(burst(n) for n in cols)],
        [f"idle CPU, {size:,} files" if size else "idle CPU", *(idle(n, "cpu", 2, " %") for n in cols)],
        ["idle RSS of the process tree, MiB", *(idle(n, "rss", 1) for n in cols)],
        ["… of which the warm spare, MiB", *(idle(n, "spare_rss", 1) for n in cols)],
        ["Ctrl+C → exit, median ms", *(fmt(median(res.values("stop", n))) for n in cols)],
    ]
    return table(["", *(SUMMARY_LABELS.get(n, n) for n in cols)], rows)


def goals(res: Results, names: Sequence[str]) -> str:
    """The reload scenario's goals, each stated as met or not."""
    lines = []
    if AIORELOAD in names and "nodemon" in names:
        lines.append(
            ratio_goal(
                f"Tiny child: aioreload-cli's edit → first line ≤ {SPARE_GOAL} times nodemon's (reloads "
                "after a launch's first, the warm spare ready)",
                round_ratios(res, "edit", AIORELOAD, "nodemon"),
                SPARE_GOAL,
            )
        )
    else:
        lines.append(
            f"- Tiny child: aioreload-cli's edit → first line ≤ {SPARE_GOAL} times nodemon's: not measured."
        )
    cold = res.values("cold", COLD_IMPORT)
    trigger = res.values("trigger", AIORELOAD)
    if cold and trigger:
        over = statistics.median(trigger) - statistics.median(cold)
        met = "met" if over <= 15 else "NOT met"
        lines.append(
            f"- aioreload-cli's in-process trigger → first line ≤ the cold start (importing aioreload) "
            f"+ 15 ms: **{met}** ({fmt(statistics.median(trigger))} ms against "
            f"{fmt(statistics.median(cold))} ms, medians)."
        )
    return "\n".join(lines)


def tables(res: Results, tools: Sequence[Tool]) -> str:
    names = [t.name for t in tools]
    parts = [
        "### Summary (README.md's table)\n",
        summary(res, names),
        "\n### 1. Edit → new child's first line (ms)\n",
        "A launch's first reload is apart (aioreload learns what to preload from the first child, "
        "when it exits: that reload is cold); the other columns are the reloads after it.\n",
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
    spare = spare_table(res, tools)
    if spare:
        parts += ["\n### The warm spare (aioreload rows with spares on; edit and trigger sessions)\n", spare]
    parts += ["\n### Goals\n", goals(res, names)]
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
  (1 + {cfg.edits} edits, {cfg.triggers} triggers, bursts {cfg.bursts} per tool per round, then Ctrl+C).
  Ratios are aioreload-cli ÷ tool, the median over rounds of the per-round medians.
- Edit = one in-place write of `VERSION = N` to the version file; latency is from just before
  the write until the harness reads the START line carrying N from the tool's stdout pipe
  (reader thread; "child's clock" uses the child's own monotonic stamp instead).
- The first edit of each launch is reported apart ("first reload"), for every tool, and left out
  of the medians, p90s and ratios: aioreload learns what its warm spare preloads from the
  first child (a plain script reports its imports when it exits), so its first reload is cold
  by design, while every later one can start from the spare.
- Warm spare (aioreload rows marked spare on): a plain script's spare is prepared 2 s after
  its child started, so before every edit and trigger but a launch's first the harness waits
  until aioreload says the spare is ready (the CLI's `-v` line `spare [pid N] ready: K modules,
  M MiB preloaded in T ms` on stderr, embedded.py's `spare-ready` event; at most
  {SPARE_TIMEOUT:g} s), as a person who edits seconds apart gets it. Whether each reload started from
  the spare comes from aioreload's status line (`started from spare in N ms`) or the `started`
  event ("from spare" columns). `-v` adds a few debug lines to stderr per reload; the
  `--no-spare` row runs with `-v` too.
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
  {cfg.first_settle} s, one edit answered (proof the watch is live), for aioreload its warm spare
  ready, and {cfg.idle_settle} s, CPU and RSS of the tool and all descendants are sampled for
  {cfg.idle_seconds} s (psutil; RSS is summed, so shared pages count once per process). The warm
  spare's part is the peak RSS of the process in aioreload's tree that runs `_sparechild.py`
  and is not the current child (the pid of the last START line).
- Ctrl+C: SIGINT to the tool's process group, as a terminal sends it (for aioreload this is the
  same as signalling the tool alone: its child runs in a session of its own). Time until the tool
  process exits; descendants alive 1 s later are reported as leftovers.
"""


def write_all(
    res: Results, cfg: Config, tools: Sequence[Tool], command: str, elapsed: float, extra: str = ""
) -> str:
    """Write results.md (``extra``: the heavy and ASGI sections, at its end), results.json, the chart."""
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


# -- sections of results.md that a scenario run alone replaces (between two markers) -----------

RESULTS = BENCH / "results.md"


def existing_section(begin: str, end: str) -> str:
    """The section of the current results.md between these markers (included), or ``""``."""
    try:
        text = RESULTS.read_text()
    except OSError:
        return ""
    first, last = text.find(begin), text.find(end)
    return text[first : last + len(end)] + "\n" if 0 <= first < last else ""


def replace_section(begin: str, end: str, new: str, *, before: str = "") -> None:
    """Replace that section of results.md, leaving the rest as it is.

    Without one, the section goes just before the marker ``before`` if there is one, else at
    the end.
    """
    try:
        text = RESULTS.read_text()
    except OSError:
        text = "# aioreload benchmark results\n"
    first, last = text.find(begin), text.find(end)
    if 0 <= first < last:
        text = text[:first] + new.rstrip("\n") + text[last + len(end) :]
    elif before and (at := text.find(before)) >= 0:
        text = text[:at] + new.rstrip("\n") + "\n\n" + text[at:]
    else:
        text = text.rstrip("\n") + "\n\n" + new
    RESULTS.write_text(text)

"""The ASGI scenario's tables, goals and its section of results.md (between two markers)."""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from importlib import metadata

from asgi import BROKEN, FD, OURS, SERVE, SPARE_TIMEOUT, AsgiConfig, AsgiTool
from asgi_http import LOAD_PATHS, POLL_INTERVAL, REQUEST_TIMEOUT, RETRY_PAUSE
from bench_setup import WORK
from report import (
    existing_section as _existing,
)
from report import (
    fmt,
    machine_info,
    median,
    p90,
    paired_ratio,
    ratio_goal,
    replace_section,
    round_ratios,
    table,
)
from scenarios import Results

BEGIN = "<!-- asgi:begin -->"
END = "<!-- asgi:end -->"
EDIT_GOAL = 0.2  # edit → first new response: aioreload serve at most this times uvicorn --reload
PACKAGES = ("aioreload", "uvicorn", "watchfiles", "fastapi", "starlette", "pydantic", "sqlalchemy")
LABELS = {
    SERVE: "aioreload serve",
    FD: "aioreload + uvicorn --fd",
    "uvicorn": "uvicorn --reload",
    "watchfiles": "watchfiles",
}


def _ratio(res: Results, metric: str, ours: str, peer: str) -> str:
    if peer == ours:
        return "1"
    if not res.samples[metric][ours] or not res.samples[metric][peer]:
        return "-"
    ratio, n = paired_ratio(res, metric, ours, peer)
    return "-" if ratio is None else f"{ratio:.2f} ({n})"


def _failures(res: Results, prefix: str, name: str) -> str:
    kinds = {
        k.removeprefix(prefix): v[name] for k, v in res.counts.items() if k.startswith(prefix) and v[name]
    }
    return ", ".join(f"{n} {kind}" for kind, n in sorted(kinds.items(), key=lambda kv: -kv[1])) or "-"


def _round_values(res: Results, metric: str, name: str) -> list[float]:
    """One value per round (the metrics that have one: counts and maxima)."""
    return [v for r in sorted(res.samples[metric][name]) for v in res.samples[metric][name][r]]


def _edit_table(res: Results, names: Sequence[str]) -> str:
    rows = []
    for name in names:
        values = res.values("asgi_edit", name)
        rows.append(
            [
                name,
                fmt(median(res.values("asgi_startup", name))),
                str(len(values)),
                fmt(median(values)),
                fmt(p90(values)),
                str(res.counts["asgi_edit_missed"][name]),
                str(res.counts["asgi_edit_polls_failed"][name]),
                _spare_cell(res, name),
                _ratio(res, "asgi_edit", SERVE, name),
                _ratio(res, "asgi_edit", FD, name),
            ]
        )
    header = ["tool", "launch → first answer, median", "edits", "median", "p90", "missed", "failed polls"]
    header += ["from the warm spare: these edits; all reloads of the launches"]
    return table([*header, "aioreload-serve ÷ tool", "aioreload-fd ÷ tool"], rows)


def _spare_cell(res: Results, name: str) -> str:
    edits, starts = _from_spare(res, "asgi_edit", name), _from_spare(res, "asgi_starts", name)
    return "-" if edits == starts == "-" else f"{edits}; {starts}"


def _from_spare(res: Results, metric: str, name: str) -> str:
    spare, cold = res.counts[f"{metric}_spare"][name], res.counts[f"{metric}_cold"][name]
    return f"{spare}/{spare + cold}" if spare + cold else "-"


def _load_table(res: Results, names: Sequence[str]) -> str:
    rows = []
    for name in names:
        worst = _round_values(res, "asgi_load_worst", name)
        served = len(res.values("asgi_load_reload", name))
        rows.append(
            [
                name,
                f"{served}/{served + res.counts['asgi_load_missed'][name]}",
                fmt(median(res.values("asgi_load_reload", name))),
                fmt(sum(_round_values(res, "asgi_load_requests", name))),
                fmt(sum(_round_values(res, "asgi_load_failed", name))),
                _failures(res, "asgi_load_failed:", name),
                fmt(sum(_round_values(res, "asgi_load_stale", name))),
                fmt(median(_round_values(res, "asgi_load_median", name)), 1),
                fmt(median(_round_values(res, "asgi_load_p99", name))),
                f"{fmt(median(worst))} ({fmt(max(worst) if worst else None)})",
                _ratio(res, "asgi_load_worst", SERVE, name),
                _ratio(res, "asgi_load_worst", FD, name),
            ]
        )
    header = ["tool", "reloads served", "edit → new version seen, median", "requests", "failed"]
    header += ["failed by kind", "stale answers", "latency median", "p99", "worst: median over rounds (max)"]
    return table([*header, "aioreload-serve ÷ tool (worst)", "aioreload-fd ÷ tool (worst)"], rows)


def _broken_table(res: Results, names: Sequence[str]) -> str:
    rows = []
    for name in names:
        share = _round_values(res, "asgi_broken_share", name)
        rows.append(
            [
                name,
                str(len(share)),
                fmt(median(_round_values(res, "asgi_broken_polls", name))),
                f"{fmt(median(share), 1)} ({fmt(min(share) if share else None, 1)})",
                _failures(res, "asgi_broken_failed:", name),
                fmt(median(res.values("asgi_restore", name))),
                str(res.counts["asgi_restore_missed"][name]),
                fmt(median(res.values("asgi_stop", name))),
            ]
        )
    header = ["tool", "broken saves", "polls per save", "answered 200 %: median over rounds (worst)"]
    header += ["failed polls by kind", "fix → good version served, median ms", "fix not served"]
    return table([*header, "Ctrl+C → exit, median ms"], rows)


def summary(res: Results, names: Sequence[str]) -> str:
    """Tools as columns, as in README.md's benchmark table."""

    def row(label: str, cell: Sequence[str]) -> list[str]:
        return [label, *cell]

    edit = [
        f"{fmt(median(res.values('asgi_edit', n)))} ({fmt(p90(res.values('asgi_edit', n)))})" for n in names
    ]
    failed = [
        f"{fmt(sum(_round_values(res, 'asgi_load_failed', n)))} / "
        f"{fmt(sum(_round_values(res, 'asgi_load_requests', n)))}"
        for n in names
    ]
    worst = [fmt(median(_round_values(res, "asgi_load_worst", n))) for n in names]
    share = [f"{fmt(median(_round_values(res, 'asgi_broken_share', n)), 1)} %" for n in names]

    def ratios(metric: str) -> list[str]:
        return [_ratio(res, metric, SERVE, n).split(" ")[0] for n in names]

    rows = [
        row("edit → new version served, median (p90) ms", edit),
        row("ratio aioreload serve ÷ peer", ratios("asgi_edit")),
        row("under load: failed / requests", failed),
        row("under load: worst request latency, ms", worst),
        row("ratio aioreload serve ÷ peer", ratios("asgi_load_worst")),
        row("broken save: polls answered", share),
        row("fix → good version served, ms", [fmt(median(res.values("asgi_restore", n))) for n in names]),
    ]
    return table(["", *(LABELS.get(n, n) for n in names)], rows)


def _verdict(values: Sequence[float], ok: bool, all_ok: bool) -> str:
    if not values:
        return "not measured"
    return "met" if all_ok else "met on the median, not in every round" if ok else "NOT met"


def goals(res: Results, names: Sequence[str]) -> str:
    lines = []
    if SERVE in names and "uvicorn" in names:
        lines.append(
            ratio_goal(
                f"Edit → first response with the new code, aioreload-serve ≤ {EDIT_GOAL} times "
                "uvicorn --reload's (one client polling; table 1)",
                round_ratios(res, "asgi_edit", SERVE, "uvicorn"),
                EDIT_GOAL,
            )
        )
    else:
        lines.append(
            f"- Edit → first new response, aioreload-serve ≤ {EDIT_GOAL} times uvicorn's: not measured."
        )
    if SERVE in names and "uvicorn" in names:
        ratio, n = paired_ratio(res, "asgi_load_worst", SERVE, "uvicorn")
        per_round = [
            res.samples["asgi_load_worst"][SERVE][r][0] / res.samples["asgi_load_worst"]["uvicorn"][r][0]
            for r in res.samples["asgi_load_worst"][SERVE]
            if res.samples["asgi_load_worst"]["uvicorn"].get(r)
        ]
        verdict = _verdict(per_round, ratio is not None and ratio <= 0.3, all(x <= 0.3 for x in per_round))
        lines.append(
            f"- Worst request latency under load, aioreload-serve ≤ 0.3 times uvicorn --reload's: "
            f"**{verdict}** (ratio {fmt(ratio, 2)}, median over {n} rounds; per round: "
            f"{', '.join(f'{x:.2f}' for x in per_round) or '-'})."
        )
    else:
        lines.append(
            "- Worst request latency under load, aioreload-serve ≤ 0.3 times uvicorn's: not measured."
        )
    for name in OURS:
        share = _round_values(res, "asgi_broken_share", name)
        ok = bool(share) and statistics.median(share) >= 99.0
        lines.append(
            f"- {name}: share of polls answered after a broken save ≥ 99 %: "
            f"**{_verdict(share, ok, all(s >= 99.0 for s in share))}** "
            f"(per round: {', '.join(f'{s:.1f} %' for s in share) or '-'})."
        )
    for name in OURS:
        failed = _round_values(res, "asgi_load_failed", name)
        ok = bool(failed) and sum(failed) == 0
        lines.append(
            f"- {name}: 0 failed requests under load: **{_verdict(failed, ok, ok)}** "
            f"({fmt(sum(failed)) if failed else '-'} failed of "
            f"{fmt(sum(_round_values(res, 'asgi_load_requests', name)))})."
        )
    return "\n".join(lines)


def tables(res: Results, tools: Sequence[AsgiTool], cfg: AsgiConfig) -> str:
    names = [t.name for t in tools]
    return "\n".join(
        [
            summary(res, names),
            "\n#### 1. Edit → first response with the new code (ms; one client polling `GET /`)\n",
            _edit_table(res, names),
            f"\n#### 2. Under load: {cfg.clients} clients, {cfg.reloads} reloads per round (ms)\n",
            _load_table(res, names),
            f"\n#### 3. Broken save: open-loop polls for {cfg.broken_window:g} s, then the fix\n",
            _broken_table(res, names),
            "\n#### Goals\n",
            goals(res, names),
        ]
    )


def section(res: Results, tools: Sequence[AsgiTool], cfg: AsgiConfig, command: str, elapsed: float) -> str:
    """The whole ASGI section of results.md, markers included."""
    info = machine_info()
    versions = ", ".join(f"{pkg} {_version(pkg)}" for pkg in PACKAGES)
    notes = "\n".join(f"- {n}" for n in res.notes) or "- none"
    tool_lines = "\n".join(f"- **{t.name}**: {t.note}" for t in tools)
    method = f"""Run {info["date"]}, command `{command}` ({elapsed / 60:.1f} min for this scenario);
{info["CPU"]}; Python {info["Python"]}; {versions}; aioreload installed from
{info["aioreload installed from"]}.

The app (`benchmarks/asgi_fastapi/`, copied into a fresh watched tree per launch): FastAPI with
pydantic models and a SQLAlchemy 2.0 ORM on in-memory SQLite created in the lifespan; `GET /`
answers the VERSION of `version.py` in the tree, `GET /owners` reads the database. Its cold
start (imports and lifespan) is about 1 s on this machine. Every tool serves `app:app` on
127.0.0.1 at a free port, with the tree as its working folder:

{tool_lines}

Method: {cfg.rounds} round(s); each tool once per round, in a rotated order, one launch per
tool and round for the three measurements, then Ctrl+C. Every request opens a new TCP
connection (`Connection: close`, {REQUEST_TIMEOUT:g} s timeout) and its latency runs from
before `connect` to the complete response; a failure is a refused or reset connection, a
timeout or a status other than 200. Ratios are aioreload ÷ tool, the median over rounds of each
round's figure (in parentheses: how many rounds).
1. Edit: one write of `VERSION = N`; one client polls `GET /` ({POLL_INTERVAL * 1000:g} ms between
   polls) until the body is N; {cfg.edits} edits per round, a {cfg.settle:g} s settle after each.
   Before each edit the aioreload rows also wait until their warm spare is ready (the `-v` line
   `spare [pid N] ready`, read back from the log; at most {SPARE_TIMEOUT:g} s), as with edits
   seconds apart: serve's children report ready, so its spare is prepared as soon as each has
   started and preloads the app's libraries (about a second here); uvicorn `--fd` does not
   report ready, so that row's first edit of a launch is cold and its spare is prepared 2 s
   after each start. The under-load reloads below do not wait: a reload that comes while the
   spare is still preloading waits for it instead.
2. Under load: {cfg.clients} clients request {" and ".join(f"`{p}`" for p in LOAD_PATHS)} in turn
   without pause ({RETRY_PAUSE * 1000:g} ms after a failure); after {cfg.warmup:g} s, {cfg.reloads}
   edits, each as soon as a load client has been answered with the previous one; the load goes on
   {cfg.tail:g} s after the last. Stale answers: `GET /` answered with an older version than one
   already served before that request began.
3. Broken save: `{BROKEN.strip()}` written into `version.py` (which the app imports); a poll of
   `GET /` is started every {POLL_INTERVAL * 1000:g} ms for {cfg.broken_window:g} s, whether or not
   earlier ones were answered; the share answered with 200 once all have ended. Then the fix (a
   good `VERSION = N`), and the time until N is served.
Fixed waits (the only sleeps): {cfg.first_settle:g} s after the first answer, {cfg.settle:g} s after
each edit and between the scenarios, plus the load's warm-up and tail above.
"""
    body = tables(res, tools, cfg)
    return (
        f"{BEGIN}\n## ASGI serving: reloads of a FastAPI app while it serves\n\n{method}\n{body}\n\n"
        f"#### Anomalies seen during the ASGI scenario\n\n{notes}\n{END}\n"
    )


def _version(pkg: str) -> str:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return "not installed"


def existing_section() -> str:
    """The ASGI section of the current results.md, or ``""``."""
    return _existing(BEGIN, END)


def update_results_md(new: str) -> None:
    """Replace the ASGI section of results.md (or append one), leaving the rest as it is."""
    replace_section(BEGIN, END, new)


def save_json(res: Results) -> None:
    raw = {
        "samples": {m: {t: dict(r) for t, r in v.items()} for m, v in res.samples.items()},
        "counts": {k: dict(v) for k, v in res.counts.items()},
        "notes": res.notes,
    }
    (WORK / "asgi-results.json").write_text(json.dumps(raw, indent=1))

"""Benchmark aioreload against watchfiles, uvicorn --reload, hupper and nodemon.

Usage: ``python benchmarks/run.py [--quick] [--scenario reload|heavy|asgi]`` from anywhere,
with any Python >= 3.10. The first step creates benchmarks/.work/venv (peers, psutil,
matplotlib, the ASGI app's packages, the generated ``benchheavy`` package, aioreload from this
checkout) and benchmarks/.work/node (nodemon), then re-runs this script with that venv's
Python. ``--scenario heavy`` runs only the heavy-dependency scenario (heavy.py) and
``--scenario asgi`` only the ASGI serving scenario (asgi.py); each replaces only its own
section of results.md.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import signal
import sys
import time
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_setup  # stdlib only; everything else needs the benchmark venv

if TYPE_CHECKING:
    from scenarios import Config, Results
    from tools import Tool

Names = list[str] | None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="1 round per scenario; idle with 10,000 files only; 6 ASGI reloads under load",
    )
    parser.add_argument(
        "--scenario",
        choices=("all", "reload", "heavy", "asgi"),
        default="all",
        help="reload: the child-process scenarios with the tiny child only; heavy: the heavy-dependency "
        "scenario only; asgi: the ASGI serving scenario only (default: all three)",
    )
    parser.add_argument("--tools", help="comma-separated subset of tools, of any scenario (default: all)")
    parser.add_argument("--rounds", type=int, help="override the number of rounds")
    parser.add_argument(
        "--edits",
        type=int,
        help="override edits per tool per round after each launch's first (default 4), "
        "and triggers (ASGI: edits, default 5)",
    )
    parser.add_argument("--reloads", type=int, help="override the ASGI scenario's reloads under load")
    parser.add_argument("--no-idle", action="store_true", help="skip the idle scenario")
    parser.add_argument("--no-setup", action="store_true", help=argparse.SUPPRESS)
    return parser


def _in_bench_venv() -> bool:
    return Path(sys.prefix).resolve() == bench_setup.VENV.resolve()


def _raise_interrupt(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _names(args: argparse.Namespace) -> tuple[Names, Names, Names]:
    """``--tools`` split between the three tool lists (``None``: all of that list)."""
    import asgi
    import tools

    if not args.tools:
        return None, None, None
    names = args.tools.split(",")
    classic = {t.name for t in tools.TOOLS}
    heavy = {t.name for t in tools.HEAVY_TOOLS}
    served = {t.name for t in asgi.ASGI_TOOLS}
    unknown = set(names) - classic - heavy - served
    if unknown:
        raise SystemExit(f"unknown tools: {sorted(unknown)}; known: {sorted(classic | heavy | served)}")
    return (
        [n for n in names if n in classic],
        [n for n in names if n in heavy],
        [n for n in names if n in served],
    )


def _config(args: argparse.Namespace) -> Config:
    import scenarios

    quick = args.quick
    edits = args.edits or 4  # after each launch's first edit, which is reported apart
    return scenarios.Config(
        rounds=args.rounds or (1 if quick else 5),
        edits=edits,
        triggers=edits,
        bursts=1,
        settle=0.3,
        first_settle=1.5,
        idle_sizes=() if args.no_idle else ((10_000,) if quick else (10_000, 100_000)),
        idle_seconds=3.0 if quick else 10.0,
        idle_settle=1.0 if quick else 3.0,
    )


def _classic(args: argparse.Namespace, names: Names) -> tuple[Results, Config, list[Tool]] | None:
    """The child-process scenarios; their results, config and tools (``None``: no tool chosen)."""
    import scenarios
    import tools
    from bench_setup import WORK

    if names == []:
        return None
    cfg = _config(args)
    rounds, edits = cfg.rounds, cfg.edits
    chosen = tools.select(names)
    res = scenarios.Results()
    trees = {t.name: tools.tool_tree(t) for t in chosen}
    cold_tree = next(iter(trees.values()))
    for rnd in range(rounds):
        print(f"round {rnd + 1}/{rounds}", flush=True)
        scenarios.cold_start(edits, rnd, res, cold_tree)
        for tool in chosen[rnd % len(chosen) :] + chosen[: rnd % len(chosen)]:
            print(f"  {tool.name}", flush=True)
            scenarios.session(tool, trees[tool.name], rnd, cfg, res)
            if tool.burst:
                scenarios.burst_session(tool, trees[tool.name], rnd, cfg, res)
    idle_tools = [t for t in chosen if t.idle]
    for k, size in enumerate(cfg.idle_sizes):
        print(f"idle tree with {size:,} files", flush=True)
        tree = tools.make_tree(WORK / f"idle-{size}", size, folder="files")
        for tool in idle_tools[k % len(idle_tools) :] + idle_tools[: k % len(idle_tools)]:
            scenarios.idle(tool, tree, size, cfg, res)
    return res, cfg, chosen


def _heavy(args: argparse.Namespace, names: Names, command: str) -> str:
    """The heavy-dependency scenario; its section of results.md ("" when no tool of it was chosen)."""
    import heavy
    import heavy_report
    import scenarios

    if names == []:
        return ""
    began = time.monotonic()
    cfg = _config(args)
    res = scenarios.Results()
    chosen = heavy.select(names)
    if chosen:
        heavy.run(chosen, cfg, res)
    heavy_report.save_json(res)
    return heavy_report.section(res, chosen, cfg, command, time.monotonic() - began)


def _asgi(args: argparse.Namespace, names: Names, command: str) -> str:
    """The ASGI serving scenario; its section of results.md ("" when no tool of it was chosen)."""
    import asgi
    import asgi_report
    import scenarios

    if names == []:
        return ""
    began = time.monotonic()
    cfg = asgi.AsgiConfig(
        rounds=args.rounds or (1 if args.quick else 3),
        edits=args.edits or 5,
        reloads=args.reloads or (6 if args.quick else 12),
    )
    res = scenarios.Results()
    chosen = asgi.select(names, res)
    if chosen:
        asgi.run(chosen, cfg, res)
    asgi_report.save_json(res)
    return asgi_report.section(res, chosen, cfg, command, time.monotonic() - began)


def bench(args: argparse.Namespace, command: str) -> int:
    import asgi_report
    import heavy_report
    import procs
    import report
    from bench_setup import WORK

    classic_names, heavy_names, asgi_names = _names(args)
    (WORK / "logs").mkdir(parents=True, exist_ok=True)
    for log in (WORK / "logs").glob("*.log"):
        log.unlink()
    began = time.monotonic()
    # Ctrl+C must always interrupt (a shell starts background jobs with SIGINT ignored).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    signal.signal(signal.SIGHUP, _raise_interrupt)
    try:
        classic = _classic(args, classic_names) if args.scenario in ("all", "reload") else None
        heavy = _heavy(args, heavy_names, command) if args.scenario in ("all", "heavy") else ""
        served = _asgi(args, asgi_names, command) if args.scenario in ("all", "asgi") else ""
        if classic is not None:
            res, cfg, chosen = classic
            # A run without the heavy or ASGI scenario keeps the section results.md already has.
            sections = (heavy or heavy_report.existing_section(), served or asgi_report.existing_section())
            extra = "\n".join(part.strip("\n") + "\n" for part in sections if part.strip())
            body = report.write_all(res, cfg, chosen, command, time.monotonic() - began, extra)
            print()
            print(body)
            print(f"wrote {bench_setup.BENCH / 'results.md'} and {bench_setup.BENCH / 'latency.png'}")
        else:
            if heavy:
                heavy_report.update_results_md(heavy)
            if served:
                asgi_report.update_results_md(served)
        for title, text in (("heavy-dependency", heavy), ("ASGI", served)):
            if text:
                print()
                print(text)
                print(f"wrote the {title} section of {bench_setup.BENCH / 'results.md'}")
        return 0
    finally:
        left = procs.sweep()
        if left:
            print(f"cleanup: killed {len(left)} leftover process(es):", *left, sep="\n  ", flush=True)
        else:
            print("cleanup: no process of this run is left", flush=True)


LOCK_ENV = "AIORELOAD_BENCH_LOCK_FD"


def _lock() -> bool:
    """One run at a time: runs share benchmarks/.work (venv, trees, logs) and the CPU.

    The lock is an flock on an inherited descriptor, so it survives the exec into the venv.
    """
    if os.environ.get(LOCK_ENV):
        return True
    bench_setup.WORK.mkdir(exist_ok=True)
    fd = os.open(bench_setup.WORK / "run.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = Path(bench_setup.WORK / "run.lock").read_text().strip() or "?"
        print(
            f"another benchmark run (pid {holder}) is using {bench_setup.WORK}; try again later",
            file=sys.stderr,
        )
        os.close(fd)
        return False
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())
    os.set_inheritable(fd, True)
    os.environ[LOCK_ENV] = str(fd)
    return True


def main() -> int:
    args = _parser().parse_args()
    command = " ".join(["python benchmarks/run.py", *(a for a in sys.argv[1:] if a != "--no-setup")])
    if not _lock():
        return 1
    if not _in_bench_venv():
        if not args.no_setup:
            bench_setup.ensure()
        python = str(bench_setup.venv_python())
        os.execv(python, [python, str(Path(__file__).resolve()), *sys.argv[1:], "--no-setup"])
    try:
        return bench(args, command)
    except KeyboardInterrupt:
        print("interrupted; every process started was killed", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

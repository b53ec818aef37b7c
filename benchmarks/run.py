"""Benchmark aioreload against watchfiles, uvicorn --reload, hupper and nodemon.

Usage: ``python benchmarks/run.py [--quick]`` from anywhere, with any Python >= 3.10. The first
step creates benchmarks/.work/venv (peers, psutil, matplotlib, aioreload from this checkout) and
benchmarks/.work/node (nodemon), then re-runs this script with that venv's Python.
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

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_setup  # stdlib only; everything else needs the benchmark venv


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="1 round of 5 edits/triggers, idle with 10,000 files only"
    )
    parser.add_argument("--tools", help="comma-separated subset of tools (default: all)")
    parser.add_argument("--rounds", type=int, help="override the number of rounds")
    parser.add_argument("--edits", type=int, help="override edits (and triggers) per tool per round")
    parser.add_argument("--no-idle", action="store_true", help="skip the idle scenario")
    parser.add_argument("--no-setup", action="store_true", help=argparse.SUPPRESS)
    return parser


def _in_bench_venv() -> bool:
    return Path(sys.prefix).resolve() == bench_setup.VENV.resolve()


def _raise_interrupt(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def bench(args: argparse.Namespace, command: str) -> int:
    import procs
    import report
    import scenarios
    import tools
    from bench_setup import WORK

    quick = args.quick
    rounds = args.rounds or (1 if quick else 5)
    edits = args.edits or (5 if quick else 4)
    cfg = scenarios.Config(
        rounds=rounds,
        edits=edits,
        triggers=edits,
        bursts=1,
        settle=0.3,
        first_settle=1.5,
        idle_sizes=() if args.no_idle else ((10_000,) if quick else (10_000, 100_000)),
        idle_seconds=3.0 if quick else 10.0,
        idle_settle=1.0 if quick else 3.0,
    )
    chosen = tools.select(args.tools.split(",") if args.tools else None)
    res = scenarios.Results()
    (WORK / "logs").mkdir(parents=True, exist_ok=True)
    for log in (WORK / "logs").glob("*.log"):
        log.unlink()
    began = time.monotonic()
    # Ctrl+C must always interrupt (a shell starts background jobs with SIGINT ignored).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    signal.signal(signal.SIGHUP, _raise_interrupt)
    try:
        trees = {t.name: tools.tool_tree(t) for t in chosen}
        cold_tree = next(iter(trees.values()))
        for rnd in range(rounds):
            print(f"round {rnd + 1}/{rounds}", flush=True)
            scenarios.cold_start(edits, rnd, res, cold_tree)
            for tool in chosen[rnd % len(chosen) :] + chosen[: rnd % len(chosen)]:
                print(f"  {tool.name}", flush=True)
                scenarios.session(tool, trees[tool.name], rnd, cfg, res)
                scenarios.burst_session(tool, trees[tool.name], rnd, cfg, res)
        idle_tools = [t for t in chosen if t.idle]
        for k, size in enumerate(cfg.idle_sizes):
            print(f"idle tree with {size:,} files", flush=True)
            tree = tools.make_tree(WORK / f"idle-{size}", size, folder="files")
            for tool in idle_tools[k % len(idle_tools) :] + idle_tools[: k % len(idle_tools)]:
                scenarios.idle(tool, tree, size, cfg, res)
        body = report.write_all(res, cfg, chosen, command, time.monotonic() - began)
        print()
        print(body)
        print(f"wrote {bench_setup.BENCH / 'results.md'} and {bench_setup.BENCH / 'latency.png'}")
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
    command = "python benchmarks/run.py" + (" --quick" if args.quick else "")
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

"""The ASGI serving scenario: a FastAPI app reloaded while it serves HTTP, by four tools.

Each tool serves ``app:app`` (``asgi_fastapi/``, copied into a watched tree next to a
``version.py``) on 127.0.0.1 at a free port, with the tree as its working folder. Every figure
comes from HTTP requests (``asgi_http``); the only fixed waits are the settles in ``AsgiConfig``.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import re
import shlex
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from asgi_http import Load, Reply, open_loop, until_version
from bench_setup import BENCH, WORK, venv_bin, venv_python
from procs import SPARE_READY, STARTED, Proc, bench_env
from scenarios import Results
from tools import write_version

APP = BENCH / "asgi_fastapi"
PY = str(venv_python())
START_TIMEOUT = 60.0  # launch → first answer
EDIT_TIMEOUT = 30.0  # an edit not served by then counts as missed
STOP_TIMEOUT = 30.0
SPARE_TIMEOUT = 15.0  # an aioreload row's edit waits this long at most for its warm spare
BROKEN = "VERSION = (\n"  # the broken save: a syntax error in a module the app imports
SPARE_DROPPED = re.compile(r"spare \[pid (\d+)\] not used")


@dataclass(frozen=True)
class AsgiConfig:
    """How much to do per tool and round, and the documented settles (seconds)."""

    rounds: int
    edits: int  # scenario 1, per tool per round
    reloads: int  # scenario 2: reloads under load per tool per round
    clients: int = 4
    first_settle: float = 1.5  # after the first answer, before the first edit
    settle: float = 0.5  # after each answered edit, and between the scenarios
    warmup: float = 0.5  # load before the first reload under load
    tail: float = 1.0  # load after the last reload is served (the old server's shutdown)
    broken_window: float = 3.0  # open-loop polls after the broken save


@dataclass(frozen=True)
class AsgiTool:
    """One way of serving ``app:app`` with reloads; ``argv(tree, port)`` is its command line."""

    name: str
    argv: Callable[[Path, int], list[str]]
    note: str
    needs_socket_option: bool = False  # aioreload rows: needs ``--socket`` in the CLI
    # aioreload rows: before an edit (scenario 1), wait until the warm spare is ready; from the
    # first edit on when the children report ready (serve), else from the second.
    spare: bool = False
    spare_first: bool = False

    def missing(self) -> str | None:
        """Why this tool cannot run here, or ``None``."""
        exe = Path(self.argv(WORK, 0)[0])
        if not exe.exists():
            return f"{exe} is not installed"
        if self.needs_socket_option and not _aioreload_has_socket(str(exe)):
            return "the installed aioreload has no --socket option (or no `serve`) yet"
        return None


@functools.cache
def _aioreload_has_socket(exe: str) -> bool:
    text = subprocess.run([exe, "--help"], capture_output=True, text=True, check=False).stdout
    return "--socket" in text and "serve" in text


def _uvicorn_args(port: int) -> list[str]:
    return ["--host", "127.0.0.1", "--port", str(port), "app:app"]


def _aioreload_serve(tree: Path, port: int) -> list[str]:
    return [
        str(venv_bin("aioreload")), "-v", "-w", str(tree), "--socket", f"127.0.0.1:{port}",
        "serve", "app:app",
    ]  # fmt: skip


def _aioreload_fd(tree: Path, port: int) -> list[str]:
    return [
        str(venv_bin("aioreload")), "-v", "-w", str(tree), "--socket", f"127.0.0.1:{port}",
        "--", PY, "-m", "uvicorn", "--fd", "3", "app:app",
    ]  # fmt: skip


def _uvicorn(tree: Path, port: int) -> list[str]:
    return [str(venv_bin("uvicorn")), "--reload", "--reload-dir", str(tree), *_uvicorn_args(port)]


def _watchfiles(tree: Path, port: int) -> list[str]:
    return [str(venv_bin("watchfiles")), shlex.join([PY, "-m", "uvicorn", *_uvicorn_args(port)]), str(tree)]


SERVE = "aioreload-serve"
FD = "aioreload-fd"
OURS = (SERVE, FD)

ASGI_TOOLS: tuple[AsgiTool, ...] = (
    AsgiTool(
        SERVE,
        _aioreload_serve,
        "`aioreload -v -w TREE --socket 127.0.0.1:PORT serve app:app` (warm spare on, the default; "
        "its children report ready, so the spare is prepared as soon as each has started)",
        needs_socket_option=True,
        spare=True,
        spare_first=True,
    ),
    AsgiTool(
        FD,
        _aioreload_fd,
        "`aioreload -v -w TREE --socket 127.0.0.1:PORT -- python -m uvicorn --fd 3 app:app` (warm "
        "spare on; uvicorn does not report ready: the spare is prepared 2 s after each start, and "
        "learned from the first child when it exits)",
        needs_socket_option=True,
        spare=True,
    ),
    AsgiTool(
        "uvicorn",
        _uvicorn,
        "`uvicorn --reload --reload-dir TREE --host 127.0.0.1 --port PORT app:app`",
    ),
    AsgiTool(
        "watchfiles",
        _watchfiles,
        "`watchfiles 'python -m uvicorn --host 127.0.0.1 --port PORT app:app' TREE` (default debounce)",
    ),
)


def select(names: list[str] | None, res: Results) -> list[AsgiTool]:
    """The tools asked for (all when ``names`` is None) that can run; the others are noted."""
    chosen = [t for t in ASGI_TOOLS if names is None or t.name in names]
    usable = []
    for tool in chosen:
        why = tool.missing()
        if why is None:
            usable.append(tool)
        else:
            res.note(f"{tool.name}: skipped: {why}")
    return usable


_versions = itertools.count(1)


def _ms(ns: int) -> float:
    return ns / 1e6


def free_port() -> int:
    """A TCP port nothing listens on now (the tool binds it a moment later)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def make_app_tree(name: str) -> tuple[Path, int]:
    """A fresh copy of the app in ``.work/asgi/NAME`` and the version it starts with."""
    tree = WORK / "asgi" / name
    if tree.exists():
        shutil.rmtree(tree)
    tree.mkdir(parents=True)
    for source in APP.glob("*.py"):
        shutil.copyfile(source, tree / source.name)
    version = next(_versions)
    write_version(tree, version)
    return tree, version


class LogTail:
    """aioreload's status lines of one launch, read back from its log as they are written.

    A warm spare is waiting when its ``-v`` ready line (``spare [pid N] ready``) was written
    and no child was started from it (``started from spare in 2 ms [pid N]``) nor was it
    thrown away (``spare [pid N] not used``).
    """

    def __init__(self, path: Path, offset: int) -> None:
        self.path, self.offset = path, offset
        self.ready: set[int] = set()
        self.used: set[int] = set()
        self.starts: list[str] = []  # "spare" or "cold", each child started, in order
        self._partial = ""

    def read(self) -> None:
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            data = f.read()
        self.offset += len(data)
        *lines, self._partial = (self._partial + data.decode(errors="replace")).split("\n")
        for line in lines:
            if (ready := SPARE_READY.search(line)) is not None:
                self.ready.add(int(ready.group(1)))
            elif (dropped := SPARE_DROPPED.search(line)) is not None:
                self.used.add(int(dropped.group(1)))
            elif (started := STARTED.search(line)) is not None:
                self.used.add(int(started.group(3)))
                self.starts.append("spare" if started.group(1) else "cold")

    def waiting(self) -> bool:
        self.read()
        return bool(self.ready - self.used)

    async def wait_spare(self, timeout: float) -> bool:
        """Until a warm spare is waiting (polled every 10 ms); ``False`` after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while not self.waiting():
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.01)
        return True


def session(tool: AsgiTool, rnd: int, cfg: AsgiConfig, res: Results) -> None:
    """One round for one tool: launch, edits, reloads under load, broken save, Ctrl+C."""
    tree, first = make_app_tree(tool.name)
    port = free_port()
    log = WORK / "logs" / f"asgi-{tool.name}.log"
    offset = log.stat().st_size if log.exists() else 0
    proc = Proc(tool.argv(tree, port), cwd=tree, env=bench_env({}), log=log, capture=False)
    tail = LogTail(log, offset)
    try:
        if asyncio.run(_measure(proc, tool, tree, port, first, rnd, cfg, res, tail)):
            elapsed, leftover = proc.ctrl_c(STOP_TIMEOUT)
            if elapsed is None:
                res.note(f"{tool.name}: still running {STOP_TIMEOUT} s after Ctrl+C")
            else:
                res.add("asgi_stop", tool.name, rnd, elapsed * 1000)
            if leftover:
                res.note(f"{tool.name}: outlived the tool by more than 1 s after Ctrl+C: {leftover}")
    finally:
        leftovers = proc.close()
        if leftovers:
            res.count("asgi_cleanup_leftovers", tool.name, len(leftovers))
            res.note(f"{tool.name}: at cleanup after its ASGI session, killed leftovers: {leftovers}")
        if tool.spare:
            tail.read()
            for source in tail.starts:
                res.count(f"asgi_starts_{source}", tool.name)


async def _measure(
    proc: Proc,
    tool: AsgiTool,
    tree: Path,
    port: int,
    first: int,
    rnd: int,
    cfg: AsgiConfig,
    res: Results,
    tail: LogTail,
) -> bool:
    """The three measurements against one running tool; ``False`` when it never answered."""
    reply = await _first_answer(proc, tool, port, first, res)
    if reply is None:
        return False
    res.add("asgi_startup", tool.name, rnd, _ms(reply.ended_ns - proc.started_ns))
    await asyncio.sleep(cfg.first_settle)
    for i in range(cfg.edits):
        if tool.spare and (i or tool.spare_first) and not await tail.wait_spare(SPARE_TIMEOUT):
            res.count("asgi_spare_missing", tool.name)
            res.note(f"{tool.name}: no warm spare ready within {SPARE_TIMEOUT:g} s before an edit")
        began = len(tail.starts)
        await _edit(tool, tree, port, rnd, res)
        if tool.spare:
            tail.read()
            for source in tail.starts[began:]:
                res.count(f"asgi_edit_{source}", tool.name)
        await asyncio.sleep(cfg.settle)
    await _under_load(tool, tree, port, rnd, cfg, res)
    await asyncio.sleep(cfg.settle)
    await _broken_save(tool, tree, port, rnd, cfg, res)
    return True


async def _first_answer(proc: Proc, tool: AsgiTool, port: int, want: int, res: Results) -> Reply | None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        code = proc.popen.poll()
        if code is not None:
            res.note(f"{tool.name}: exited with status {code} before serving (see logs/asgi-{tool.name}.log)")
            return None
        reply, _ = await until_version(port, want, 0.5)
        if reply is not None:
            return reply
    res.note(f"{tool.name}: did not serve version {want} within {START_TIMEOUT} s of launch")
    return None


async def _edit(tool: AsgiTool, tree: Path, port: int, rnd: int, res: Results) -> None:
    """Scenario 1: one write, then one client polls ``GET /`` until the new version answers."""
    version = next(_versions)
    t0 = time.monotonic_ns()
    write_version(tree, version)
    reply, polls = await until_version(port, version, EDIT_TIMEOUT)
    res.count("asgi_edit_polls_failed", tool.name, sum(p.failure is not None for p in polls))
    if reply is None:
        res.count("asgi_edit_missed", tool.name)
        res.note(f"{tool.name}: edit to v{version} not served within {EDIT_TIMEOUT} s")
        return
    res.add("asgi_edit", tool.name, rnd, _ms(reply.ended_ns - t0))


async def _under_load(tool: AsgiTool, tree: Path, port: int, rnd: int, cfg: AsgiConfig, res: Results) -> None:
    """Scenario 2: ``cfg.clients`` clients request all along while the app is reloaded."""
    load = Load(port, cfg.clients)
    await asyncio.sleep(cfg.warmup)
    for _ in range(cfg.reloads):
        version = next(_versions)
        t0 = time.monotonic_ns()
        write_version(tree, version)
        seen = await load.wait_version(version, EDIT_TIMEOUT)
        if seen is None:
            res.count("asgi_load_missed", tool.name)
            res.note(f"{tool.name}: under load, v{version} not served within {EDIT_TIMEOUT} s")
            continue
        res.add("asgi_load_reload", tool.name, rnd, _ms(seen - t0))
    await asyncio.sleep(cfg.tail)
    stats = await load.stop()
    lat = sorted(stats.latencies_ms)
    res.add("asgi_load_requests", tool.name, rnd, stats.replies)
    res.add("asgi_load_failed", tool.name, rnd, stats.failed)
    res.add("asgi_load_stale", tool.name, rnd, stats.stale)
    res.add("asgi_load_worst", tool.name, rnd, lat[-1] if lat else 0.0)
    res.add("asgi_load_p99", tool.name, rnd, lat[int(0.99 * (len(lat) - 1))] if lat else 0.0)
    res.add("asgi_load_median", tool.name, rnd, lat[len(lat) // 2] if lat else 0.0)
    for kind, n in stats.failures.items():
        res.count(f"asgi_load_failed:{kind}", tool.name, n)
    failed = ", ".join(f"{n} {kind}" for kind, n in stats.failures.most_common()) or "none failed"
    worst = lat[-1] if lat else 0.0
    print(f"    under load: {stats.replies} requests, {failed}, worst {worst:.0f} ms", flush=True)


async def _broken_save(
    tool: AsgiTool, tree: Path, port: int, rnd: int, cfg: AsgiConfig, res: Results
) -> None:
    """Scenario 3: a syntax error saved into version.py, open-loop polls, then the fix."""
    (tree / "version.py").write_text(BROKEN)
    polls = await open_loop(port, cfg.broken_window)
    answered = sum(p.ok for p in polls)
    res.add("asgi_broken_share", tool.name, rnd, 100.0 * answered / len(polls) if polls else 0.0)
    res.add("asgi_broken_polls", tool.name, rnd, len(polls))
    for p in polls:
        if (failure := p.failure) is not None:
            res.count(f"asgi_broken_failed:{failure}", tool.name)
    version = next(_versions)
    t0 = time.monotonic_ns()
    write_version(tree, version)
    reply, _ = await until_version(port, version, EDIT_TIMEOUT)
    if reply is None:
        res.count("asgi_restore_missed", tool.name)
        res.note(f"{tool.name}: after the fix, v{version} not served within {EDIT_TIMEOUT} s")
    else:
        res.add("asgi_restore", tool.name, rnd, _ms(reply.ended_ns - t0))
    print(f"    broken save: {answered}/{len(polls)} polls answered", flush=True)


def run(tools: list[AsgiTool], cfg: AsgiConfig, res: Results) -> None:
    """Every round: each tool once, in a rotated order."""
    for rnd in range(cfg.rounds):
        print(f"ASGI round {rnd + 1}/{cfg.rounds}", flush=True)
        for tool in tools[rnd % len(tools) :] + tools[: rnd % len(tools)]:
            print(f"  {tool.name}", flush=True)
            session(tool, rnd, cfg, res)

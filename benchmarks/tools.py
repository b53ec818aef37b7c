"""The tools under test, how each runs the same child, and the trees they watch."""

from __future__ import annotations

import shlex
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench_setup import BENCH, WORK, nodemon_bin, venv_bin, venv_python

PY = str(venv_python())
CHILD = [PY, "child.py"]
BURST_FILES = 999  # plus the version file, written last: 1,000 writes


@dataclass(frozen=True)
class Tool:
    """One way of running ``child.py`` under a reloader.

    Attributes:
        name: Short label used in tables.
        argv: Builds the command line for a watched tree.
        trigger: Whether the child can ask for its own reload (scenario 2).
        idle: Whether it takes part in the idle scenario.
        note: How the tool was configured, for the report.
    """

    name: str
    argv: Callable[[Path], list[str]]
    trigger: bool = False
    idle: bool = True
    note: str = ""

    def available(self) -> bool:
        return Path(self.argv(WORK)[0]).exists()


def _aioreload_cli(*extra: str) -> Callable[[Path], list[str]]:
    return lambda tree: [str(venv_bin("aioreload")), *extra, "-w", str(tree), "--", *CHILD]


def _embedded(tree: Path) -> list[str]:
    return [PY, "embedded.py", str(tree), "--", *CHILD]


def _watchfiles(tree: Path) -> list[str]:
    return [str(venv_bin("watchfiles")), shlex.join(CHILD), str(tree)]


def _uvicorn(tree: Path) -> list[str]:
    sock = WORK / "uvicorn.sock"
    return [
        str(venv_bin("uvicorn")), "--reload", "--reload-dir", str(tree), "--app-dir", str(BENCH),
        "--uds", str(sock), "--lifespan", "on", "asgi_app:app",
    ]  # fmt: skip


def _hupper(tree: Path) -> list[str]:
    return [str(venv_bin("hupper")), "-m", "child", "-w", f"{tree}/**/*.py"]


def _nodemon(tree: Path) -> list[str]:
    return [
        str(nodemon_bin()), "--no-update-notifier", "--signal", "SIGTERM",
        "--watch", str(tree), "-e", "py", "--exec", shlex.join(CHILD),
    ]  # fmt: skip


AIORELOAD = "aioreload-cli"
EMBEDDED = "aioreload-embedded"

TOOLS: tuple[Tool, ...] = (
    Tool(
        AIORELOAD,
        _aioreload_cli(),
        trigger=True,
        note="`aioreload -w TREE -- python child.py` (debounce 0.05 s)",
    ),
    Tool("aioreload-cli-d0.01", _aioreload_cli("-d", "0.01"), idle=False, note="same with `-d 0.01`"),
    Tool(
        EMBEDDED,
        _embedded,
        trigger=True,
        note="`Supervisor([...], watch=[TREE])` in `asyncio.run` (embedded.py)",
    ),
    Tool(
        "watchfiles",
        _watchfiles,
        note="`watchfiles 'python child.py' TREE` (default debounce 1600 ms, step 50 ms)",
    ),
    Tool(
        "uvicorn",
        _uvicorn,
        note="`uvicorn --reload --reload-dir TREE --uds SOCK asgi_app:app`; START at import",
    ),
    Tool(
        "hupper",
        _hupper,
        trigger=True,
        note="`hupper -m child -w 'TREE/**/*.py'`, watchdog backend; reload_interval 1 s (CLI minimum)",
    ),
    Tool("nodemon", _nodemon, note="`nodemon --watch TREE -e py --signal SIGTERM --exec 'python child.py'`"),
)


def select(names: list[str] | None) -> list[Tool]:
    chosen = [t for t in TOOLS if names is None or t.name in names]
    unknown = set(names or ()) - {t.name for t in TOOLS}
    if unknown:
        raise SystemExit(f"unknown tools: {sorted(unknown)}; known: {[t.name for t in TOOLS]}")
    missing = [t.name for t in chosen if not t.available()]
    if missing:
        print(f"warning: not installed, skipped: {missing}", flush=True)
    return [t for t in chosen if t.available()]


# -- trees ----------------------------------------------------------------------------------


def write_version(tree: Path, version: int) -> None:
    """The edit: one in-place write of the version file (as most editors save)."""
    (tree / "version.py").write_text(f"VERSION = {version}\n")


def read_version(tree: Path) -> int:
    text = (tree / "version.py").read_text()
    return int(text.split("=")[1])


def make_tree(root: Path, files: int, *, folder: str, per_folder: int = 100) -> Path:
    """A tree with ``version.py`` and ``files`` small .py files, ``per_folder`` per folder.

    Reused when it already holds that many files (creating 100,000 takes a while).
    """
    stamp = root / ".complete"
    if stamp.exists() and stamp.read_text() == str(files):
        return root
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    write_version(root, 0)
    for start in range(0, files, per_folder):
        sub = root / folder / f"d{start // per_folder:04d}"
        sub.mkdir(parents=True)
        for i in range(min(per_folder, files - start)):
            (sub / f"f{i:03d}.py").write_text("X = 0\n")
    stamp.write_text(str(files))
    return root


def burst_paths(tree: Path) -> list[Path]:
    return sorted((tree / "burst").glob("*/*.py"))


def tool_tree(tool: Tool) -> Path:
    """A small tree per tool: the version file and the burst files (created up front)."""
    return make_tree(WORK / "trees" / tool.name, BURST_FILES, folder="burst")

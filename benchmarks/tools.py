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
HEAVY_CHILD = [PY, "heavy_child.py"]  # imports the installed benchheavy first (heavy_pkg.py)
BURST_FILES = 999  # plus the version file, written last: 1,000 writes


@dataclass(frozen=True)
class Tool:
    """One way of running ``child.py`` (or ``heavy_child.py``) under a reloader.

    Attributes:
        name: Short label used in tables.
        argv: Builds the command line for a watched tree.
        trigger: Whether the child can ask for its own reload (scenario 2).
        idle: Whether it takes part in the idle scenario.
        burst: Whether it takes part in the burst scenario.
        spare: aioreload with its warm spare on: the harness reads its stderr (``-v``) and waits
            for the spare to be ready before each edit but a launch's first (and before the
            idle measurement).
        note: How the tool was configured, for the report.
    """

    name: str
    argv: Callable[[Path], list[str]]
    trigger: bool = False
    idle: bool = True
    burst: bool = True
    spare: bool = False
    note: str = ""

    def available(self) -> bool:
        return Path(self.argv(WORK)[0]).exists()


def _aioreload_cli(*extra: str, child: list[str] = CHILD) -> Callable[[Path], list[str]]:
    return lambda tree: [str(venv_bin("aioreload")), *extra, "-w", str(tree), "--", *child]


def _embedded(tree: Path) -> list[str]:
    return [PY, "embedded.py", str(tree), "--", *CHILD]


def _watchfiles(child: list[str]) -> Callable[[Path], list[str]]:
    return lambda tree: [str(venv_bin("watchfiles")), shlex.join(child), str(tree)]


def _uvicorn(tree: Path) -> list[str]:
    sock = WORK / "uvicorn.sock"
    return [
        str(venv_bin("uvicorn")), "--reload", "--reload-dir", str(tree), "--app-dir", str(BENCH),
        "--uds", str(sock), "--lifespan", "on", "asgi_app:app",
    ]  # fmt: skip


def _hupper(module: str) -> Callable[[Path], list[str]]:
    return lambda tree: [str(venv_bin("hupper")), "-m", module, "-w", f"{tree}/**/*.py"]


def _nodemon(child: list[str]) -> Callable[[Path], list[str]]:
    return lambda tree: [
        str(nodemon_bin()), "--no-update-notifier", "--signal", "SIGTERM",
        "--watch", str(tree), "-e", "py", "--exec", shlex.join(child),
    ]  # fmt: skip


AIORELOAD = "aioreload-cli"
NO_SPARE = "aioreload-cli-no-spare"
EMBEDDED = "aioreload-embedded"

TOOLS: tuple[Tool, ...] = (
    Tool(
        AIORELOAD,
        _aioreload_cli("-v"),
        trigger=True,
        spare=True,
        note="`aioreload -v -w TREE -- python child.py` (debounce 0.05 s; warm spare on, the default; "
        "`-v` only for the spare's ready line)",
    ),
    Tool(
        "aioreload-cli-d0.01",
        _aioreload_cli("-v", "-d", "0.01"),
        idle=False,
        spare=True,
        note="same with `-d 0.01`",
    ),
    Tool(
        NO_SPARE,
        _aioreload_cli("-v", "--no-spare"),
        trigger=True,
        idle=False,
        burst=False,
        note="same with `--no-spare`: every child starts cold (aioreload before the warm spare)",
    ),
    Tool(
        EMBEDDED,
        _embedded,
        trigger=True,
        spare=True,
        note="`Supervisor([...], watch=[TREE])` in `asyncio.run` (embedded.py; spare on, the default)",
    ),
    Tool(
        "watchfiles",
        _watchfiles(CHILD),
        note="`watchfiles 'python child.py' TREE` (default debounce 1600 ms, step 50 ms)",
    ),
    Tool(
        "uvicorn",
        _uvicorn,
        note="`uvicorn --reload --reload-dir TREE --uds SOCK asgi_app:app`; START at import",
    ),
    Tool(
        "hupper",
        _hupper("child"),
        trigger=True,
        note="`hupper -m child -w 'TREE/**/*.py'`, watchdog backend; reload_interval 1 s (CLI minimum)",
    ),
    Tool(
        "nodemon",
        _nodemon(CHILD),
        note="`nodemon --watch TREE -e py --signal SIGTERM --exec 'python child.py'`",
    ),
)

# The "heavy dependency" scenario: the same tools running heavy_child.py (edits only).
HEAVY_TOOLS: tuple[Tool, ...] = (
    Tool(
        AIORELOAD,
        _aioreload_cli("-v", child=HEAVY_CHILD),
        spare=True,
        note="`aioreload -v -w TREE -- python heavy_child.py` (warm spare on, the default)",
    ),
    Tool(
        NO_SPARE,
        _aioreload_cli("-v", "--no-spare", child=HEAVY_CHILD),
        note="`aioreload -v --no-spare -w TREE -- python heavy_child.py` (every child cold)",
    ),
    Tool(
        "watchfiles",
        _watchfiles(HEAVY_CHILD),
        note="`watchfiles 'python heavy_child.py' TREE` (default debounce 1600 ms)",
    ),
    Tool(
        "hupper",
        _hupper("heavy_child"),
        note="`hupper -m heavy_child -w 'TREE/**/*.py'` (watchdog; reload_interval 1 s)",
    ),
    Tool(
        "nodemon",
        _nodemon(HEAVY_CHILD),
        note="`nodemon --watch TREE -e py --signal SIGTERM --exec 'python heavy_child.py'`",
    ),
)


def select(names: list[str] | None, tools: tuple[Tool, ...] = TOOLS) -> list[Tool]:
    chosen = [t for t in tools if names is None or t.name in names]
    unknown = set(names or ()) - {t.name for t in tools}
    if unknown:
        raise SystemExit(f"unknown tools: {sorted(unknown)}; known: {[t.name for t in tools]}")
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


def heavy_tree(tool: Tool) -> Path:
    """The heavy scenario's tree per tool: the version file alone (the dependency is installed)."""
    return make_tree(WORK / "heavy-trees" / tool.name, 0, folder="files")

"""The "heavy dependency" scenario: a child that imports a slow installed package, reloaded.

``heavy_child.py`` imports ``benchheavy`` (``heavy_pkg.py``: about 0.6 s of CPU work at import,
installed in the benchmark venv's site-packages), then prints the START line as ``child.py``
does. Per round: the child's cold start alone, then each tool once (rotated order): launch,
1 + ``edits`` edits of ``version.py`` (the first reported apart), Ctrl+C.
"""

from __future__ import annotations

from pathlib import Path

from scenarios import Config, Results, Watch, cold_start, edits, finish, first_start, launch, stop_tool
from tools import HEAVY_CHILD, HEAVY_TOOLS, Tool, heavy_tree

HEAVY_COLD = "python heavy_child.py"
METRIC = "heavy_edit"


def select(names: list[str] | None) -> list[Tool]:
    """The heavy scenario's tools that were asked for (``None``: all) and are installed."""
    import tools

    return tools.select(names, HEAVY_TOOLS)


def session(tool: Tool, tree: Path, rnd: int, cfg: Config, res: Results) -> None:
    """One round for one tool: launch, edits, Ctrl+C."""
    proc = launch(tool, tree, log=f"heavy-{tool.name}")
    try:
        first = first_start(proc, tool, rnd, cfg, res, "heavy_startup")
        if first is None:
            return
        w = Watch(proc, tool, rnd, res, prefix="heavy_")
        w.current = first
        edits(w, tree, cfg, METRIC)
        stop_tool(proc, tool, rnd, res, "heavy_stop")
    finally:
        finish(proc, tool, res, "its heavy-dependency session")


def run(chosen: list[Tool], cfg: Config, res: Results) -> None:
    trees = {t.name: heavy_tree(t) for t in chosen}
    cold_tree = next(iter(trees.values()))
    for rnd in range(cfg.rounds):
        print(f"heavy dependency: round {rnd + 1}/{cfg.rounds}", flush=True)
        cold_start(cfg.edits, rnd, res, cold_tree, ((HEAVY_COLD, HEAVY_CHILD, "0"),))
        for tool in chosen[rnd % len(chosen) :] + chosen[: rnd % len(chosen)]:
            print(f"  {tool.name}", flush=True)
            session(tool, trees[tool.name], rnd, cfg, res)

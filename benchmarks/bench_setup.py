"""Setup step: a private venv and node prefix under benchmarks/.work/. Standard library only.

Run by ``run.py`` before anything else, with whatever Python started it. Idempotent: the peers
are installed once (a stamp file records what), aioreload is reinstalled from the working tree
on every run so the numbers always describe the code that is checked out, and ``benchheavy``
(the heavy-dependency scenario's installed package, ``heavy_pkg.py``) is built as a wheel and
installed whenever its generated content changes.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import heavy_pkg  # stdlib only, next to this file

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
WORK = BENCH / ".work"
VENV = WORK / "venv"
NODE = WORK / "node"
STAMP = WORK / "setup-stamp.json"
PROVENANCE = WORK / "installed-aioreload.json"

# The peers under test, plus what the harness itself needs. watchdog is hupper's documented
# optional backend: without it hupper falls back to stat-polling every reload_interval (1 s).
# fastapi, sqlalchemy and pydantic make the ASGI scenario's application (asgi_fastapi/).
PYTHON_PACKAGES = [
    "watchfiles", "hupper", "uvicorn", "watchdog", "psutil", "matplotlib",
    "fastapi", "sqlalchemy", "pydantic",
]  # fmt: skip
NODE_PACKAGES = ["nodemon"]


def venv_python() -> Path:
    return VENV / "bin" / "python"


def venv_bin(name: str) -> Path:
    return VENV / "bin" / name


def nodemon_bin() -> Path:
    return NODE / "node_modules" / ".bin" / "nodemon"


def _run(argv: list[str], *, quiet: bool) -> None:
    print("setup: $", " ".join(argv), flush=True)
    out = subprocess.DEVNULL if quiet else None
    subprocess.run(argv, check=True, stdout=out)


def _load_stamp() -> dict[str, list[str]]:
    try:
        data = json.loads(STAMP.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _git(*args: str) -> str:
    result = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True, check=False)
    return result.stdout.rstrip() if result.returncode == 0 else "?"


def _git_state() -> dict[str, str]:
    """What is about to be installed: the commit and the package files that differ from it."""
    changed = [line[3:] for line in _git("status", "--porcelain", "--", "aioreload").splitlines() if line]
    return {"commit": _git("rev-parse", "--short", "HEAD"), "uncommitted": " ".join(changed)}


def _installed_hash() -> str:
    """sha256 over the installed package's .py files, to tell two runs' code apart."""
    digest = hashlib.sha256()
    for package in sorted(VENV.glob("lib/python*/site-packages/aioreload")):
        for path in sorted(package.rglob("*.py")):
            digest.update(path.relative_to(package).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def ensure(*, quiet: bool = True) -> None:
    """Create the venv and node prefix if needed, install the peers, reinstall aioreload."""
    WORK.mkdir(exist_ok=True)
    stamp = _load_stamp()
    if not venv_python().exists():
        print(f"setup: creating venv {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True, clear=True).create(VENV)
        stamp = {}
    pip = [str(venv_python()), "-m", "pip", "--disable-pip-version-check", "-q"]
    if stamp.get("python") != PYTHON_PACKAGES:
        _run([*pip, "install", *PYTHON_PACKAGES], quiet=quiet)
        stamp["python"] = PYTHON_PACKAGES
    # Always the checked-out code: dependencies once, the package itself every run.
    before = _git_state()
    _run([*pip, "install", str(REPO)], quiet=quiet)
    _run([*pip, "install", "--no-deps", "--force-reinstall", str(REPO)], quiet=quiet)
    PROVENANCE.write_text(json.dumps({**before, "installed_sha256": _installed_hash()}, indent=2))
    # The heavy-dependency scenario's package: a generated wheel, installed when it changed.
    heavy = [heavy_pkg.VERSION, heavy_pkg.digest()]
    if stamp.get("benchheavy") != heavy or not list(VENV.glob(f"lib/python*/site-packages/{heavy_pkg.NAME}")):
        wheel = heavy_pkg.build_wheel(WORK / "benchheavy")
        _run([*pip, "install", "--no-deps", "--no-index", "--force-reinstall", str(wheel)], quiet=quiet)
        stamp["benchheavy"] = heavy
    if stamp.get("node") != NODE_PACKAGES or not nodemon_bin().exists():
        npm = shutil.which("npm")
        if npm is None:
            print("setup: npm not found; nodemon will be skipped", file=sys.stderr, flush=True)
        else:
            NODE.mkdir(exist_ok=True)
            _run(
                [npm, "install", "--no-audit", "--no-fund", "--prefix", str(NODE), *NODE_PACKAGES],
                quiet=quiet,
            )
            stamp["node"] = NODE_PACKAGES
    STAMP.write_text(json.dumps(stamp, indent=2))


if __name__ == "__main__":
    ensure(quiet=False)

"""The public surface: exports, laziness and import cost."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import aioreload


def test_all_names_exist_and_are_public() -> None:
    for name in aioreload.__all__:
        assert getattr(aioreload, name) is not None
        assert not name.startswith("_") or name == "__version__"
    assert sorted(aioreload.__all__) == sorted(set(aioreload.__all__))
    assert sorted(dir(aioreload)) == sorted(aioreload.__all__)


def test_public_objects_live_in_private_modules_or_child() -> None:
    for name in aioreload.__all__:
        obj = getattr(aioreload, name)
        module = getattr(obj, "__module__", "aioreload")
        assert module == "aioreload" or module.startswith(("aioreload._", "aioreload.child")), (name, module)


def test_unknown_attribute_raises() -> None:
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        aioreload.nope  # noqa: B018


def test_importing_the_child_api_stays_cheap() -> None:
    code = (
        "import sys, json, aioreload\n"
        "aioreload.is_supervised(); aioreload.last_reload()\n"
        "print(json.dumps(sorted(m for m in ('asyncio', 'anyio', 'watchfiles', 'aioreload._supervisor')"
        " if m in sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []


def test_supervisor_loads_on_first_use() -> None:
    code = (
        "import sys, aioreload\n"
        "aioreload.Supervisor\n"
        "print(all(m in sys.modules for m in ('anyio', 'aioreload._supervisor')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"

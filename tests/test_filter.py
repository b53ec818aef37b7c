"""PathFilter and split_watch: one pattern dialect (gitignore's), globs in watch=, filters, cost."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from aioreload import ConfigError, _validate
from aioreload._filter import DEFAULT_IGNORE_DIRS, DEFAULT_IGNORE_GLOBS, PathFilter, split_watch


def make(root: Path, *names: str) -> None:
    """Files (and, for names ending in /, folders) under ``root``."""
    for name in names:
        path = root / name
        if name.endswith("/"):
            path.mkdir(parents=True, exist_ok=True)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("")


def kept(keep: PathFilter, root: Path, *names: str) -> list[str]:
    return [name for name in names if keep(str(root / name))]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    folder = tmp_path / "project"
    folder.mkdir()
    return folder.resolve()


# -- ignore patterns: gitignore's dialect ---------------------------------------------------


def test_double_star_matches_any_number_of_folders(root: Path) -> None:
    keep = PathFilter(roots=[root], ignore=["**/logs/*"])
    assert kept(keep, root, "logs/a", "x/logs/a", "x/y/logs/a.txt", "logs.txt", "x/logsa/b") == [
        "logs.txt",
        "x/logsa/b",
    ]


def test_a_name_ignores_the_folder_and_everything_inside(root: Path) -> None:
    make(root, "src/", "app_first/deep/", "app_second/js/", "lib/src/")
    keep = PathFilter(roots=[root], ignore=["src", "app_first", "app_second/js"])
    for folder in ("src", "app_first", "app_first/deep", "app_second/js", "lib/src"):
        assert keep.skip_folder(str(root / folder)), folder
    assert not keep.skip_folder(str(root / "app_second"))
    assert kept(
        keep,
        root,
        "src/a.py",
        "lib/src/a.py",
        "app_first/a.py",
        "app_first/deep/b.py",
        "app_second/js/a.js",
        "app_second/b.js",
        "lib/a.py",
    ) == ["app_second/b.js", "lib/a.py"]


def test_a_slash_anchors_at_the_watch_root(root: Path) -> None:
    keep = PathFilter(roots=[root], ignore=["docs/*.html", "/build", "./dist", "out/"])
    make(root, "out/", "sub/out/")
    names = ["docs/a.html", "sub/docs/a.html", "build/x", "sub/build/x", "dist/x", "sub/dist/x"]
    assert kept(keep, root, *names, "out/x", "sub/out/x") == ["sub/docs/a.html", "sub/build/x", "sub/dist/x"]
    make(root, "file/out")
    assert keep(str(root / "file" / "out"))  # "out/" is for folders only


def test_absolute_paths_under_a_root(root: Path) -> None:
    make(root, "logs/", "var/cache/", "keep/")
    keep = PathFilter(
        roots=[root],
        ignore=[str(root / "logs"), f"{root}/var/cache/", f"{root}/keep/*.tmp2", str(root / "one.txt")],
    )
    assert keep.skip_folder(str(root / "logs"))
    assert keep.skip_folder(str(root / "var" / "cache"))
    assert not keep.skip_folder(str(root / "var"))
    assert kept(
        keep,
        root,
        "logs/a.txt",
        "var/cache/x",
        "keep/a.tmp2",
        "keep/a.py",
        "one.txt",
        "sub/one.txt",
        "sub/logs/x",
    ) == ["keep/a.py", "sub/one.txt", "sub/logs/x"]


def test_an_absolute_path_applies_to_its_own_root_only(tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    make(tmp_path, "first/logs/", "second/logs/")
    keep = PathFilter(roots=[first, second], ignore=[str(first / "logs")])
    assert not keep(str(first / "logs" / "a"))
    assert keep(str(second / "logs" / "a"))


def test_an_absolute_path_through_a_symlink_is_resolved(tmp_path: Path) -> None:
    real = tmp_path / "real"
    make(real, "logs/")
    (tmp_path / "link").symlink_to(real)
    keep = PathFilter(roots=[real.resolve()], ignore=[str(tmp_path / "link" / "logs")])
    assert not keep(str(real.resolve() / "logs" / "a"))


@pytest.mark.parametrize(
    "pattern",
    [
        "../elsewhere",
        "sub/../../x",
        "",
        " ",
        "!",
    ],
)
def test_patterns_that_cannot_match_are_refused(root: Path, pattern: str) -> None:
    with pytest.raises(ConfigError) as raised:
        PathFilter(roots=[root], ignore=[pattern])
    assert "\n" not in str(raised.value)


def test_an_absolute_path_outside_every_root_is_refused(root: Path, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    with pytest.raises(ConfigError, match="outside every watch root"):
        PathFilter(roots=[root], ignore=[str(outside)])
    with pytest.raises(ConfigError, match="is a watch root itself"):
        PathFilter(roots=[root], ignore=[str(root)])


def test_a_leading_slash_is_a_root_anchor_unless_it_names_a_real_top_folder(root: Path) -> None:
    top = sorted(name for name in os.listdir("/") if name.isidentifier())[0]  # e.g. "bin"
    make(root, f"{top}/")
    keep = PathFilter(roots=[root], ignore=[f"/{top}", "/not-a-top-folder-xyz"])  # the root holds it
    assert kept(keep, root, f"{top}/a", "not-a-top-folder-xyz/a", f"sub/{top}/a") == [f"sub/{top}/a"]


def test_negation_and_hash(root: Path) -> None:
    keep = PathFilter(roots=[root], ignore=["!keep.log", "#notes#x", "tmp/", "!tmp/keep"])
    make(root, "tmp/")
    assert kept(keep, root, "a.log", "keep.log", "sub/keep.log", "#notes#x", "tmp/keep", "x.py") == [
        "keep.log",
        "sub/keep.log",
        "x.py",
    ]


def test_a_watch_root_is_never_ignored_itself(root: Path) -> None:
    single = root / "app.log"
    single.write_text("")
    keep = PathFilter(roots=[root, single], ignore=["*.txt"])
    assert keep(str(single))
    assert not keep.skip_folder(str(root))


def test_nested_roots_the_deepest_decides(root: Path) -> None:
    make(root, "build/")
    keep = PathFilter(roots=[root, root / "build"], ignore=["build"])
    assert keep(str(root / "build" / "x.py"))  # watched explicitly
    assert not keep(str(root / "sub" / "build" / "x.py"))


# -- the defaults ----------------------------------------------------------------------------


def test_default_ignores(root: Path) -> None:
    keep = PathFilter(roots=[root])
    ignored = [
        ".git/config",
        "__pycache__/m.cpython-311.pyc",
        "m.pyc",
        ".venv/lib/x.py",
        "node_modules/x/y.js",
        ".mypy_cache/x",
        ".hypothesis/examples/x",
        "sub/.hypothesis/x",
        "app.py___jb_tmp___",
        "app.py___jb_old___",
        "flycheck_app.py",
        ".app.py.swp",
        "app.py~",
        ".#app.py",
        "#app.py#",
        "4913",
        "db.sqlite3",
        "db.sqlite3-journal",
        "db.sqlite3-wal",
        "db.sqlite3-shm",
        "data.sqlite",
        "data.sqlite-journal",
        "app.db",
        "app.db-journal",
        "app.db-wal",
        "app.db-shm",
        "app.log",
        "logs/server.log",
    ]
    watched = ["app.py", "templates/index.html", "settings.toml", "db.py", "logger.py", "flycheck.py"]
    assert kept(keep, root, *ignored, *watched) == watched
    for folder in (".hypothesis", ".git", "node_modules"):
        make(root, f"{folder}/")
        assert keep.skip_folder(str(root / folder)), folder
    assert ".hypothesis" in DEFAULT_IGNORE_DIRS
    assert {"*.log", "*.sqlite3", "flycheck_*", "*___jb_tmp___"} <= set(DEFAULT_IGNORE_GLOBS)


def test_a_default_can_be_re_included(root: Path) -> None:
    assert not PathFilter(roots=[root])(str(root / "app.log"))
    keep = PathFilter(roots=[root], ignore=["!*.log"])
    assert keep(str(root / "app.log"))
    assert not keep(str(root / "app.pyc"))


# -- extensions ------------------------------------------------------------------------------


def test_extensions_split_on_commas_with_or_without_a_dot(root: Path) -> None:
    keep = PathFilter(roots=[root], extensions=["js,coffee", ".py", " toml "])
    assert keep.extensions == (".js", ".coffee", ".py", ".toml")
    assert kept(keep, root, "a.js", "a.coffee", "a.py", "a.toml", "a.txt", "ajs") == [
        "a.js",
        "a.coffee",
        "a.py",
        "a.toml",
    ]
    assert PathFilter(extensions="py").extensions == (".py",)  # a string is one item, not letters


@pytest.mark.parametrize("value", ["*.py", "", ".", "..", "js,", "src/py", "[py]", "p?"])
def test_extensions_that_cannot_match_a_suffix_are_refused(value: str) -> None:
    with pytest.raises(ConfigError, match="cannot match a file suffix"):
        _validate.extensions([value])
    with pytest.raises(ConfigError):
        PathFilter(extensions=[value])


# -- watch globs -----------------------------------------------------------------------------


def test_split_watch_plain_paths_and_globs(root: Path) -> None:
    make(root, "conf/", "src/", "app.py", "data[1]/")
    roots, include = split_watch(["src", "conf/*.toml", "app.py", "src/**/*.py", "data[1]"], root)
    assert roots == [root / "src", root / "conf", root / "app.py", root / "data[1]"]
    assert include == [f"{root}/conf/*.toml"]  # src is watched whole: its glob adds nothing
    roots, include = split_watch([f"{root}/conf/**/*.toml", "*.py"], root / "src")
    assert roots == [root / "conf", root / "src"]
    assert include == [f"{root}/conf/**/*.toml", f"{root}/src/*.py"]


def test_split_watch_escapes_wildcards_in_the_root(tmp_path: Path) -> None:
    odd = tmp_path / "a[b]*"
    make(odd, "conf/x.toml", "conf/y.py")
    roots, include = split_watch(["conf/*.toml"], odd)
    escaped = str(odd.resolve()).replace("[", "\\[").replace("*", "\\*")
    assert include == [f"{escaped}/conf/*.toml"]
    keep = PathFilter(roots=roots, include=include)
    assert kept(keep, odd.resolve(), "conf/x.toml", "conf/y.py") == ["conf/x.toml"]


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("missing", "watch path does not exist: 'missing' (create it or fix the path)"),
        ("missing/*.toml", "watch glob 'missing/*.toml': its folder 'missing' does not exist"),
        ("app.py/*.toml", "its folder 'app.py' is not a folder"),
        ("", "watch path is empty"),
    ],
)
def test_split_watch_refuses_what_does_not_exist(root: Path, item: str, message: str) -> None:
    make(root, "app.py")
    with pytest.raises(ConfigError, match=re.escape(message)):
        split_watch([item], root)


def test_include_keeps_only_what_the_glob_matches_under_its_root(root: Path) -> None:
    make(root, "conf/sub/", "conf/deep/er/", "src/")
    roots, include = split_watch(["conf/*.toml", "src"], root)
    keep = PathFilter(roots=roots, include=include)
    assert kept(keep, root, "conf/a.toml", "conf/a.py", "conf/sub/b.toml", "src/x.py", "src/y.toml") == [
        "conf/a.toml",
        "src/x.py",
        "src/y.toml",
    ]
    assert keep.skip_folder(str(root / "conf" / "sub"))  # nothing in it can match: not watched
    assert not keep.skip_folder(str(root / "conf"))
    assert not keep.skip_folder(str(root / "src" / "sub"))


def test_include_with_double_star_and_folder_matches(root: Path) -> None:
    make(root, "conf/deep/er/", "plugins/one/", "templates/")
    roots, include = split_watch(["conf/**/*.toml", "plugins/*", "*/index.html"], root)
    assert roots == [root / "conf", root / "plugins", root]
    keep = PathFilter(roots=roots, include=include)
    assert not keep.skip_folder(str(root / "conf" / "deep" / "er"))
    assert kept(
        keep,
        root,
        "conf/a.toml",
        "conf/deep/er/b.toml",
        "conf/deep/er/b.py",
        "plugins/one/code.py",  # inside a folder "plugins/*" matches
        "plugins/top.py",
        "templates/index.html",
        "templates/other.html",
        "readme.md",
    ) == [
        "conf/a.toml",
        "conf/deep/er/b.toml",
        "plugins/one/code.py",
        "plugins/top.py",
        "templates/index.html",
    ]
    # A folder appearing under a glob root counts when it may hold matches (a moved-in tree).
    make(root, "conf/new/", "templates/new/")
    assert keep(str(root / "conf" / "new"))
    assert keep.skip_folder(str(root / "templates" / "new" / "deeper")) is True


def test_include_needs_a_root_of_its_own(root: Path) -> None:
    with pytest.raises(ConfigError, match="include pattern"):
        PathFilter(roots=[root], include=[f"{root}/conf/*.toml"])
    with pytest.raises(ConfigError, match="include pattern"):
        PathFilter(roots=[root], include=["*.toml"])


# -- watch_filter ----------------------------------------------------------------------------


def test_watch_filter_sees_what_passed_the_rest_and_can_refuse(root: Path) -> None:
    asked: list[str] = []

    def only_even(path: str) -> bool:
        asked.append(path)
        return path.endswith(("0.py", "2.py"))

    keep = PathFilter(roots=[root], extensions=["py"], watch_filter=only_even)
    assert kept(keep, root, "0.py", "1.py", "2.py", "3.txt", "__pycache__/4.py", "a.log") == ["0.py", "2.py"]
    assert asked == [str(root / name) for name in ("0.py", "1.py", "2.py")]


# -- cost ------------------------------------------------------------------------------------


def test_questions_compile_nothing_and_stat_nothing(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every event is asked about: the answer comes from patterns compiled beforehand.

    (A stat is needed only to tell a folder from a file: for a name that an extension or an
    include glob turns away, and for one that a folder-only pattern names.)
    """
    make(root, "src/", "conf/", "logs/")
    roots, include = split_watch(["src", "conf/*.toml"], root)
    keep = PathFilter(
        roots=roots,
        include=include,
        ignore=["**/logs/*", str(root / "src" / "gen"), "docs/*.html", "*.bak.py", "build/"],
        extensions=["py", "toml", "html"],
    )
    calls: list[str] = []

    def forbidden(name: str) -> Callable[..., object]:
        def record(*args: object, **kwargs: object) -> object:
            calls.append(name)
            raise AssertionError(f"{name} called while answering")

        return record

    monkeypatch.setattr(re, "compile", forbidden("re.compile"))
    monkeypatch.setattr(os, "stat", forbidden("os.stat"))
    monkeypatch.setattr(os.path, "isdir", forbidden("os.path.isdir"))
    files = [
        "src/app.py",
        "src/a/b/c/d.py",
        "src/docs/x.html",
        "src/gen/x.py",
        "conf/a.toml",
        "src/logs/a.py",
        "src/x/logs/b.py",
        "src/x.bak.py",
        "src/__pycache__/m.py",
    ]
    for _ in range(3):
        assert kept(keep, root, *files) == ["src/app.py", "src/a/b/c/d.py", "conf/a.toml"]
        assert not keep.skip_folder(str(root / "src" / "pkg"))
        assert keep.skip_folder(str(root / "src" / "node_modules"))
        assert keep.skip_folder(str(root / "conf" / "sub"))
    assert calls == []

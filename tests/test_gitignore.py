"""The .gitignore matcher: git's rules on real folders (no git needed), and its cache."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from aioreload import _gitignore
from aioreload._filter import PathFilter


def tree(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def ignored(root: Path, *names: str) -> list[str]:
    check = _gitignore.load(root)
    return [name for name in names if check(str(root / name))]


def test_comments_blank_lines_and_globs(tmp_path: Path) -> None:
    tree(tmp_path, {".gitignore": "# a comment\n\n*.log\nbuild?.txt\n\\#hash\n[ab]c.tmp\ntrailing   \n"})
    assert ignored(
        tmp_path,
        "app.log",
        "sub/deep/app.log",
        "build1.txt",
        "build12.txt",
        "#hash",
        "# a comment",
        "ac.tmp",
        "cc.tmp",
        "trailing",
        "app.py",
    ) == ["app.log", "sub/deep/app.log", "build1.txt", "#hash", "ac.tmp", "trailing"]


def test_negation_and_order(tmp_path: Path) -> None:
    tree(tmp_path, {".gitignore": "*.log\n!keep.log\n\\!bang\n"})
    assert ignored(tmp_path, "a.log", "keep.log", "sub/keep.log", "!bang") == ["a.log", "!bang"]


def test_a_file_inside_an_ignored_folder_cannot_be_re_included(tmp_path: Path) -> None:
    tree(tmp_path, {".gitignore": "build/\n!build/keep.txt\n", "build/keep.txt": ""})
    assert ignored(tmp_path, "build/keep.txt", "build/x/y.py") == ["build/keep.txt", "build/x/y.py"]


def test_leading_slash_anchors_and_a_middle_slash_too(tmp_path: Path) -> None:
    tree(tmp_path, {".gitignore": "/top.txt\ndocs/*.html\n"})
    assert ignored(tmp_path, "top.txt", "sub/top.txt", "docs/a.html", "docs/x/a.html", "sub/docs/a.html") == [
        "top.txt",
        "docs/a.html",
    ]


def test_trailing_slash_matches_folders_only(tmp_path: Path) -> None:
    tree(tmp_path, {".gitignore": "out/\n", "out/a.txt": "", "sub/out/b.txt": "", "file/out": ""})
    (tmp_path / "empty" / "out").mkdir(parents=True)
    assert ignored(tmp_path, "out", "out/a.txt", "sub/out/b.txt", "file/out", "empty/out") == [
        "out",
        "out/a.txt",
        "sub/out/b.txt",
        "empty/out",
    ]


@pytest.mark.parametrize(
    ("pattern", "matching", "not_matching"),
    [
        ("**/logs", ["logs", "a/logs", "a/b/logs/x.txt"], ["logsx"]),
        ("**/logs/debug.log", ["logs/debug.log", "a/b/logs/debug.log"], ["logs/x/debug.log"]),
        ("abc/**", ["abc/x", "abc/x/y"], ["abc", "x/abc/y"]),
        ("a/**/b", ["a/b", "a/x/b", "a/x/y/b"], ["x/a/b", "a/bb"]),
        ("*.py[cod]", ["x.pyc", "d/x.pyo"], ["x.py", "x.pyx"]),
        ("[!a]x", ["bx"], ["ax"]),
        ("foo*bar", ["foobar", "fooXbar"], ["foo/bar"]),
    ],
)
def test_wildcards(tmp_path: Path, pattern: str, matching: list[str], not_matching: list[str]) -> None:
    tree(tmp_path, {".gitignore": pattern + "\n"})
    assert ignored(tmp_path, *matching, *not_matching) == matching


def test_nested_gitignore_files_apply_below_their_folder_and_win(tmp_path: Path) -> None:
    tree(
        tmp_path,
        {
            ".gitignore": "*.tmp\n",
            "sub/.gitignore": "!keep.tmp\n/local.txt\n",
            "sub/deeper/.gitignore": "*.txt\n",
        },
    )
    assert ignored(
        tmp_path,
        "a.tmp",
        "keep.tmp",
        "sub/keep.tmp",
        "sub/local.txt",
        "local.txt",
        "sub/x/local.txt",
        "sub/deeper/n.txt",
        "sub/n.txt",
    ) == ["a.tmp", "keep.tmp", "sub/local.txt", "sub/deeper/n.txt"]


def test_the_work_tree_above_the_root_applies_but_never_hides_the_root(tmp_path: Path) -> None:
    tree(tmp_path, {".gitignore": "generated/\n*.bak\n", ".git/info/exclude": "secret*\n"})
    root = tmp_path / "generated"
    root.mkdir()
    assert ignored(root, "a.py", "a.bak", "secret.txt", "x/.git/config") == [
        "a.bak",
        "secret.txt",
        "x/.git/config",
    ]
    assert not _gitignore.load(tmp_path)(str(tmp_path / "elsewhere.py"))
    assert not _gitignore.load(root)("/somewhere/else/a.bak")


def test_parsed_files_are_cached_until_they_change(tmp_path: Path) -> None:
    tree(tmp_path, {".gitignore": "*.a\n"})
    path = str(tmp_path / ".gitignore")
    first = _gitignore.read_rules(path)
    assert _gitignore.read_rules(path) is first
    (tmp_path / ".gitignore").write_text("*.a\n*.b\n")
    os.utime(path, ns=(1, 1))  # a different size and time: a new version
    assert len(_gitignore.read_rules(path)) == 2
    assert ignored(tmp_path, "x.a", "x.b") == ["x.a", "x.b"]
    (tmp_path / ".gitignore").unlink()
    assert _gitignore.read_rules(path) == []


def test_odd_patterns_match_as_git_matches_them(tmp_path: Path) -> None:
    # Expectations from `git check-ignore --no-index` (git 2.x).
    tree(tmp_path, {".gitignore": "[[]x\n[-a]y\n[&&]z\n[\nfoo\\ \n!\n/\n[z-a]w\n"})
    names = ["[x", "-y", "&z", "[", "foo ", "foo", "zw", "aw"]
    assert ignored(tmp_path, *names) == ["[x", "-y", "&z", "foo ", "zw"]


def test_path_filter_uses_it_when_asked(tmp_path: Path) -> None:
    tree(tmp_path, {".gitignore": "dist/\n*.gen.py\n"})
    roots = [tmp_path]
    on = PathFilter(roots=roots, gitignore=True)
    off = PathFilter(roots=roots, gitignore=False)
    for name in ("dist/app.py", "models.gen.py"):
        assert not on(str(tmp_path / name))
        assert off(str(tmp_path / name))
    assert on(str(tmp_path / "app.py"))


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_agrees_with_git_check_ignore(tmp_path: Path) -> None:
    rules = "*.log\n!keep.log\n/root-only\nbuild/\n!build/x\ndocs/**/*.html\n**/cache\nsub/*.txt\n"
    names = [
        "a.log",
        "keep.log",
        "d/keep.log",
        "root-only",
        "d/root-only",
        "build/x",
        "d/build/y",
        "docs/a.html",
        "docs/x/y/a.html",
        "docs/a.htm",
        "cache/z",
        "d/cache/z",
        "sub/a.txt",
        "sub/d/a.txt",
        "d/sub/a.txt",
        "plain.py",
        "nested/a.log",
        "nested/b.tmp",
        "nested/deep/c.tmp",
        "nested/only-here/x",
        "[x",
        "zw",
        "q/z",
        "qaz",
    ]
    nested = "!a.log\n*.tmp\n!deep/*.tmp\nonly-here/\n"
    odd = "[[]x\n[z-a]w\n/q[!x]z\n"
    tree(tmp_path, {".gitignore": rules + odd, "nested/.gitignore": nested, **{name: "" for name in names}})
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    result = subprocess.run(
        ["git", "-C", str(tmp_path), "check-ignore", "--no-index", *names], capture_output=True, text=True
    )
    by_git = result.stdout.split()
    assert ignored(tmp_path, *names) == by_git


def test_no_wildcard_matches_a_slash(tmp_path: Path) -> None:
    # git's wildcards never match "/", ranges included: "[!x]" is not "any character but x".
    tree(tmp_path, {".gitignore": "/a[!x]c\n/d[/]e\n/f?g\n"})
    assert ignored(tmp_path, "a/c", "abc", "d/e", "f/g", "fzg") == ["abc", "fzg"]


MATCHER_RULES = [
    "*.log\nbuild/\n/top\ndocs/*.html\n**/cache\nsub/**/deep\nx/**\n[!a]y\n",
    "*.log\n!keep.log\nbuild/\n!build/x\n/top\n!top/inner\nout/\n!out/\n",
    "*\n!*/\n!*.py\n",
]
MATCHER_PATHS = [
    "a.log",
    "d/a.log",
    "keep.log",
    "d/keep.log",
    "build",
    "build/x",
    "d/build/y",
    "top",
    "top/inner",
    "d/top",
    "docs/a.html",
    "d/docs/a.html",
    "cache/z",
    "d/e/cache",
    "sub/deep",
    "sub/a/b/deep",
    "x/y",
    "x",
    "by",
    "ay",
    "out",
    "out/z",
    "d/file.py",
    "d/file.txt",
    "plain.py",
]


@pytest.mark.parametrize("rules", MATCHER_RULES)
def test_the_compiled_matcher_agrees_with_the_file_matcher(tmp_path: Path, rules: str) -> None:
    folders = {"build", "d/build", "top", "out", "d", "d/e", "sub", "sub/a", "sub/a/b", "x", "docs", "d/docs"}
    for name in MATCHER_PATHS:
        path = tmp_path / name
        if name in folders:
            path.mkdir(parents=True, exist_ok=True)
    tree(tmp_path, {".gitignore": rules})
    matcher = _gitignore.Matcher(_gitignore.parse(rules))
    by_file = ignored(tmp_path, *MATCHER_PATHS)
    compiled = [name for name in MATCHER_PATHS if matcher(name, (tmp_path / name).is_dir)]
    assert compiled == by_file

r"""``.gitignore`` support for the watcher: what git would ignore does not reload.

This is aioreload's one pattern dialect: ``.gitignore`` files, the default ignores and the
patterns given with ``-i``/``ignore=`` and ``watch=`` globs are all read by this module.

Options considered: asking ``git check-ignore`` (exact, but one process per question, and
git may be absent); a dependency such as ``pathspec`` (a package to install for one
feature); a small matcher of our own. We chose the matcher. It follows gitignore(5) for
what projects write in practice:

* ``.gitignore`` files in the watch root, in every folder below it and in the folders above
  it up to the top of the git work tree (the first folder holding ``.git``), plus
  ``.git/info/exclude``; a deeper file overrides a shallower one, a later line an earlier one;
* blank lines, ``#`` comments, ``\#`` and ``\!`` escapes, trailing spaces;
* ``!`` negation, except that nothing inside an ignored folder can be re-included (git's rule);
* a ``/`` at the start or in the middle anchors a pattern to its file's folder, a trailing
  ``/`` matches folders only;
* ``*``, ``?``, ``[...]`` ranges (none of them matches ``/``) and ``**`` (``**/x``,
  ``x/**``, ``a/**/b``).

Not covered: the global ``core.excludesFile``, and files git already tracks (git keeps
watching those even when a pattern matches them; we ignore them).

Each ``.gitignore`` is parsed once and kept while its size and modification time stay the
same. A question costs one ``stat`` per folder between the work tree top and the path.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import final

__all__ = ["Matcher", "Rule", "load", "parse", "parse_line", "read_rules", "translate"]


@final
@dataclass(frozen=True)
class Rule:
    """One pattern line of a ``.gitignore`` file.

    Attributes:
        regex: Matches the path relative to the file's folder (``anchored``) or a bare name.
        negated: The line started with ``!``: a match re-includes the path.
        dir_only: The line ended with ``/``: only folders match.
        anchored: The pattern contained a ``/`` other than a trailing one.
    """

    regex: re.Pattern[str]
    negated: bool
    dir_only: bool
    anchored: bool

    def matches(self, relative: str, name: str, is_dir: bool) -> bool:
        """Whether this rule matches a path (``relative`` to the file's folder, ``name`` its last part)."""
        if self.dir_only and not is_dir:
            return False
        return self.regex.fullmatch(relative if self.anchored else name) is not None


def _translate(pattern: str) -> str:
    """A regular expression for one gitignore glob (``/`` separated, no leading ``/``)."""
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        char = pattern[i]
        if pattern.startswith("**", i) and (i == 0 or pattern[i - 1] == "/"):
            after = i + 2
            if after == n:  # "x/**" (or a lone "**"): everything inside
                out.append(".*")
                i = after
                continue
            if pattern[after] == "/":  # "**/x" or "a/**/b": zero or more folders
                out.append("(?:.*/)?")
                i = after + 1
                continue
        if char == "*":
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif char == "\\" and i + 1 < n:
            i += 1
            out.append(re.escape(pattern[i]))
        elif char == "[":
            end = pattern.find("]", i + 2 if pattern[i + 1 : i + 2] in ("!", "^", "]") else i + 1)
            if end == -1:  # an unterminated range: git matches nothing with this pattern
                out.append("(?!)")
            else:
                out.append(_class_body(pattern[i + 1 : end]))
                i = end
        else:
            out.append(re.escape(char))
        i += 1
    return "".join(out)


def _class_body(body: str) -> str:
    """A ``[...]`` for Python's ``re``: ``!`` negates, ``a-z`` is a range, the rest literal.

    Like every gitignore wildcard, a range never matches ``/``.
    """
    negate = body[:1] in ("!", "^")
    if negate:
        body = body[1:]
    out = []
    i = 0
    while i < len(body):
        if i + 2 < len(body) and body[i + 1] == "-":
            low, high = body[i], body[i + 2]
            # git's reversed range ([z-a]) matches its first character only
            out.append(f"{re.escape(low)}-{re.escape(high)}" if low <= high else re.escape(low))
            i += 3
        else:
            out.append(re.escape(body[i]))
            i += 1
    inner = "".join(out)
    return f"[^/{inner}]" if negate else f"(?!/)[{inner}]"


def parse_line(line: str) -> Rule | None:
    """The rule of one pattern line, or ``None`` for a blank line or a comment."""
    line = line.rstrip("\r")
    # Trailing spaces are ignored unless escaped with a backslash.
    stripped = line.rstrip(" ")
    if stripped.endswith("\\") and len(stripped) < len(line):
        stripped += " "
    line = stripped
    if not line or line.startswith("#"):
        return None
    negated = line.startswith("!")
    if negated or line.startswith(("\\!", "\\#")):  # a negation, or an escaped ! or #
        line = line[1:]
    dir_only = line.endswith("/") and not line.endswith("\\/")
    line = line.rstrip("/") if dir_only else line
    if not line:
        return None
    anchored = "/" in line
    line = line.lstrip("/")
    if not line:
        return None
    try:
        regex = re.compile(_translate(line), re.DOTALL)
    except re.error:  # cannot happen with the translation above; never fail on a user's file
        return None
    return Rule(regex, negated, dir_only, anchored)


def parse(text: str) -> list[Rule]:
    """The rules of one ``.gitignore`` file's text, in file order."""
    return [rule for rule in map(parse_line, text.splitlines()) if rule is not None]


def translate(pattern: str) -> str:
    """A regular expression (for ``fullmatch``) for one ``/``-separated gitignore glob."""
    return _translate(pattern)


def _either(patterns: Sequence[str]) -> str:
    return "|".join(f"(?:{pattern})" for pattern in patterns)


@final
class Matcher:
    """A list of rules compiled once, then asked about many paths relative to one folder.

    It answers as if the rules were a ``.gitignore`` in that folder: a path is ignored when
    the last rule matching it, or one of its folders, is not a ``!`` rule; nothing inside an
    ignored folder comes back.

    One regular expression tells whether any rule matches the path or one of its folders, and
    a second one, for folder-only rules, is asked only when it could change the answer (the
    only time the file system is asked whether the path is a folder). Without ``!`` rules
    (the usual case) that is the answer; with them, a path some rule matched is looked at
    again rule by rule and folder by folder, as git does.

    Args:
        rules: The rules, in order (a later rule wins over an earlier one).
        ignore_case: Match without regard to case (Windows' and macOS' usual file systems).
    """

    def __init__(self, rules: Sequence[Rule], *, ignore_case: bool = False) -> None:
        flags = re.DOTALL | (re.IGNORECASE if ignore_case else 0)
        self._rules = tuple(
            Rule(re.compile(rule.regex.pattern, flags), rule.negated, rule.dir_only, rule.anchored)
            for rule in rules
        )
        self._ordered = any(rule.negated for rule in self._rules)
        self._any: re.Pattern[str] | None = None
        self._dir: re.Pattern[str] | None = None

        def sources(anchored: bool, dir_only: bool) -> list[str]:
            return [
                rule.regex.pattern
                for rule in self._rules
                if rule.anchored == anchored and rule.dir_only == dir_only
            ]

        names, name_dirs = sources(False, False), sources(False, True)
        paths, path_dirs = sources(True, False), sources(True, True)
        # Matched by a rule: the path itself, or a folder above it (then followed by "/...").
        whole = []
        if names:
            whole.append(f"(?:.*/)?(?:{_either(names)})(?:/.*)?")
        if name_dirs:
            whole.append(f"(?:.*/)?(?:{_either(name_dirs)})/.*")
        if paths:
            whole.append(f"(?:{_either(paths)})(?:/.*)?")
        if path_dirs:
            whole.append(f"(?:{_either(path_dirs)})/.*")
        if whole:
            self._any = re.compile(_either(whole), flags)
        # Folder-only rules matching the path itself: they count only if it is a folder.
        itself = []
        if name_dirs:
            itself.append(f"(?:.*/)?(?:{_either(name_dirs)})")
        if path_dirs:
            itself.append(_either(path_dirs))
        if itself:
            self._dir = re.compile(_either(itself), flags)

    def __call__(self, relative: str, is_dir: Callable[[], bool]) -> bool:
        """Whether ``relative`` (``/``-separated, below the folder) is ignored.

        Args:
            relative: The path below the rules' folder, ``a/b/c.py``; ``""`` is never ignored.
            is_dir: Tells whether the path is a folder; called only when the answer depends on it.
        """
        if not relative:
            return False
        # Whether any rule (as if none were "!") matches the path or a folder above it.
        matched = self._any is not None and self._any.fullmatch(relative) is not None
        if not matched:
            matched = self._dir is not None and self._dir.fullmatch(relative) is not None and is_dir()
        if not matched or not self._ordered:
            return matched
        parts = relative.split("/")
        last = len(parts) - 1
        for index in range(last):
            if self._verdict("/".join(parts[: index + 1]), parts[index], True):
                return True
        as_file = self._verdict(relative, parts[last], False)
        if as_file == self._verdict(relative, parts[last], True):
            return bool(as_file)
        return bool(self._verdict(relative, parts[last], is_dir()))

    def _verdict(self, relative: str, name: str, is_dir: bool) -> bool | None:
        for rule in reversed(self._rules):
            if rule.matches(relative, name, is_dir):
                return not rule.negated
        return None


# path of a .gitignore -> ((size, mtime_ns), its rules); missing files are not kept.
_cache: dict[str, tuple[tuple[int, int], list[Rule]]] = {}


def read_rules(path: str) -> list[Rule]:
    """The rules of the ignore file at ``path`` (none if it is missing), parsed once per version."""
    try:
        info = os.stat(path)
    except OSError:
        _cache.pop(path, None)
        return []
    key = (info.st_size, info.st_mtime_ns)
    cached = _cache.get(path)
    if cached is not None and cached[0] == key:
        return cached[1]
    try:
        with open(path, encoding="utf-8", errors="replace") as file:
            rules = parse(file.read())
    except OSError:
        rules = []
    _cache[path] = (key, rules)
    return rules


def _work_tree(root: str) -> str:
    """The top of the git work tree holding ``root``, or ``root`` itself outside git."""
    folder = root
    while True:
        if os.path.exists(os.path.join(folder, ".git")):
            return folder
        parent = os.path.dirname(folder)
        if parent == folder:
            return root
        folder = parent


def _decide(sources: Sequence[tuple[int, list[Rule]]], parts: Sequence[str], is_dir: bool) -> bool | None:
    """The last matching rule's verdict for one path (``True``: ignored), deepest file first."""
    name = parts[-1]
    for depth, rules in reversed(sources):
        relative = "/".join(parts[depth:])
        for rule in reversed(rules):
            if rule.matches(relative, name, is_dir):
                return not rule.negated
    return None


def load(root: Path) -> Callable[[str], bool]:
    """A predicate telling whether an absolute path under ``root`` is ignored by git.

    Args:
        root: A watch root. The ``.gitignore`` files from the top of its git work tree down
            to each path's folder apply.

    Returns:
        ``ignored(path)``: ``True`` when git would ignore ``path`` or one of its folders.
    """
    start = os.path.abspath(os.fspath(root))
    top = _work_tree(start)
    # The root was asked for explicitly: it and the folders above it are never ignored,
    # though their rules apply below it.
    first = 0 if start == top else len(os.path.relpath(start, top).split(os.sep))
    exclude = os.path.join(top, ".git", "info", "exclude")
    prefix = top.rstrip(os.sep) + os.sep

    def ignored(path: str) -> bool:
        if not path.startswith(prefix):
            return False
        parts = path[len(prefix) :].split(os.sep)
        sources: list[tuple[int, list[Rule]]] = [(0, read_rules(exclude))]
        folder = top
        for index, part in enumerate(parts):
            sources.append((index, read_rules(os.path.join(folder, ".gitignore"))))
            if part == ".git":
                return True
            if index < first:
                folder = os.path.join(folder, part)
                continue
            prefix_parts = parts[: index + 1]
            if index < len(parts) - 1:
                verdict = _decide(sources, prefix_parts, is_dir=True)
            else:
                # Whether the last part is a folder matters only when a folder-only rule makes
                # the two answers differ; ask the file system then and only then.
                verdict = _decide(sources, prefix_parts, is_dir=False)
                if verdict != _decide(sources, prefix_parts, is_dir=True):
                    verdict = _decide(sources, prefix_parts, is_dir=os.path.isdir(path))
            if verdict:
                return True
            folder = os.path.join(folder, part)
        return False

    return ignored

r"""Which changed paths matter, and which folders are worth watching at all.

Shared by every change source (inotify, polling, watchfiles' engine) so that all of them
ignore exactly the same paths.

One pattern dialect, gitignore's (see ``_gitignore``), for everything: the default ignores,
``-i``/``ignore=`` patterns, ``.gitignore`` files and ``watch=`` globs. Each ignore pattern
is read as one line of a ``.gitignore`` in every watch root:

* ``*.log``, ``src``, ``.cache/``: a pattern without a ``/`` (a trailing one aside) matches a
  name at any depth; everything inside a matching folder is ignored with it;
* ``app_second/js``, ``**/logs/*``, ``/build``, ``./build``: a ``/`` at the start or in the
  middle anchors the pattern at the watch root (``./`` is read as a leading ``/``);
* ``/home/me/app/logs``: an absolute path under a watch root anchors at that root alone.
  A leading ``/`` is read as an absolute path when the path lies under a watch root, or when
  its first folder exists at the top of the file system and not in any watch root
  (``/tmp/x``); an absolute path outside every root can never match and is refused;
* ``!keep.log``: re-includes what an earlier pattern or a default ignored (not what a
  ``.gitignore`` ignored, and nothing inside an ignored folder, as in git);
* a leading ``#`` is a literal character here, not a comment.

A watch root you name is never ignored itself. When watch roots are nested, the deepest one
holding a path is the one its patterns and ``.gitignore`` are read from.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import final

from . import _gitignore, _validate
from ._types import ConfigError

__all__ = ["DEFAULT_IGNORE_DIRS", "DEFAULT_IGNORE_GLOBS", "PathFilter", "split_watch"]

# Ignored at any depth, with everything inside them (files of these names too).
DEFAULT_IGNORE_DIRS = frozenset(
    {
        ".git",
        ".hg",
        ".svn",
        "__pycache__",
        ".mypy_cache",
        ".pytest_cache",
        ".ruff_cache",
        ".hypothesis",
        ".tox",
        ".nox",
        ".venv",
        "venv",
        ".direnv",
        "node_modules",
        ".idea",
        ".vscode",
    }
)
# gitignore patterns, matched against names at any depth.
DEFAULT_IGNORE_GLOBS = (
    # compiled Python
    "*.py[cod]",
    # editors' swap, backup and temporary files: vim, Emacs, JetBrains, VS Code, macOS
    "*.sw[a-p]",
    "*.swx",
    "4913",
    "*~",
    ".#*",
    "#*#",
    "flycheck_*",
    "*___jb_tmp___",
    "*___jb_old___",
    "*.crswap",
    "*.tmp",
    ".DS_Store",
    # what a running app writes into its own folder: SQLite databases and journals, logs
    "*.sqlite",
    "*.sqlite3",
    "*.db",
    "*.sqlite-journal",
    "*.sqlite-wal",
    "*.sqlite-shm",
    "*.sqlite3-journal",
    "*.sqlite3-wal",
    "*.sqlite3-shm",
    "*.db-journal",
    "*.db-wal",
    "*.db-shm",
    "*.log",
)

_IGNORE_CASE = os.path.normcase("A") == "a"
_WILDCARDS = frozenset("*?[")


def _slashes(text: str) -> str:
    """``text`` with ``/`` separators (on Windows a backslash is a separator, not an escape)."""
    return text.replace("\\", "/") if os.sep == "\\" else text


def _has_wildcard(part: str) -> bool:
    i = 0
    while i < len(part):
        if part[i] == "\\":
            i += 2
            continue
        if part[i] in _WILDCARDS:
            return True
        i += 1
    return False


def _unescape(part: str) -> str:
    return re.sub(r"\\(.)", r"\1", part, flags=re.DOTALL)


def _escape(text: str) -> str:
    """``text`` as a literal in a gitignore pattern."""
    return re.sub(r"([\\*?\[])", r"\\\1", text)


def _split_glob(pattern: str) -> tuple[str, str] | None:
    """``(folder, rest)`` of a ``/``-separated glob, or ``None`` when it has no wildcard.

    ``folder`` is the longest leading run of parts without a wildcard, unescaped (``""`` for
    none, ``/`` for the file system's top); ``rest`` is the glob from the first wildcard on.
    """
    parts = pattern.split("/")
    for index, part in enumerate(parts):
        if _has_wildcard(part):
            folder = "/".join(_unescape(p) for p in parts[:index])
            if not folder and pattern.startswith("/"):
                folder = "/"
            return folder, "/".join(parts[index:])
    return None


def split_watch(items: Iterable[str | os.PathLike[str]], base: Path) -> tuple[list[Path], list[str]]:
    """Watch roots and include patterns for ``watch=`` items: folders, files and globs.

    A plain path (one holding no ``*``, ``?`` or ``[``, or one that exists as written) is a
    root, resolved against ``base``. A glob (gitignore's dialect: ``conf/*.toml``,
    ``src/**/*.py``) makes its longest folder without a wildcard a root, watched for what
    matches the glob alone: a file matching it, or anything inside a folder matching it.

    Args:
        items: What to watch, relative to ``base`` or absolute.
        base: The folder relative items are resolved against (the child's working folder).

    Returns:
        The roots (resolved, without duplicates, in the order given) and the include patterns
        for :class:`PathFilter` (absolute, in gitignore's dialect). A root named both plainly
        and through a glob is watched whole.

    Raises:
        ConfigError: a plain path does not exist, or a glob's folder does not.
    """
    roots: list[Path] = []
    plain: set[Path] = set()
    globs: list[tuple[Path, str]] = []
    for item in items:
        text = os.fspath(item)
        if not isinstance(text, str):
            raise ConfigError(f"watch path must be a string, got {item!r}")
        if not text:
            raise ConfigError("watch path is empty ('') (give a folder, a file or a glob)")
        literal = base / text
        split = None if os.path.lexists(literal) else _split_glob(_slashes(text))
        if split is None:
            if not literal.exists():
                raise ConfigError(f"watch path does not exist: {text!r} (create it or fix the path)")
            roots.append(literal.resolve())
            plain.add(roots[-1])
            continue
        folder_text, rest = split
        folder = base / folder_text if folder_text else base
        if not folder.is_dir():
            what = (
                "is not a folder (fix the glob)"
                if folder.exists()
                else "does not exist (create it or fix the glob)"
            )
            raise ConfigError(f"watch glob {text!r}: its folder {folder_text or '.'!r} {what}")
        roots.append(folder.resolve())
        globs.append((roots[-1], rest))
    include = [
        f"{_escape(_slashes(str(folder)).rstrip('/'))}/{rest}"
        for folder, rest in globs
        if folder not in plain
    ]
    return list(dict.fromkeys(roots)), list(dict.fromkeys(include))


@final
class _Includes:
    """The globs that choose what counts under one watch root that came from ``watch=`` globs."""

    def __init__(self, globs: Sequence[str]) -> None:
        flags = re.DOTALL | (re.IGNORECASE if _IGNORE_CASE else 0)
        whole = []
        # Per glob, one regex per part (None for "**"), to tell which folders may hold a match.
        self.parts: list[list[re.Pattern[str] | None]] = []
        for glob in globs:
            dir_only = glob.endswith("/")
            body = glob.rstrip("/")
            regex = _gitignore.translate(body)
            # A match, or anything inside a matching folder (only that, for "dir/").
            whole.append(f"(?:{regex})/.*" if dir_only else f"(?:{regex})(?:/.*)?")
            self.parts.append(
                [
                    None if part == "**" else re.compile(_gitignore.translate(part), flags)
                    for part in body.split("/")
                ]
            )
        self.regex = re.compile("|".join(whole), flags)

    def matches(self, relative: str) -> bool:
        """Whether the file at ``relative`` (below the root) counts."""
        return self.regex.fullmatch(relative) is not None

    def may_hold(self, relative: str) -> bool:
        """Whether the folder at ``relative`` may hold something that counts (or counts whole)."""
        names = relative.split("/")
        for parts in self.parts:
            for name, part in zip(names, parts, strict=False):  # stop at the shorter
                if part is None:  # "**": any depth from here
                    return True
                if part.fullmatch(name) is None:
                    break
            else:
                return True
        return False


@final
@dataclass
class _Root:
    """One watch root and what applies below it."""

    path: str
    prefix: str
    ignored: _gitignore.Matcher
    gitignored: Callable[[str], bool] | None
    includes: _Includes | None  # None: the root was named plainly, everything below counts


@final
class PathFilter:
    """Decides which changed paths matter and which folders are worth watching.

    A path below a watch root is ignored when a pattern (the defaults, then ``ignore``) or a
    ``.gitignore`` ignores it or one of its folders (see the module's notes on the dialect).
    With ``extensions`` set, only files with one of those suffixes count. Below a root that
    came from a ``watch=`` glob only what an ``include`` pattern matches counts. Whatever
    passed all that is finally given to ``watch_filter``.

    Everything is compiled once here: a question costs a few prefix comparisons, one or two
    regular expression matches, and a ``stat`` only where a folder-only pattern or a
    folder-shaped answer depends on it (plus the ``.gitignore`` checks when ``gitignore``).

    Args:
        ignore: Ignore patterns in gitignore's dialect, relative to each watch root or absolute
            under one.
        ignore_dirs: Names ignored at any depth with everything inside them (default:
            :data:`DEFAULT_IGNORE_DIRS`).
        extensions: When given, only files with these suffixes count (``py``, ``.py``,
            ``"js,coffee"``).
        roots: The watch roots (absolute, resolved), as from :func:`split_watch`.
        gitignore: Also ignore what the ``.gitignore`` files of the roots ignore.
        include: Absolute glob patterns from :func:`split_watch`; each one's folder must be one
            of ``roots``, below which only what they match counts.
        watch_filter: Called with each changed path (absolute) that passed the other rules;
            returning ``False`` ignores it. Exceptions it raises propagate.

    Raises:
        ConfigError: a pattern that is empty or can never match (an absolute path outside
            every root, ``..``), an extension that cannot match, or an include pattern
            whose folder is not a root.
    """

    def __init__(
        self,
        *,
        ignore: Iterable[str] = (),
        ignore_dirs: Iterable[str] = DEFAULT_IGNORE_DIRS,
        extensions: Iterable[str] = (),
        roots: Sequence[str | os.PathLike[str]] = (),
        gitignore: bool = False,
        include: Iterable[str] = (),
        watch_filter: Callable[[str], bool] | None = None,
    ) -> None:
        self.roots = tuple(os.path.normpath(os.fspath(root)) for root in roots)
        self.extensions = _validate.extensions(extensions)
        self.watch_filter = watch_filter
        folders = [root for root in self.roots if os.path.isdir(root)]
        defaults = [_escape(name) for name in sorted(ignore_dirs)] + list(DEFAULT_IGNORE_GLOBS)
        common: list[_gitignore.Rule] = [rule for rule in map(_one_rule, defaults) if rule is not None]
        # Per pattern: its rule for every root (None), or for the roots it lies under.
        patterns: list[tuple[_gitignore.Rule, dict[str, _gitignore.Rule] | None]] = []
        for pattern in [ignore] if isinstance(ignore, str) else ignore:
            patterns.append(_ignore_rule(pattern, folders))
        globs: dict[str, list[str]] = {}
        for pattern in include:
            folder, rest = _include_parts(pattern, self.roots)
            globs.setdefault(folder, []).append(rest)
        matchers: dict[tuple[int, ...], _gitignore.Matcher] = {}

        def matcher(rules: list[_gitignore.Rule]) -> _gitignore.Matcher:
            key = tuple(id(rule) for rule in rules)  # roots with the same rules share one
            if key not in matchers:
                matchers[key] = _gitignore.Matcher(rules, ignore_case=_IGNORE_CASE)
            return matchers[key]

        # Paths below no root are asked about by name, so only name patterns apply to them.
        everywhere = [rule for rule, only in patterns if only is None]
        self._elsewhere = _gitignore.Matcher(
            [rule for rule in common + everywhere if not rule.anchored], ignore_case=_IGNORE_CASE
        )
        records = []
        for root in dict.fromkeys(self.roots):
            rules = common + [
                rule if only is None else only[root]
                for rule, only in patterns
                if only is None or root in only
            ]
            loaded = _gitignore.load(Path(root)) if gitignore and root in folders else None
            records.append(
                _Root(
                    path=root,
                    prefix=root if root.endswith(os.sep) else root + os.sep,
                    ignored=matcher(rules),
                    gitignored=loaded,
                    includes=_Includes(globs[root]) if root in globs else None,
                )
            )
        # Deepest first: the deepest root holding a path decides what ignores it.
        self._roots = sorted(records, key=lambda record: len(record.path), reverse=True)
        self._restricted = bool(globs)

    def __call__(self, path: str) -> bool:
        """Whether a change to ``path`` (absolute) should cause a reload."""
        name = os.path.basename(path)
        if self.extensions and not name.endswith(self.extensions) and not os.path.isdir(path):
            return False
        root = self._root_of(path)
        if root is None:
            if self._elsewhere(name, lambda: os.path.isdir(path)):
                return False
        elif path != root.path:
            relative = _relative(path, root)
            if root.ignored(relative, lambda: os.path.isdir(path)):
                return False
            if root.gitignored is not None and root.gitignored(path):
                return False
            if self._restricted and not self._counts(path, folder=False):
                return False
        return self.watch_filter is None or bool(self.watch_filter(path))

    def skip_folder(self, path: str) -> bool:
        """Whether the folder ``path`` should not be watched at all (nothing in it can count)."""
        root = self._root_of(path)
        if root is None:
            return self._elsewhere(os.path.basename(path), lambda: True)
        if path == root.path:
            return False
        if root.ignored(_relative(path, root), lambda: True):
            return True
        if root.gitignored is not None and root.gitignored(path):
            return True
        return self._restricted and not self._counts(path, folder=True)

    def _root_of(self, path: str) -> _Root | None:
        for root in self._roots:
            if path.startswith(root.prefix) or path == root.path:
                return root
        return None

    def _counts(self, path: str, *, folder: bool) -> bool:
        """Whether ``path`` is wanted by the roots holding it (plain ones want everything)."""
        holders = [root for root in self._roots if path.startswith(root.prefix)]
        if any(root.includes is None for root in holders):
            return True
        globbed = [(root.includes, _relative(path, root)) for root in holders if root.includes is not None]
        if not folder and any(includes.matches(relative) for includes, relative in globbed):
            return True
        if not folder and not os.path.isdir(path):  # a folder (created, moved in) may hold matches
            return False
        return any(includes.may_hold(relative) for includes, relative in globbed)


def _relative(path: str, root: _Root) -> str:
    relative = path[len(root.prefix) :]
    return relative.replace(os.sep, "/") if os.sep != "/" else relative


def _one_rule(pattern: str) -> _gitignore.Rule | None:
    """The rule for one pattern (not a file line: a leading ``#`` is literal)."""
    return _gitignore.parse_line("\\" + pattern if pattern.startswith("#") else pattern)


def _ignore_rule(
    pattern: object, folders: Sequence[str]
) -> tuple[_gitignore.Rule, dict[str, _gitignore.Rule] | None]:
    """One ``ignore`` pattern's rule for every root (``None``), or per root it lies under."""
    if not isinstance(pattern, str):
        raise ConfigError(f"an ignore pattern must be a string, got {pattern!r}")
    if not pattern.strip() or pattern.strip() == "!":
        raise ConfigError(f"ignore pattern {pattern!r} is empty (give a name or glob such as '*.log')")
    if any(char in pattern for char in "\n\r\0"):
        raise ConfigError(f"ignore pattern {pattern!r} holds a line break or NUL (give one pattern per item)")
    negation = "!" if pattern.startswith("!") else ""
    body = _slashes(pattern[len(negation) :])
    if body.startswith("./"):  # "./build", "././build": anchored at the root, like "/build"
        body = "/" + re.sub(r"^(?:\./+)+", "", body)
    if ".." in body.strip("/").split("/"):
        raise ConfigError(
            f"ignore pattern {pattern!r} climbs out of the watch root with '..', so it can never match "
            "(give a path under a watch root, or a pattern relative to it)"
        )
    only = None
    if body.startswith("/") if os.sep == "/" else os.path.splitdrive(body)[0]:
        only = _absolute_rules(pattern, negation, body, folders)
    rule = _one_rule(negation + body)
    if rule is None:
        raise ConfigError(f"ignore pattern {pattern!r} is empty (give a name or glob such as '*.log')")
    return rule, only


def _absolute_rules(
    pattern: str, negation: str, body: str, folders: Sequence[str]
) -> dict[str, _gitignore.Rule] | None:
    """Rules for an absolute ``body`` per root it is under; ``None`` if it is root-anchored."""
    trail = "/" if body.endswith("/") else ""
    stripped = body.rstrip("/") or "/"
    split = _split_glob(stripped)
    folder, rest = split if split is not None else (_unescape(stripped), "")
    candidates = dict.fromkeys([os.path.normpath(folder), os.path.realpath(folder)])
    found: dict[str, _gitignore.Rule] = {}
    for root in folders:
        for candidate in candidates:
            if candidate == root and not rest:
                raise ConfigError(
                    f"ignore pattern {pattern!r} is a watch root itself; a watched folder is never ignored "
                    "(stop watching it instead)"
                )
            if candidate == root or candidate.startswith(root.rstrip(os.sep) + os.sep):
                inner = _escape(_slashes(os.path.relpath(candidate, root)))
                inner = "" if inner == "." else inner
                relative = "/".join(part for part in (inner, rest) if part)
                rule = _one_rule(f"{negation}/{relative}{trail}")
                if rule is not None:
                    found[root] = rule
                break
    if found:
        return found
    if not folders:
        return None
    if os.sep == "/":
        first = stripped.lstrip("/").split("/")[0]
        if _has_wildcard(first) or not os.path.lexists("/" + _unescape(first)):
            return None  # "/build": gitignore's anchoring at each root
        if any(os.path.lexists(os.path.join(root, _unescape(first))) for root in folders):
            return None  # "/tmp" while a root holds tmp: that one
    raise ConfigError(
        f"ignore pattern {pattern!r} is an absolute path outside every watch root, so it can never match "
        "(give a path under a watch root, or './NAME' for a name at the top of each root)"
    )


def _include_parts(pattern: str, roots: Sequence[str]) -> tuple[str, str]:
    """The root and the glob below it of one include pattern."""
    split = _split_glob(_slashes(pattern)) if isinstance(pattern, str) else None
    if split is not None:
        folder = os.path.normpath(split[0])
        if os.path.isabs(folder) and folder in roots:
            return folder, split[1]
    raise ConfigError(
        f"include pattern {pattern!r} must be an absolute glob whose folder is a watch root "
        "(split_watch makes both)"
    )

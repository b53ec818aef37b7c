"""How long to wait before restarting a child that crashed: a small pure object."""

from __future__ import annotations

from typing import final

__all__ = ["Backoff"]


@final
class Backoff:
    """Exponential delays for crash restarts: ``first``, doubling per crash in a row, up to ``cap``.

    A child that ran for ``cap`` seconds or longer before crashing starts the sequence over:
    it ran well for a while, so this is a new problem, not the same one again.

    >>> backoff = Backoff(0.5, 4.0)
    >>> [backoff.next(lived=0.1) for _ in range(5)]
    [0.5, 1.0, 2.0, 4.0, 4.0]
    >>> backoff.next(lived=10.0)
    0.5
    """

    def __init__(self, first: float, cap: float) -> None:
        self.first = first
        self.cap = max(first, cap)
        self._delay = 0.0

    def __repr__(self) -> str:
        return f"<Backoff first={self.first} cap={self.cap} last={self._delay}>"

    def next(self, *, lived: float) -> float:
        """The delay before restarting a child that crashed after running ``lived`` seconds."""
        if lived >= self.cap:
            self._delay = 0.0
        self._delay = min(self.cap, max(self.first, self._delay * 2))
        return self._delay

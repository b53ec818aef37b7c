"""Telling systemd how the program is doing: the notify protocol, spoken by the command line.

When aioreload is a systemd service (``Type=notify`` or ``Type=notify-reload``), systemd
gives it ``NOTIFY_SOCKET`` (a datagram socket; a leading ``@`` is Linux's abstract namespace)
and waits for ``READY=1``. We send:

* ``READY=1`` once the first child is ready: reported readiness for a child that gives it
  (``serve``), else started;
* on each reload ``RELOADING=1`` with ``MONOTONIC_USEC`` (CLOCK_MONOTONIC, as
  ``Type=notify-reload`` requires), then ``READY=1`` once it is over, also when it failed
  (with a ``STATUS=`` saying so), so ``systemctl reload`` never hangs;
* ``STOPPING=1`` when asked to stop;
* ``STATUS=`` with each status line;
* ``WATCHDOG=1`` every half ``WATCHDOG_USEC`` while the event loop runs (``WatchdogSec=``).

Only the program that owns its process speaks (the command line, :func:`aioreload.run`): an
embedded :class:`Supervisor` never talks to systemd for its host. The variables are taken out
of the environment, so no child ever sees them; each child gets a private notify socket of
its own instead (``_notify``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
from collections.abc import MutableMapping
from typing import final

import anyio

from ._types import EventKind, ReloadReason, SupervisorEvent

__all__ = ["SystemdNotifier"]

logger = logging.getLogger(__name__)

_VARIABLES = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")
_STATUS_MAX = 200  # characters of a status line in STATUS=


@final
class SystemdNotifier:
    """Sends notify messages to systemd's socket; every method is a no-op without one.

    Args:
        address: ``NOTIFY_SOCKET``'s value (``None``: nobody listens).
        watchdog: Seconds between ``WATCHDOG=1`` pings (``None``: no watchdog).
        wait_ready: The first child reports readiness itself; ``READY=1`` waits for it.
    """

    def __init__(self, address: str | None, *, watchdog: float | None = None, wait_ready: bool = False):
        self.address = address
        self.watchdog = watchdog
        self.wait_ready = wait_ready
        self.ready_sent = False
        self.reloading = False
        self.closing = False
        self._newest = 0  # the newest child's generation: older ones are being retired
        self._socket: socket.socket | None = None
        if address:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            sock.setblocking(False)
            self._socket = sock

    @classmethod
    def from_environ(cls, environ: MutableMapping[str, str], *, wait_ready: bool = False) -> SystemdNotifier:
        """Take the variables systemd set for this process out of ``environ``."""
        address = environ.get("NOTIFY_SOCKET") or None
        usec = environ.get("WATCHDOG_USEC", "")
        owner = environ.get("WATCHDOG_PID", "")
        for name in _VARIABLES:
            environ.pop(name, None)
        watchdog = None
        if usec.isdigit() and int(usec) > 0 and (not owner or owner == str(os.getpid())):
            watchdog = int(usec) / 1e6 / 2
        return cls(address, watchdog=watchdog, wait_ready=wait_ready)

    def close(self) -> None:
        """Close our socket."""
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    def send(self, **fields: str | int) -> None:
        """Send one message (``READY=1``...); failures are logged, never raised."""
        if self._socket is None or self.address is None:
            return
        text = "\n".join(f"{key}={value}" for key, value in fields.items())
        target = self.address
        if target.startswith("@"):
            target = "\0" + target[1:]
        try:
            self._socket.sendto(text.encode(), target)
        except OSError as exc:
            logger.debug("could not notify systemd at %s: %s", self.address, exc)

    # -- what happened -----------------------------------------------------------------------

    def status(self, line: str) -> None:
        """Mirror a status line."""
        self.send(STATUS=line[:_STATUS_MAX])

    def reload_requested(self) -> None:
        """A reload begins (SIGHUP, a change, a trigger): ``RELOADING=1`` once per reload."""
        if self.ready_sent and not self.reloading and not self.closing:
            self.reloading = True
            usec = time.monotonic_ns() // 1000  # CLOCK_MONOTONIC on Linux, as systemd reads it
            self.send(RELOADING=1, MONOTONIC_USEC=usec)

    def stopping(self) -> None:
        """We were asked to stop: say so, and nothing else from now on."""
        if not self.closing:
            self.closing = True
            self.send(STOPPING=1)

    def on(self, event: SupervisorEvent) -> None:
        """Follow the supervisor's events: READY=1 at first, and after each reload."""
        kind = event.kind
        if self.closing or event.generation < self._newest:  # the final stop; a retired child
            return
        if kind in (EventKind.CHANGED, EventKind.STOPPING):
            self.reload_requested()
        elif kind is EventKind.STARTED:
            self._newest = event.generation
            if event.reason is not ReloadReason.FIRST_START:
                self.reload_requested()
            if not self.wait_ready:
                self._ready()
        elif kind is EventKind.READY:
            self._ready()
        elif kind in (
            EventKind.RELOAD_FAILED,
            EventKind.SPAWN_FAILED,
            EventKind.SKIPPED,
            EventKind.EXITED,
        ) and (self.reloading):
            self.reloading = False
            self.ready_sent = True
            why = event.message or f"the new child {kind} (exit status {event.returncode})"
            self.send(READY=1, STATUS=f"reload failed: {why}"[:_STATUS_MAX])

    def _ready(self) -> None:
        if not self.ready_sent or self.reloading:
            self.ready_sent = True
            self.reloading = False
            self.send(READY=1)

    async def keep_alive(self) -> None:
        """Send ``WATCHDOG=1`` every half ``WATCHDOG_USEC`` for as long as the event loop runs."""
        if self.watchdog is None:
            return
        while True:
            self.send(WATCHDOG=1)
            await anyio.sleep(self.watchdog)

    def __enter__(self) -> SystemdNotifier:
        return self

    def __exit__(self, *_: object) -> None:
        with contextlib.suppress(OSError):
            self.close()

"""Reopening a port that vanished (USB unplugged, board re-enumerated), with bounded backoff.

A USB-serial stage that drops off the bus usually comes back under the same stable name (a udev
symlink such as /dev/wbcscope-stage, see docs/hardware.md) within a second or two. Reopening it
resets most boards (the Arduino auto-reset on DTR, or the power loss itself), so whoever reconnects
must treat the position as lost. ``reopen_with_backoff`` does the retrying; ``ReconnectingStage`` is
the part both drivers share: noticing the loss, reconnecting once per loss, marking the position lost.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

from firmware_interface.errors import (
    PositionLostError,
    StageBusyError,
    StageConnectionError,
    StageError,
    StageTimeoutError,
)
from firmware_interface.serial_lines import LineLink
from firmware_interface.stage import FirmwareInfo

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class ReconnectPolicy:
    attempts: int = 3
    """How many times to try reopening; 0 disables reconnecting."""
    backoff_s: float = 0.5
    """Wait before the first attempt; doubled after each failure up to ``max_backoff_s``."""
    max_backoff_s: float = 5.0

    def __post_init__(self) -> None:
        if self.attempts < 0 or self.backoff_s < 0 or self.max_backoff_s < 0:
            raise ValueError("reconnect attempts and backoff must be >= 0")

    def delays_s(self) -> Iterator[float]:
        delay = self.backoff_s
        for _ in range(self.attempts):
            yield delay
            delay = min(self.max_backoff_s, max(delay * 2.0, 0.05))


def reopen_with_backoff(open_fn: Callable[[], T], policy: ReconnectPolicy, port: str,
                        cancel: threading.Event | None = None) -> T:
    """Call ``open_fn`` until it succeeds, waiting the policy's delays in between.

    Connection, busy (the old handle may not be released yet) and handshake-timeout errors are
    retried; anything else propagates. Raises StageConnectionError once the attempts are spent or
    ``cancel`` is set (the driver is being closed).
    """
    cancel = cancel or threading.Event()
    last: Exception | None = None
    for attempt, delay_s in enumerate(policy.delays_s(), start=1):
        if cancel.wait(delay_s):
            break
        try:
            result = open_fn()
        except (StageConnectionError, StageBusyError, StageTimeoutError) as exc:
            last = exc
            log.warning("reconnect to %s, attempt %d/%d failed: %s", port, attempt,
                        policy.attempts, exc)
            continue
        log.warning("reconnected to %s on attempt %d/%d", port, attempt, policy.attempts)
        return result
    reason = f": {last}" if last is not None else ""
    raise StageConnectionError(
        f"stage port {port} vanished and could not be reopened "
        f"({policy.attempts} attempt(s)){reason}") from last


class ReconnectingStage:
    """Mixin: what both stage drivers do when their port vanishes, so they do it the same way.

    The driver provides ``port``, ``_link`` (a ``LineLink``), ``_open_and_handshake()`` (open the
    link and identify the controller, setting ``firmware_info``, closing the link again if that
    fails) and ``_mark_lost(reason)``. It calls ``_init_reconnect`` from ``__init__``, calls
    ``_ensure_connected`` before talking to the controller and sends every call that can notice a
    vanished port through ``_guarded``. ``connect`` and ``close`` are this mixin's.
    """

    port: str
    _link: LineLink
    firmware_info: FirmwareInfo | None

    def connect(self) -> FirmwareInfo:
        self._closing.clear()
        try:
            self._open_and_handshake()
        except StageError:
            self.close()
            raise
        assert self.firmware_info is not None
        return self.firmware_info

    def close(self) -> None:
        self._closing.set()  # interrupts a reconnect backoff in another thread
        self._link.close()

    @property
    def serial_errors(self) -> int:
        """Serial faults seen on this stage's port (lost port, reply timeouts, garbled lines)."""
        return self._link.error_count

    def _init_reconnect(self, attempts: int, backoff_s: float) -> None:
        self.reconnect = ReconnectPolicy(attempts=attempts, backoff_s=backoff_s)
        self._reconnect_lock = threading.Lock()
        self._closing = threading.Event()
        """Set by ``close``: interrupts a backoff in another thread and stops further reopening."""
        self._vanished = False

    # -- provided by the driver ----------------------------------------------------------------
    def _open_and_handshake(self) -> None:
        raise NotImplementedError

    def _mark_lost(self, reason: str) -> None:
        raise NotImplementedError

    def _on_vanished(self) -> None:
        """Forget per-connection state (a move in progress, a cached target). Default: nothing."""

    # -- used by the driver --------------------------------------------------------------------
    def _ensure_connected(self) -> None:
        if self._vanished or self._link.lost:
            self._reconnect()

    def _guarded(self, what: str, call: Callable[[], T]) -> T:
        """Run ``call``; if the port vanished meanwhile, reconnect and raise PositionLostError
        (whatever ``call`` was doing died with the port and the controller restarted)."""
        try:
            return call()
        except (StageConnectionError, StageTimeoutError) as exc:
            if not self._port_vanished(exc):
                raise
            self._vanished = True
            self._reconnect()
            raise PositionLostError(
                f"stage {self.port}: the port vanished during {what}; reconnected, but the "
                "controller restarted, so its position is lost") from None

    def _port_vanished(self, exc: StageError) -> bool:
        if self._link.lost:
            return True
        # The reader may notice the loss only after the wait gave up, so a timeout on a port that
        # is not (yet) lost stays a timeout: a slow board must not trigger a reboot. A failed
        # write on an open port is a vanished port; a port we closed ourselves is not reopened
        # behind the caller's back.
        return (isinstance(exc, StageConnectionError) and self._link.opened
                and not self._closing.is_set())

    def _reconnect(self) -> None:
        with self._reconnect_lock:
            if not (self._vanished or self._link.lost):
                return  # another thread already reconnected
            self._vanished = True
            self._link.close()
            self._on_vanished()
            reopen_with_backoff(self._open_and_handshake, self.reconnect, self.port,
                                cancel=self._closing)
            self._vanished = False
            self._mark_lost("the port vanished and was reopened; the controller restarted")

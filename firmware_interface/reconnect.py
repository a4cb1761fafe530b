"""Reopening a port that vanished (USB unplugged, board re-enumerated), with bounded backoff.

A USB-serial stage that drops off the bus usually comes back under the same stable name (a udev
symlink such as /dev/wbcscope-stage, see docs/hardware.md) within a second or two. Reopening it
resets most boards (the Arduino auto-reset on DTR, or the power loss itself), so whoever reconnects
must treat the position as lost; this module only does the retrying.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

from firmware_interface.errors import StageBusyError, StageConnectionError, StageTimeoutError

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

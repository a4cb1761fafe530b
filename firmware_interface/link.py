"""The serial link to a GRBL controller: one reader thread, send-response commands, push routing.

A reader thread (``serial_lines``, shared with the Sangaboard link) splits the byte stream into lines. Push messages (status reports,
``ALARM:N``, ``[MSG:...]``, the start-up banner) are routed to state and callbacks; ``ok`` and
``error:N`` complete the one command in flight. Only one command is ever outstanding, so replies
cannot be mismatched by counting; after a timeout or a garbled reply the link resynchronises with a
marker query (``$G``) before the next command, discarding any late replies.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field


from firmware_interface import grbl_protocol as gp
from firmware_interface import serial_lines
from firmware_interface.grbl_codes import firmware_error, stage_alarm
from firmware_interface.errors import (
    FirmwareError,
    PositionLostError,
    StageAlarm,
    StageError,
    StageProtocolError,
    StageTimeoutError,
)

log = logging.getLogger(__name__)

_STATUS_RESEND_S = 0.25
_RESET_REQUIRED_MSG = "Reset to continue"


@dataclass
class _Pending:
    line: str
    sync: bool = False
    """A resync marker: replies are stale until the ``[GC:]`` line has been seen."""
    marker_seen: bool = False
    lines: list[gp.Reply] = field(default_factory=list)
    done: bool = False
    error: StageError | None = None


class GrblLink(serial_lines.LineLink):
    """Thread-safe GRBL transport. Construction touches nothing; ``open`` opens the port."""

    reader_name = "grbl-link"

    def __init__(self, port: str, *, baudrate: int = 115200, reply_timeout_s: float = 5.0) -> None:
        super().__init__(port, baudrate=baudrate, reply_timeout_s=reply_timeout_s)
        self.on_banner: Callable[[gp.Banner, bool], None] | None = None
        """Called as (banner, expected) from the reader thread; expected after ``soft_reset``."""
        self.on_alarm: Callable[[gp.AlarmReply], None] | None = None
        self.on_message: Callable[[str], None] | None = None
        """Called with the text of each ``[MSG:...]`` push message, from the reader thread."""
        self._wco = gp.WcoTracker()
        self._status: gp.StatusReport | None = None
        self._status_seq = 0
        self._banner: gp.Banner | None = None
        self._banner_seq = 0
        self._expect_banner = False
        self._alarm: gp.AlarmReply | None = None
        self._alarm_seq = 0
        self._reset_required = False

    def _reset_state(self) -> None:
        # A fresh port: no stale lock-out from an earlier session either.
        super()._reset_state()
        self._reset_required = False
        self._wco.reset()

    # ------------------------------------------------------------------ sending
    def realtime(self, command: bytes) -> None:
        """Write a real-time byte now: never queued behind a command, no newline."""
        if len(command) != 1 or command[0] not in gp.REALTIME_BYTES:
            raise ValueError(f"not a GRBL real-time command: {command!r}")
        self._write(command)

    def soft_reset(self, timeout_s: float | None = None) -> gp.Banner:
        """Send Ctrl-X and wait for the banner. The banner is reported as expected."""
        timeout_s = self.reply_timeout_s if timeout_s is None else timeout_s
        with self._cond:
            seq = self._banner_seq
            self._expect_banner = True
        self._write(gp.RT_SOFT_RESET)
        with self._cond:
            self._wait(lambda: self._banner_seq > seq, timeout_s, "start-up banner after reset")
            assert self._banner is not None
            return self._banner

    def command(self, line: str, *, timeout_s: float | None = None) -> list[gp.Reply]:
        """Send one line and wait for its ``ok``; returns the lines that came with it.

        Raises FirmwareError (error:N), StageAlarm, StageTimeoutError, StageProtocolError
        (garbled reply), PositionLostError (controller reset meanwhile), StageConnectionError.
        """
        if any(c in line for c in "\r\n?!~") or not line.isascii():
            raise ValueError(f"line would be split or picked off by GRBL: {line!r}")
        timeout_s = self.reply_timeout_s if timeout_s is None else timeout_s
        with self._command_lock:
            with self._cond:
                if self._reset_required:
                    if self._alarm is None:
                        raise StageAlarm(0, "controller needs a reset before it accepts commands",
                                         reset_required=True)
                    raise stage_alarm(self._alarm.code,
                                      "controller needs a reset before it accepts commands")
            if self._needs_resync:
                self._transact("$G", self.reply_timeout_s, sync=True)
                self._needs_resync = False
            return self._transact(line, timeout_s, sync=False)

    def status(self, *, timeout_s: float | None = None) -> gp.StatusReport:
        """Ask ``?`` and return the next report (WPos/MPos both filled once WCO is known)."""
        timeout_s = self.reply_timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + timeout_s
        with self._cond:
            seq, alarm_seq = self._status_seq, self._alarm_seq
            if self._reset_required and self._alarm is not None:
                raise stage_alarm(self._alarm.code, "controller needs a reset")
        while True:
            # A lost or ignored '?' is resent; GRBL drops duplicates it has not answered yet.
            self._write(gp.RT_STATUS)
            with self._cond:
                remaining = deadline - time.monotonic()
                self._cond.wait_for(
                    lambda: self._status_seq > seq or self._alarm_seq > alarm_seq
                    or self._lost is not None,
                    timeout=max(0.0, min(remaining, _STATUS_RESEND_S)),
                )
                self._raise_if_lost()
                if self._status_seq > seq:
                    assert self._status is not None
                    return self._status
                if self._alarm_seq > alarm_seq:
                    assert self._alarm is not None
                    raise stage_alarm(self._alarm.code)
            if time.monotonic() >= deadline:
                raise self._timed_out(f"no status report from {self.port} within {timeout_s:.2f} s")

    # ------------------------------------------------------------------ state for the driver
    @property
    def last_alarm(self) -> gp.AlarmReply | None:
        with self._cond:
            return self._alarm

    @property
    def alarm_seq(self) -> int:
        with self._cond:
            return self._alarm_seq

    @property
    def reset_required(self) -> bool:
        with self._cond:
            return self._reset_required

    # ------------------------------------------------------------------ internals
    def _write(self, data: bytes) -> None:
        with self._cond:
            self._raise_if_lost()
        serial_lines.write(self._reader, self.port, data)

    def _transact(self, line: str, timeout_s: float, *, sync: bool) -> list[gp.Reply]:
        pending = _Pending(line, sync=sync)
        with self._cond:
            self._raise_if_lost()
            self._pending = pending
        try:
            self._write(line.encode("ascii") + b"\n")
            with self._cond:
                self._wait(lambda: pending.done, timeout_s, f"reply to {line!r}")
        except StageTimeoutError:
            self._needs_resync = True  # a late ok must not be taken for the next command's
            raise
        finally:
            with self._cond:
                if self._pending is pending:
                    self._pending = None
        if pending.error is not None:
            if not isinstance(pending.error, FirmwareError):
                self._needs_resync = True
            raise pending.error
        return pending.lines

    def _wait(self, predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
        """Wait on the condition (held by the caller) for ``predicate`` or a lost connection."""
        ok = self._cond.wait_for(lambda: predicate() or self._lost is not None, timeout=timeout_s)
        if predicate():
            return
        self._raise_if_lost()
        if not ok:
            raise self._timed_out(f"no {what} from {self.port} within {timeout_s:.2f} s")

    def _on_line(self, raw: bytes) -> None:
        reply = gp.parse_line(raw)
        callback: Callable[[], None] | None = None
        with self._cond:
            if isinstance(reply, gp.StatusReport):
                self._status = self._wco.complete(reply)
                self._status_seq += 1
            elif isinstance(reply, gp.Banner):
                callback = self._banner_received(reply)
            elif isinstance(reply, gp.AlarmReply):
                self._alarm = reply
                self._alarm_seq += 1
                # Limit alarms are critical: GRBL ignores everything, '?' included, until reset.
                self._reset_required = self._reset_required or reply.code in gp.CRITICAL_ALARMS
                self._fail_pending(stage_alarm(reply.code))
                if self.on_alarm is not None:
                    handler = self.on_alarm
                    callback = lambda: handler(reply)  # noqa: E731
            elif isinstance(reply, (gp.Ok, gp.ErrorReply)):
                self._reply_received(reply)
            elif isinstance(reply, gp.Unparseable):
                self._garbled(reply)
            else:
                callback = self._feedback(reply)
            self._cond.notify_all()
        if callback is not None:
            callback()

    def _banner_received(self, banner: gp.Banner) -> Callable[[], None] | None:
        expected, self._expect_banner = self._expect_banner, False
        self._banner = banner
        self._banner_seq += 1
        self._reset_required = False
        self._wco.reset()
        self._fail_pending(PositionLostError(f"controller on {self.port} reset during a command"))
        if not expected:
            log.info("controller on %s reset (Grbl %s banner)", self.port, banner.version)
        if self.on_banner is None:
            return None
        handler = self.on_banner
        return lambda: handler(banner, expected)

    def _reply_received(self, reply: gp.Ok | gp.ErrorReply) -> None:
        pending = self._pending
        if pending is None or pending.done:
            log.debug("unsolicited %r from %s dropped", reply, self.port)
            return
        if pending.sync and not pending.marker_seen:
            log.debug("stale %r discarded during resync on %s", reply, self.port)
            return
        if isinstance(reply, gp.ErrorReply):
            pending.error = firmware_error(reply.code)
        pending.done = True

    def _garbled(self, reply: gp.Unparseable) -> None:
        self.error_count += 1
        log.warning("unparseable line from %s: %r (%s)", self.port, reply.raw, reply.reason)
        if reply.raw.startswith("<"):
            return  # a mangled status report; the poller simply asks again
        pending = self._pending
        if pending is not None and not pending.done and not pending.sync:
            self._fail_pending(StageProtocolError(
                f"garbled reply to {pending.line!r} from {self.port}: {reply.raw!r}"))

    def _feedback(self, reply: gp.Reply) -> Callable[[], None] | None:
        """Route a feedback line (``_cond`` held); returns the callback to run once released."""
        callback: Callable[[], None] | None = None
        if isinstance(reply, gp.Feedback) and reply.tag == "MSG":
            log.info("controller %s: %s", self.port, reply.text)
            if reply.text == _RESET_REQUIRED_MSG:
                self._reset_required = True
            if self.on_message is not None:
                callback = functools.partial(self.on_message, reply.text)
        pending = self._pending
        if pending is None or pending.done:
            return callback
        if pending.sync and isinstance(reply, gp.Feedback) and reply.tag == "GC":
            pending.marker_seen = True
        pending.lines.append(reply)
        return callback


"""The serial link to a Sangaboard: one reader thread, one query in flight, push routing.

The Sangaboard answers each command with one line (``list_modules`` with lines up to ``--END--``;
``notify_on_stop`` with nothing until the move ends). Replies carry no tag, so each query names the
reply types that complete it; lines of other types are stale (a late answer to a timed-out query)
and are dropped. Two lines are never replies: ``stopped`` and ``Error: stage is not moving``, both
caused by ``notify_on_stop``, are counted as stop notices. A version line nobody asked for is the
boot message of a board that reset. After a timeout or a garbled reply the link resynchronises by
asking ``version`` and discarding everything before its answer, as the GRBL link does with ``$G``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field


from firmware_interface import sangaboard_protocol as sp
from firmware_interface import serial_lines
from firmware_interface.errors import (
    FirmwareError,
    StageConnectionError,
    StageError,
    StageProtocolError,
    UnsupportedOperationError,
)

log = logging.getLogger(__name__)

_PUSHES = (sp.Stopped, sp.NotMoving)


@dataclass
class _Pending:
    line: str
    expect: tuple[type, ...]
    multiline: bool = False
    sync: bool = False
    """A resync marker: every line but the expected one is stale."""
    lines: list[sp.Reply] = field(default_factory=list)
    done: bool = False
    error: StageError | None = None


class SangaboardLink(serial_lines.LineLink):
    """Thread-safe Sangaboard transport. Construction touches nothing; ``open`` opens the port."""

    reader_name = "sangaboard-link"

    def __init__(self, port: str, *, baudrate: int = sp.BAUDRATE, reply_timeout_s: float = 5.0) -> None:
        super().__init__(port, baudrate=baudrate, reply_timeout_s=reply_timeout_s)
        self.on_banner: Callable[[sp.VersionLine], None] | None = None
        """Called from the reader thread with a version line nobody asked for (the board reset)."""
        self._stop_seq = 0

    # ------------------------------------------------------------------ commands
    def query(self, line: str, expect: tuple[type, ...], *, timeout_s: float | None = None,
              multiline: bool = False) -> list[sp.Reply]:
        """Send one command and wait for a reply of a type in ``expect`` (with ``multiline``: lines
        up to ``--END--``). Returns the replies (the last one completes the query).

        Raises UnsupportedOperationError (the firmware does not know the command), FirmwareError
        (an ``Error:`` line), StageTimeoutError, StageProtocolError (garbled reply),
        StageConnectionError.
        """
        sp.check_command(line)
        timeout_s = self.reply_timeout_s if timeout_s is None else timeout_s
        with self._command_lock:
            if self._needs_resync:
                self._transact(_Pending("version", (sp.VersionLine,), sync=True),
                              self.reply_timeout_s)
                self._needs_resync = False
            return self._transact(_Pending(line, expect, multiline), timeout_s)

    def send(self, line: str) -> None:
        """Write a command that has no immediate answer (``notify_on_stop``) without waiting."""
        sp.check_command(line)
        with self._command_lock:
            self._write(line)

    @property
    def stop_seq(self) -> int:
        with self._cond:
            return self._stop_seq

    def wait_stop_notice(self, seq: int, timeout_s: float) -> bool:
        """Wait until a stop notice newer than ``seq`` arrives; False on timeout."""
        with self._cond:
            self._cond.wait_for(lambda: self._stop_seq > seq or self._lost is not None,
                                timeout=max(0.0, timeout_s))
            self._raise_if_lost()
            return self._stop_seq > seq

    # ------------------------------------------------------------------ internals
    def _write(self, line: str) -> None:
        with self._cond:
            self._raise_if_lost()
        try:
            serial_lines.write(self._reader, self.port, line.encode("ascii") + b"\n")
        except StageConnectionError as exc:
            if self._reader is not None:
                # The write saw the port die before the reader thread did (EIO on an unplug).
                with self._cond:
                    self._lost = self._lost or exc
                    self._cond.notify_all()
            raise

    def _transact(self, pending: _Pending, timeout_s: float) -> list[sp.Reply]:
        with self._cond:
            self._raise_if_lost()
            self._pending = pending
        try:
            self._write(pending.line)
            with self._cond:
                ok = self._cond.wait_for(lambda: pending.done or self._lost is not None,
                                         timeout=timeout_s)
                if not pending.done:
                    self._raise_if_lost()
                if not ok:
                    self._needs_resync = True  # a late answer must not complete the next query
                    raise self._timed_out(
                        f"no reply to {pending.line!r} from {self.port} within {timeout_s:.2f} s")
        finally:
            with self._cond:
                if self._pending is pending:
                    self._pending = None
        if pending.error is not None:
            if isinstance(pending.error, StageProtocolError):
                self._needs_resync = True
            raise pending.error
        return pending.lines

    def _on_line(self, raw: bytes) -> None:
        banner: sp.VersionLine | None = None
        with self._cond:
            try:
                reply = sp.parse_reply(raw)
            except StageProtocolError as exc:
                self._garbled(raw, exc)
                self._cond.notify_all()
                return
            if isinstance(reply, _PUSHES):
                self._stop_seq += 1
            elif not self._reply_received(reply) and isinstance(reply, sp.VersionLine):
                banner = reply
            self._cond.notify_all()
        if banner is not None:
            log.info("board on %s printed its boot line %r", self.port, banner.text)
            if self.on_banner is not None:
                self.on_banner(banner)

    def _reply_received(self, reply: sp.Reply) -> bool:
        """Complete or extend the pending query with ``reply``; False when it was not for it."""
        pending = self._pending
        if pending is None or pending.done:
            if not isinstance(reply, sp.VersionLine):
                log.debug("unsolicited %r from %s dropped", reply, self.port)
            return False
        if pending.sync and not isinstance(reply, pending.expect):
            log.debug("stale %r discarded during resync on %s", reply, self.port)
            return True
        if isinstance(reply, sp.InvalidCommand):
            pending.error = UnsupportedOperationError(
                f"firmware on {self.port} does not know {pending.line!r} ({reply.text})")
        elif isinstance(reply, sp.ErrorLine):
            pending.error = FirmwareError(0, f"{pending.line!r} refused: {reply.text}")
        elif pending.multiline:
            if not isinstance(reply, sp.EndMarker):
                pending.lines.append(reply)
                return True
        elif isinstance(reply, pending.expect):
            pending.lines.append(reply)
        else:
            log.debug("stale %r while waiting for %r on %s", reply, pending.line, self.port)
            return False
        pending.done = True
        return True

    def _garbled(self, raw: bytes, exc: StageProtocolError) -> None:
        self.error_count += 1
        log.warning("unparseable line from %s: %r (%s)", self.port, raw, exc)
        if self._pending is not None and self._pending.sync:
            return  # noise before the resync marker is what resync is for
        self._fail_pending(StageProtocolError(f"garbled reply from {self.port}: {raw!r} ({exc})"))

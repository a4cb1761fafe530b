"""Pieces every line-oriented stage link shares: opening a port exclusively, a reader thread that
splits the byte stream into lines, and the mapping of open failures to typed errors.

GRBL and the Sangaboard both end lines with CRLF and accept LF-terminated commands, so one
splitter serves both; the dialect-specific link decides what a line means.
"""

from __future__ import annotations

import errno
import logging
import threading
from collections.abc import Callable

import serial
import serial.threaded

from firmware_interface.errors import StageBusyError, StageConnectionError, StageError, StageTimeoutError

log = logging.getLogger(__name__)

_BUSY_ERRNOS = frozenset({errno.EAGAIN, errno.EWOULDBLOCK, errno.EBUSY})
READ_TIMEOUT_S = 0.5

LineHandler = Callable[[bytes], None]
LostHandler = Callable[[BaseException | None], None]


class LineProtocol(serial.threaded.Protocol):
    """Splits the stream on LF and strips the CR of CRLF; hands each line to ``on_line``."""

    def __init__(self, on_line: LineHandler, on_lost: LostHandler) -> None:
        self._on_line = on_line
        self._on_lost = on_lost
        self._buffer = bytearray()

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while True:
            end = self._buffer.find(b"\n")
            if end < 0:
                break
            line = bytes(self._buffer[:end]).rstrip(b"\r")
            del self._buffer[: end + 1]
            self._on_line(line)

    def connection_lost(self, exc: BaseException | None) -> None:
        self._on_lost(exc)


class _ReaderThread(serial.threaded.ReaderThread):
    """pyserial's reader, but a port that vanishes under ``in_waiting`` (an OSError such as EIO from
    the ioctl, not a SerialException) still ends in ``connection_lost`` instead of a silently dead
    thread that leaves every waiting command to time out."""

    def run(self) -> None:
        try:
            super().run()
        except OSError as exc:
            self.alive = False
            protocol, self.protocol = self.protocol, None
            if protocol is not None:
                protocol.connection_lost(exc)


def open_reader(port: str, baudrate: int, on_line: LineHandler, on_lost: LostHandler,
                *, name: str) -> serial.threaded.ReaderThread:
    """Open ``port`` exclusively and start a reader thread feeding ``on_line``.

    Raises StageBusyError when another process holds the port, StageConnectionError otherwise.
    """
    try:
        handle = serial.serial_for_url(port, baudrate=baudrate, exclusive=True,
                                       timeout=READ_TIMEOUT_S)
    except serial.SerialException as exc:
        raise map_open_error(port, exc) from exc
    except (ValueError, OSError) as exc:
        raise StageConnectionError(f"cannot open stage port {port}: {exc}") from exc
    reader = _ReaderThread(handle, lambda: LineProtocol(on_line, on_lost))
    reader.name = name
    reader.start()
    try:
        reader.connect()
    except RuntimeError as exc:
        handle.close()
        raise StageConnectionError(f"reader on {port} failed to start: {exc}") from exc
    return reader


def close_reader(reader: serial.threaded.ReaderThread, port: str) -> None:
    """Stop the reader thread (ReaderThread joins it) and close the port, tolerating a dead port."""
    try:
        reader.close()
    except (serial.SerialException, OSError) as exc:
        log.debug("closing %s: %s", port, exc)


def write(reader: serial.threaded.ReaderThread | None, port: str, data: bytes) -> None:
    if reader is None:
        raise StageConnectionError(f"stage port {port} is not open")
    try:
        reader.write(data)
    except (serial.SerialException, OSError) as exc:
        raise StageConnectionError(f"write to {port} failed: {exc}") from exc


def map_open_error(port: str, exc: serial.SerialException) -> StageError:
    text = str(exc)
    if "exclusively lock" in text or getattr(exc, "errno", None) in _BUSY_ERRNOS:
        return StageBusyError(
            f"device busy: stage port {port} is held by another process or connection ({text})"
        )
    return StageConnectionError(f"cannot open stage port {port}: {text}")


class LineLink:
    """What the GRBL and Sangaboard links share: the reader thread's lifecycle, the one command in
    flight, and turning a vanished port into a StageConnectionError for whoever waits.

    Subclasses own ``_on_line`` (what a line means in their dialect) and may extend ``_reset_state``.
    ``self._pending`` is any object with ``done`` and ``error`` attributes.
    """

    reader_name = "stage-link"

    def __init__(self, port: str, *, baudrate: int, reply_timeout_s: float) -> None:
        self.port = port
        self.baudrate = baudrate
        self.reply_timeout_s = reply_timeout_s
        self._reader: serial.threaded.ReaderThread | None = None
        self._cond = threading.Condition()
        self._command_lock = threading.Lock()
        self._pending = None
        self._needs_resync = False
        self._lost: StageConnectionError | None = None
        self.error_count = 0
        """Serial faults over the link's life, reconnects included: lost ports, reply timeouts,
        garbled lines. Telemetry reports it; nothing else depends on it."""

    def open(self) -> None:
        if self._reader is not None:
            return
        with self._cond:
            self._reset_state()
        self._reader = open_reader(self.port, self.baudrate, self._on_line, self._on_connection_lost,
                                   name=f"{self.reader_name}-{self.port}")

    def close(self) -> None:
        """Stop the reader thread (joined with a timeout) and close the port. Safe twice."""
        reader, self._reader = self._reader, None
        if reader is None:
            return
        close_reader(reader, self.port)
        with self._cond:
            self._fail_pending(StageConnectionError(f"link to {self.port} closed"))
            self._cond.notify_all()

    @property
    def is_open(self) -> bool:
        return self._reader is not None and self._lost is None

    @property
    def opened(self) -> bool:
        """``open`` succeeded and ``close`` has not been called since (the port may have vanished)."""
        return self._reader is not None

    @property
    def lost(self) -> bool:
        """The port was open and vanished (cable pulled, board re-enumerated)."""
        return self._reader is not None and self._lost is not None

    def _reset_state(self) -> None:
        """A fresh port (called holding ``_cond``): nothing in flight, no stale resync or loss."""
        self._lost = None
        self._pending = None
        self._needs_resync = False

    def _on_line(self, raw: bytes) -> None:
        raise NotImplementedError

    def _timed_out(self, message: str) -> StageTimeoutError:
        self.error_count += 1
        return StageTimeoutError(message)

    def _raise_if_lost(self) -> None:
        if self._lost is not None:
            raise self._lost

    def _fail_pending(self, error: StageError) -> None:
        pending = self._pending
        if pending is not None and not pending.done:
            pending.error = error
            pending.done = True

    def _on_connection_lost(self, exc: BaseException | None) -> None:
        with self._cond:
            reason = f": {exc}" if exc else ""
            self._lost = StageConnectionError(f"connection to {self.port} lost{reason}")
            self._fail_pending(self._lost)
            self._cond.notify_all()
        if exc is not None:
            self.error_count += 1
            log.error("stage link %s lost: %s", self.port, exc)

"""Pieces every line-oriented stage link shares: opening a port exclusively, a reader thread that
splits the byte stream into lines, and the mapping of open failures to typed errors.

GRBL and the Sangaboard both end lines with CRLF and accept LF-terminated commands, so one
splitter serves both; the dialect-specific link decides what a line means.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Callable

import serial
import serial.threaded

from firmware_interface.errors import StageBusyError, StageConnectionError, StageError

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
    reader = serial.threaded.ReaderThread(handle, lambda: LineProtocol(on_line, on_lost))
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

"""Fault injection for the emulator: switch misbehaviour on from a test while a driver talks to it.

"Replies" are the ``ok``/``error:N`` lines a host waits for; push messages pass untouched so a test
can target the send-response path precisely. All methods are thread-safe.
"""

from __future__ import annotations

import threading

GARBLED_OK = b"o\xffk"


class Faults:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._drop = 0
        self._garble = 0
        self._garble_status = 0
        self._delay_s = 0.0
        self._mute = False
        self._reset_pending = False
        self._power_cycle_pending = False
        self._disconnect_pending = False

    # -- switches (called from tests) ----------------------------------------------------------
    def drop_replies(self, count: int = 1) -> None:
        """Swallow the next ``count`` replies, as if the bytes were lost on the wire."""
        with self._lock:
            self._drop += count

    def garble_replies(self, count: int = 1) -> None:
        """Corrupt the next ``count`` replies (line noise, a glitching USB-serial bridge)."""
        with self._lock:
            self._garble += count

    def garble_status(self, count: int = 1) -> None:
        """Corrupt the next ``count`` status reports."""
        with self._lock:
            self._garble_status += count

    def delay_replies(self, delay_s: float) -> None:
        """Hold every later output line back by ``delay_s`` (0 turns it off). Order is kept."""
        with self._lock:
            self._delay_s = max(0.0, delay_s)

    def mute(self, muted: bool = True) -> None:
        """Stop answering anything (a hung controller); input is still consumed."""
        with self._lock:
            self._mute = muted

    def reset(self) -> None:
        """Make the controller reset on its own (brown-out, watchdog) at the next poll."""
        with self._lock:
            self._reset_pending = True

    def power_cycle(self) -> None:
        """Make the board lose power and boot again at the next poll (what a replug does)."""
        with self._lock:
            self._power_cycle_pending = True

    def disconnect(self) -> None:
        """Ask the server to drop the connection (cable pulled)."""
        with self._lock:
            self._disconnect_pending = True

    def clear(self) -> None:
        with self._lock:
            self._drop = self._garble = self._garble_status = 0
            self._delay_s = 0.0
            self._mute = self._reset_pending = self._disconnect_pending = False
            self._power_cycle_pending = False

    # -- hooks (called by the emulator and servers) --------------------------------------------
    def filter_line(self, line: bytes, *, is_reply: bool, is_status: bool) -> bytes | None:
        """The line to send instead of ``line`` (None: send nothing)."""
        with self._lock:
            if self._mute:
                return None
            if is_reply and self._drop:
                self._drop -= 1
                return None
            if is_reply and self._garble:
                self._garble -= 1
                return GARBLED_OK if line == b"ok" else line[: len(line) // 2] + b"\xfe"
            if is_status and self._garble_status:
                self._garble_status -= 1
                return line[: len(line) // 2]
            return line

    @property
    def delay_s(self) -> float:
        with self._lock:
            return self._delay_s

    def take_reset(self) -> bool:
        with self._lock:
            pending, self._reset_pending = self._reset_pending, False
            return pending

    def take_power_cycle(self) -> bool:
        with self._lock:
            pending, self._power_cycle_pending = self._power_cycle_pending, False
            return pending

    def take_disconnect(self) -> bool:
        with self._lock:
            pending, self._disconnect_pending = self._disconnect_pending, False
            return pending

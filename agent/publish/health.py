"""What the daemon knows about its own health: the current scan (progress and heartbeat), the stage's
serial-link error count, the CPU temperature. Written by the scan thread, read by the main thread.

The heartbeat proves the scan thread is alive: it beats when a scan starts and on every progress report
and committed field. A scan stuck in a hardware call stops beating; after ``daemon.scan_stall_s`` the
daemon stops its systemd watchdog pings, so systemd restarts the service (see ``agent/daemon.py``).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent.inference.base import CODE_NAMES
from agent.results.record import FieldRecord
from agent.scan import ScanProgress

_TEMP_PATH = Path("/sys/class/thermal/thermal_zone0/temp")
SERIAL_ERRORS_ATTR = "serial_errors"
"""The stage driver's cumulative count of serial-link errors (garbled lines, reply timeouts, lost
connections); read defensively, a driver without it reports ``None``."""


def cpu_temp_c() -> float | None:
    try:
        return round(int(_TEMP_PATH.read_text().strip()) / 1000.0, 1)
    except (OSError, ValueError):
        return None  # not a Pi, or no thermal zone exposed (containers)


class ScanState:
    """What telemetry reports about the current scan, and the scan thread's heartbeat."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.lock = threading.Lock()
        self._clock = clock
        self._clear("", 0.0)

    def _clear(self, test_id: str, started: float) -> None:
        self.test_id, self.started, self.ended = test_id, started, 0.0
        self.last_beat = started
        self.fields_done = self.fields_planned = self.new_fields = self.wbc = 0
        self.af_ok = self.af_total = 0
        self.counts: Counter = Counter()

    def reset(self, test_id: str) -> None:
        with self.lock:
            self._clear(test_id, self._clock())

    def beat(self) -> None:
        with self.lock:
            self.last_beat = self._clock()

    def add(self, record: FieldRecord) -> None:
        with self.lock:
            self.last_beat = self._clock()
            self.new_fields += 1
            self.wbc += len(record.cells)
            self.counts.update(CODE_NAMES[c.prediction] for c in record.cells)
            if record.autofocus:
                self.af_total += 1
                self.af_ok += bool(record.autofocus.get("success"))

    def finish(self) -> None:
        with self.lock:
            self.ended = self._clock()  # fields/min stays that of the scan, not of the idle time after

    def progress(self, p: ScanProgress) -> None:
        with self.lock:
            self.last_beat = self._clock()
            self.fields_done, self.fields_planned = p.fields_done, p.fields_planned

    def silent_s(self) -> float:
        """Seconds since the running scan's thread last showed a sign of life; 0 when no scan runs."""
        with self.lock:
            if not self.started or self.ended:
                return 0.0
            return max(0.0, self._clock() - self.last_beat)

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            minutes = ((self.ended or self._clock()) - self.started) / 60.0 if self.started else 0.0
            return {
                "test_id": self.test_id or None, "fields_done": self.fields_done,
                "fields_planned": self.fields_planned, "wbc": self.wbc, "counts": dict(self.counts),
                "fields_per_min": round(self.new_fields / minutes, 2) if minutes > 0 else 0.0,
                "autofocus_success_rate": round(self.af_ok / self.af_total, 3) if self.af_total else None,
            }


def stage_serial_errors(stage: object) -> int | None:
    """The driver's ``serial_errors`` counter, or None when this driver (version) does not keep one."""
    value = getattr(stage, SERIAL_ERRORS_ATTR, None)
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value


class SerialErrorTally:
    """Serial-link errors of every stage driver the daemon opened since it started.

    Each scan opens its own stage; the count of the one in use is read live (``watch``) and folded into
    the total when the scan ends (``retire``). ``total`` is None while no driver reported a count.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._done: int | None = None
        self._live: Callable[[], object] | None = None

    def add_final(self, stage: object) -> None:
        """Fold in a stage that is about to be closed (the daemon's start-up probe)."""
        count = stage_serial_errors(stage)
        if count is not None:
            with self._lock:
                self._done = (self._done or 0) + count

    def watch(self, stage_of: Callable[[], object]) -> None:
        """``stage_of()`` returns the stage in use now (None before it is opened)."""
        with self._lock:
            self._live = stage_of

    def retire(self) -> None:
        with self._lock:
            live, self._live = self._live, None
        if live is not None:
            self.add_final(live())

    def total(self) -> int | None:
        with self._lock:
            done, live = self._done, self._live
        current = stage_serial_errors(live()) if live is not None else None
        if done is None and current is None:
            return None
        return (done or 0) + (current or 0)

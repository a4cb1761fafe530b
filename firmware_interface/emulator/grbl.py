"""GRBL 1.1 controller emulator: bytes in, bytes out, plus a physical model of the machine.

It does no I/O: a server (pty or TCP) calls ``feed`` with what arrived and ``poll`` for what to
send. Motion is computed from the clock on demand, so the emulator needs polling only to release
replies that wait on time (a full planner, homing, a dwell, injected delays).

Machine space is 0..max travel per axis (as with GRBL's homing-force-origin option, code ``Z`` in
``[OPT:]``), homing goes to 0,0,0. A power cycle (``faults.power_cycle()``, what a replug does)
restarts the machine position at 0,0,0 wherever the stage physically is, as GRBL's does; only
homing brings the two frames together again. All public methods are thread-safe.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

from firmware_interface import grbl_protocol as gp
from firmware_interface.emulator import grbl_report
from firmware_interface.emulator import settings as eeprom
from firmware_interface.emulator.faults import Faults
from firmware_interface.emulator.gcode import Block, GcodeError, clean, parse_block
from firmware_interface.emulator.motion import MotionModel, MotionTimings, Vec

VERSION = "1.1h"
BUILD_DATE = "20190830"
OPTIONS = "VZ"
BANNER = f"Grbl {VERSION} ['$' for help]".encode()
UNLOCK_MSG = b"[MSG:'$H'|'$X' to unlock]"
HELP = b"[HLP:$$ $# $G $I $N $x=val $Nx=line $J=line $SLP $C $X $H ~ ! ? ctrl-x]"
_AXES = "XYZ"


class GrblEmulator:
    """A GRBL 1.1h board with a 3-axis machine attached."""

    def __init__(
        self,
        timings: MotionTimings | None = None,
        *,
        travel_mm: Vec = (100.0, 75.0, 10.0),
        start_mm: Vec = (0.0, 0.0, 0.0),
        homing_enabled: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.timings = timings or MotionTimings()
        self.faults = Faults()
        self._clock = clock
        self._lock = threading.RLock()
        self._motion = MotionModel(tuple(float(v) for v in start_mm), self.timings)  # type: ignore[arg-type]
        self._settings = eeprom.default_settings(self.timings, travel_mm, homing_enabled)
        self._startup_lines = ["", ""]
        self._rx = bytearray()
        self._out: deque[tuple[float, bytes]] = deque()
        self._stalled: str | None = None
        self._pending_ok: Callable[[float], bool] | None = None
        self._locked = homing_enabled
        self._critical = False
        self._sleeping = False
        self._check_mode = False
        self._last_kind = "run"
        self._origin_mm: Vec = (0.0, 0.0, 0.0)
        """Where machine zero is physically: moves away from 0 when a power cycle restarts MPos."""
        self._refresh = grbl_report.ReportRefresh()
        self._reset_parser()
        self._emit(BANNER)
        if self._locked:
            self._emit(UNLOCK_MSG)

    # ------------------------------------------------------------------ public, thread-safe
    def feed(self, data: bytes) -> None:
        """Bytes from the host. Real-time bytes act at once; the rest goes to the RX buffer."""
        with self._lock:
            now = self._clock()
            for byte in data:
                if byte in gp.REALTIME_BYTES:
                    self._realtime(byte, now)
                elif len(self._rx) < gp.RX_BUFFER_BYTES:
                    self._rx.append(byte)
                # else: overflow. Real GRBL loses the byte too; hosts must count characters.
            self._process_lines(now)

    def poll(self) -> bytes:
        """Advance time-dependent work and return the output that is due now."""
        with self._lock:
            now = self._clock()
            if self.faults.take_power_cycle():
                self._power_on(now)
            if self.faults.take_reset():
                self._soft_reset(now)
            self._process_lines(now)
            out = bytearray()
            while self._out and self._out[0][0] <= now:
                out += self._out.popleft()[1]
            return bytes(out)

    def physical_position_um(self) -> tuple[float, float, float]:
        """Where the machine physically is now (interpolated mid-move), in micrometres."""
        with self._lock:
            here = self._motion.position(self._clock())
            x, y, z = (h + o for h, o in zip(here, self._origin_mm))
            return x * 1000.0, y * 1000.0, z * 1000.0

    def state(self) -> str:
        """The state word a status report would carry now (e.g. 'Idle', 'Hold:0')."""
        with self._lock:
            return self._state_word(self._clock())

    def setting(self, number: int) -> float:
        with self._lock:
            return self._settings[number]

    # ------------------------------------------------------------------ output
    def _emit(self, line: bytes, *, is_reply: bool = False, is_status: bool = False) -> None:
        filtered = self.faults.filter_line(line, is_reply=is_reply, is_status=is_status)
        if filtered is None:
            return
        due = self._clock() + self.faults.delay_s
        if self._out:  # keep FIFO order even when the delay changes
            due = max(due, self._out[-1][0])
        self._out.append((due, filtered + b"\r\n"))

    def _reply(self, code: int | None = 0) -> None:
        """Answer the current line; None means its answer comes later (or never, after an alarm)."""
        if code is None:
            return
        self._emit(b"ok" if code == 0 else f"error:{code}".encode(), is_reply=True)

    # ------------------------------------------------------------------ real-time commands
    def _realtime(self, byte: int, now: float) -> None:
        if byte == gp.RT_SOFT_RESET[0]:
            self._soft_reset(now)
        elif self._critical:
            return  # after a limit alarm only a reset is heard, not even '?'
        elif byte == gp.RT_STATUS[0]:
            self._emit(self._status_line(now).encode(), is_status=True)
        elif byte == gp.RT_FEED_HOLD[0]:
            if not (self._locked or self._sleeping or self._check_mode):
                self._motion.feed_hold(now)
        elif byte == gp.RT_CYCLE_START[0]:
            self._motion.resume(now)
        elif byte == gp.RT_JOG_CANCEL[0]:
            self._motion.cancel(now, kinds=("jog",))
        # Other extended bytes are overrides and door/debug commands: accepted, no effect here.

    def _soft_reset(self, now: float) -> None:
        homing = self._state_word(now) == "Home"
        if self._motion.halt(now) or homing:
            self._emit(b"ALARM:6" if homing else b"ALARM:3")
            self._locked = True
        if self._sleeping:
            self._locked = True
        self._critical = self._sleeping = self._check_mode = False
        self._rx.clear()
        self._stalled = None
        self._pending_ok = None
        self._reset_parser()
        self._emit(BANNER)
        if self._locked:
            self._emit(UNLOCK_MSG)

    def _power_on(self, now: float) -> None:
        """Power lost and back (a replug): motion stops dead with no alarm, MPos restarts at 0."""
        self._motion.halt(now)
        here = self._motion.position(now)
        self._origin_mm = tuple(o + h for o, h in zip(self._origin_mm, here))  # type: ignore[assignment]
        self._motion = MotionModel((0.0, 0.0, 0.0), self.timings)
        self._out.clear()  # whatever was unsent died with the old connection
        self._locked = bool(self._settings[22])
        self._soft_reset(now)

    def _reset_parser(self) -> None:
        self._motion_mode = 0
        self._incremental = False
        self._inches = False
        self._feed_mm_min: float | None = None
        self._g92: list[float] = [0.0, 0.0, 0.0]
        self._refresh.reset()

    # ------------------------------------------------------------------ line processing
    def _process_lines(self, now: float) -> None:
        while not self._critical:
            if self._pending_ok is not None:
                if not self._pending_ok(now):
                    return
                self._pending_ok = None
                self._reply()
            if self._stalled is not None:
                if self._motion.queued(now) >= gp.PLANNER_BLOCKS:
                    return
                line, self._stalled = self._stalled, None
                self._run_line(line, now)
                continue
            end = self._rx.find(b"\n")
            cr = self._rx.find(b"\r")
            if cr != -1 and (end == -1 or cr < end):
                end = cr
            if end == -1:
                if len(self._rx) >= gp.RX_BUFFER_BYTES:
                    self._rx.clear()  # a full buffer with no line end can never complete
                    self._reply(11)
                return
            raw = self._rx[:end].decode("ascii", errors="replace")
            del self._rx[: end + 1]
            self._run_line(raw, now)

    def _run_line(self, raw: str, now: float) -> None:
        line = clean(raw)
        if len(line) > gp.LINE_BUFFER_BYTES:
            self._reply(11)
        elif not line:
            self._reply()
        elif self._sleeping:
            return  # asleep: only a reset wakes the board
        elif line.startswith("$"):
            self._reply(self._system_command(line, now))
        elif self._locked or self._state_word(now) == "Jog":
            self._reply(9)
        else:
            self._reply(self._gcode(line, now, raw))

    # ------------------------------------------------------------------ G-code
    def _gcode(self, line: str, now: float, raw: str) -> int | None:
        try:
            block = parse_block(line)
        except GcodeError as exc:
            return exc.code
        if block.motion is not None:
            self._motion_mode = block.motion
        if "units" in block.g:
            self._inches = block.g["units"] == 20
        if "distance" in block.g:
            self._incremental = block.g["distance"] == 91
        scale = 25.4 if self._inches else 1.0
        if block.feed is not None:
            self._feed_mm_min = block.feed * scale
        non_modal = block.g.get("non_modal")
        if non_modal == 4:
            return self._dwell(block.dwell_s or 0.0, now)
        if non_modal == 92.1:
            self._g92 = [0.0, 0.0, 0.0]
            self._refresh.offset_changed()
            return 0
        if non_modal == 92:
            here = self._motion.final_target()
            for axis, value in block.axes.items():
                i = _AXES.index(axis)
                self._g92[i] = here[i] - value * scale
            self._refresh.offset_changed()
            return 0
        if not block.axes:
            return 0
        return self._plan_motion(block, scale, machine=non_modal == 53, raw=raw, now=now)

    def _plan_motion(self, block: Block, scale: float, *, machine: bool, raw: str,
                     now: float) -> int | None:
        rapid = self._motion_mode == 0
        if not rapid and (self._feed_mm_min is None or self._feed_mm_min <= 0):
            return 22
        target = self._target(block, scale, machine=machine, incremental=self._incremental)
        if self._settings[20] and not self._within_travel(target):
            # GRBL throws a critical alarm and answers nothing until reset.
            self._emit(b"ALARM:2")
            self._emit(b"[MSG:Reset to continue]")
            self._motion.halt(now)
            self._locked = self._critical = True
            return None
        if self._motion.queued(now) >= gp.PLANNER_BLOCKS:
            self._stalled = raw
            return None
        if not self._check_mode:
            self._queue_move(target, None if rapid else self._feed_mm_min, "run", now)
        return 0

    def _target(self, block: Block, scale: float, *, machine: bool, incremental: bool) -> Vec:
        base = self._motion.final_target()
        target = list(base)
        for axis, value in block.axes.items():
            i = _AXES.index(axis)
            if incremental:
                target[i] = base[i] + value * scale
            else:
                target[i] = value * scale + (0.0 if machine else self._g92[i])
            steps = self._settings[100 + i]
            target[i] = round(target[i] * steps) / steps
        return tuple(target)  # type: ignore[return-value]

    def _within_travel(self, target: Vec) -> bool:
        return all(0.0 <= v <= self._settings[130 + i] + 1e-9 for i, v in enumerate(target))

    def _queue_move(self, target: Vec, feed_mm_min: float | None, kind: str, now: float) -> None:
        move = eeprom.plan_move(self._motion.final_target(), target, feed_mm_min, self._settings,
                         self.timings, kind)
        if move is not None:
            self._last_kind = kind
            self._motion.enqueue(move, now)

    def _dwell(self, dwell_s: float, now: float) -> None:
        """G4: wait for the planner to drain, then for ``dwell_s``; only then answer."""
        deadline: list[float] = []

        def done(t: float) -> bool:
            if self._motion.busy(t):
                return False
            if not deadline:
                deadline.append(t + (dwell_s if self.timings.realtime else 0.0))
            return t >= deadline[0]

        self._pending_ok = done
        return None

    # ------------------------------------------------------------------ $ commands
    def _system_command(self, line: str, now: float) -> int | None:
        idle = not self._motion.busy(now) and self._motion.hold_state(now) is None
        if line.startswith("$J"):
            if not line.startswith("$J="):
                return 16
            if not (self._state_word(now) in ("Idle", "Jog")):
                return 8
            return self._jog(line[3:], now)
        simple = {"$": self._help, "$G": self._parser_state, "$C": self._toggle_check,
                  "$X": self._unlock}
        if line in simple:
            return simple[line]()
        if not (idle or self._locked):
            return 8  # everything below needs Idle or Alarm
        if line == "$$":
            for number, value in sorted(self._settings.items()):
                self._emit(f"${number}={eeprom.format_setting(number, value)}".encode())
            return 0
        if line == "$I":
            self._emit(f"[VER:{VERSION}.{BUILD_DATE}:]".encode())
            self._emit(f"[OPT:{OPTIONS},{gp.PLANNER_BLOCKS},{gp.RX_BUFFER_BYTES}]".encode())
            return 0
        if line == "$#":
            return self._parameters()
        if line == "$N":
            for i, text in enumerate(self._startup_lines):
                self._emit(f"$N{i}={text}".encode())
            return 0
        if line == "$H":
            return self._home(now)
        if line == "$SLP":
            self._emit(b"[MSG:Sleeping]")
            self._sleeping = True
            return 0
        return self._write_setting(line)

    def _help(self) -> int:
        self._emit(HELP)
        return 0

    def _parser_state(self) -> int:
        self._emit(grbl_report.parser_state_line(self._motion_mode, self._inches, self._incremental,
                                     self._feed_mm_min).encode())
        return 0

    def _parameters(self) -> int:
        for line in grbl_report.parameter_lines(self._g92):
            self._emit(line.encode())
        return 0

    def _toggle_check(self) -> int | None:
        if self._check_mode:
            self._emit(b"[MSG:Disabled]")
            self._reply()
            self._soft_reset(self._clock())
            return None
        if self._locked or self._motion.busy(self._clock()):
            return 8
        self._check_mode = True
        self._emit(b"[MSG:Enabled]")
        return 0

    def _unlock(self) -> int:
        if self._locked:
            self._locked = False
            self._emit(b"[MSG:Caution: Unlocked]")
        return 0

    def _home(self, now: float) -> int | None:
        if not self._settings[22]:
            return 5
        self._locked = False
        x, y, _ = self._motion.final_target()
        zero = tuple(-o for o in self._origin_mm)  # the switches sit at the physical origin
        # Z first, like GRBL's default cycle, so the objective clears the slide before XY moves.
        self._queue_move((x, y, zero[2]), None, "home", now)
        self._queue_move(zero, None, "home", now)  # type: ignore[arg-type]

        def homed(t: float) -> bool:
            if self._motion.busy(t):
                return False
            self._origin_mm = (0.0, 0.0, 0.0)  # the cycle sets MPos to 0 at the switches
            self._motion = MotionModel((0.0, 0.0, 0.0), self.timings)
            return True

        self._pending_ok = homed
        return None

    def _jog(self, words: str, now: float) -> int:
        try:
            block = parse_block(words, jog=True)
        except GcodeError as exc:
            return exc.code
        if block.feed is None or block.feed <= 0:
            return 22
        if not block.axes:
            return 26
        units = block.g.get("units")
        inches = self._inches if units is None else units == 20
        distance = block.g.get("distance")
        incremental = self._incremental if distance is None else distance == 91
        scale = 25.4 if inches else 1.0
        target = self._target(block, scale, machine="non_modal" in block.g, incremental=incremental)
        if self._settings[20] and not self._within_travel(target):
            return 15
        if self._motion.queued(now) >= gp.PLANNER_BLOCKS:
            return 8  # simplification: real GRBL would stall the line like any motion
        self._queue_move(target, block.feed * scale, "jog", now)
        return 0

    def _write_setting(self, line: str) -> int:
        name, sep, value_text = line[1:].partition("=")
        if sep and name in ("N0", "N1"):
            self._startup_lines[int(name[1:])] = value_text
            return 0
        return eeprom.write_setting(self._settings, line)

    # ------------------------------------------------------------------ status
    def _state_word(self, now: float) -> str:
        hold = self._motion.hold_state(now)
        kind = self._motion.active_kind(now)
        if self._sleeping:
            return "Sleep"
        if self._locked:
            return "Home" if kind == "home" else "Alarm"
        if hold is not None:
            return f"Hold:{hold}"
        if kind is not None or self._motion.busy(now) or self._pending_ok is not None:
            kind = kind or self._last_kind
            return {"home": "Home", "jog": "Jog"}.get(kind, "Run")
        return "Check" if self._check_mode else "Idle"

    def _status_line(self, now: float) -> str:
        wco: Vec = (self._g92[0], self._g92[1], self._g92[2])
        return grbl_report.status_line(self._state_word(now), self._motion.position(now), wco,
                           mask=int(self._settings[10]), refresh=self._refresh,
                           planner_free=gp.PLANNER_BLOCKS - self._motion.queued(now),
                           rx_free=gp.RX_BUFFER_BYTES - len(self._rx),
                           feed_mm_min=self._motion.speed_mm_s(now) * 60.0)

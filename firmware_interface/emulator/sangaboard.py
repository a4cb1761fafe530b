"""Sangaboard (OpenFlexure) firmware emulator: bytes in, bytes out, plus a stepper stage.

Like ``GrblEmulator`` it does no I/O: a server calls ``feed`` and ``poll``. Motion reuses the
shared ``MotionModel`` with steps as the length unit: the axis with the most steps runs at one step
per ``min_step_delay_us`` (as the firmware times it), the others scaled to finish together, with
an optional ``ramp_time_us`` acceleration. ``firmware`` picks the dialect: "1.x" has non-blocking
moves, ``moving?``, ``notify_on_stop`` and ``stop``; "0.5" answers ``mr`` only when the move is done
(reading no input meanwhile) and knows none of those. A reset reboots the board: motion halts,
the step counters restart from the last zeroed position (0 0 0) and moves are blocking again.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

from firmware_interface.emulator.faults import Faults
from firmware_interface.emulator.motion import MotionModel, MotionTimings, Move

Vec = tuple[float, float, float]
_RX_BUFFER_BYTES = 64  # the AVR hardware serial buffer; longer unread input is lost
_FAST_ACCEL = 1e12  # "no ramp": effectively instant acceleration without dividing by zero


class SangaboardEmulator:
    """A Sangaboard with three 28BYJ-48 style steppers (no endstops unless asked)."""

    def __init__(
        self,
        *,
        firmware: str = "1.0.4",
        min_step_delay_us: int = 1000,
        ramp_time_us: int = 0,
        endstops: bool = False,
        steps_per_um: Vec = (1.0, 1.0, 1.0),
        start_steps: Vec = (0.0, 0.0, 0.0),
        realtime: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.firmware = firmware
        self.legacy = firmware.startswith("0.")
        self.version_line = f"Sangaboard Firmware v{firmware}"
        self.steps_per_um = steps_per_um
        self.endstops = endstops
        self.faults = Faults()
        self._clock = clock
        self._lock = threading.RLock()
        self._motion = MotionModel(tuple(float(v) for v in start_steps),  # type: ignore[arg-type]
                                   MotionTimings(realtime=realtime))
        self._min_step_delay_us = min_step_delay_us
        self._ramp_time_us = ramp_time_us
        self._rx = bytearray()
        self._out: deque[tuple[float, bytes]] = deque()
        self._offset = [0, 0, 0]
        self._boot()

    # ------------------------------------------------------------------ public, thread-safe
    def feed(self, data: bytes) -> None:
        with self._lock:
            room = max(0, _RX_BUFFER_BYTES - len(self._rx))
            self._rx += data[:room]
            self._process(self._clock())

    def poll(self) -> bytes:
        with self._lock:
            now = self._clock()
            # The Sangaboard has no soft reset: either way it reboots and its counters restart.
            if self.faults.take_reset() | self.faults.take_power_cycle():
                self._boot()
            self._process(now)
            out = bytearray()
            while self._out and self._out[0][0] <= now:
                out += self._out.popleft()[1]
            return bytes(out)

    def physical_steps(self) -> Vec:
        with self._lock:
            return self._motion.position(self._clock())

    def physical_position_um(self) -> tuple[float, float, float]:
        """Where the stage physically is, in the frame the board booted with (micrometres)."""
        steps = self.physical_steps()
        return tuple(s / k for s, k in zip(steps, self.steps_per_um))  # type: ignore[return-value]

    def reported_steps(self) -> tuple[int, int, int]:
        """What ``p?`` would answer now."""
        with self._lock:
            return self._reported(self._clock())

    def moving(self) -> bool:
        with self._lock:
            return self._motion.busy(self._clock())

    # ------------------------------------------------------------------ board state
    def _boot(self) -> None:
        now = self._clock()
        self._motion.halt(now)
        # The counters restart from the position saved at the last 'zero' (EEPROM): 0 0 0 here.
        self._offset = [round(v) for v in self._motion.position(now)]
        self._rx.clear()
        self._out.clear()
        self._non_blocking = False
        self._notify = False
        self._move_running = False
        self._reply_when_idle: str | None = None
        self._emit(self.version_line, is_reply=False)

    def _reported(self, now: float) -> tuple[int, int, int]:
        pos = self._motion.position(now)
        return tuple(round(p) - o for p, o in zip(pos, self._offset))  # type: ignore[return-value]

    def _emit(self, line: str, *, is_reply: bool = True) -> None:
        filtered = self.faults.filter_line(line.encode("ascii"), is_reply=is_reply, is_status=False)
        if filtered is None:
            return
        due = self._clock() + self.faults.delay_s
        if self._out:  # keep FIFO order even when the delay changes
            due = max(due, self._out[-1][0])
        self._out.append((due, filtered + b"\r\n"))

    def _process(self, now: float) -> None:
        self._check_move_end(now)
        while True:
            if self.legacy and self._reply_when_idle is not None:
                return  # v0.5 runs the move inside the command: no input is read until done
            end = self._rx.find(b"\n")
            if end < 0:
                return
            raw = self._rx[:end].decode("ascii", errors="replace").strip()
            del self._rx[: end + 1]
            self._command(raw, now)
            self._check_move_end(now)

    def _check_move_end(self, now: float) -> None:
        if not self._move_running or self._motion.busy(now):
            return
        self._move_running = False
        if self._notify:
            self._notify = False
            self._emit("stopped", is_reply=False)
        if self._reply_when_idle is not None:
            line, self._reply_when_idle = self._reply_when_idle, None
            self._emit(line)

    # ------------------------------------------------------------------ commands
    def _command(self, line: str, now: float) -> None:
        # The firmware dispatches on the first registered name the line starts with ('p?' -> 'p').
        table: list[tuple[str, Callable[[str, float], None]]] = [
            ("version", self._version), ("list_modules", self._list_modules),
            ("help", self._help), ("mr", self._move), ("release", self._release),
            ("p", self._position), ("ramp_time", self._ramp_time), ("dt", self._step_delay),
            ("min_step_delay", self._step_delay), ("zero", self._zero),
        ]
        if not self.legacy:
            table += [("stop", self._stop), ("moving", self._moving),
                      ("notify_on_stop", self._notify_on_stop),
                      ("blocking_moves", self._blocking_moves), ("home_min", self._home_min)]
        for name, handler in table:
            if line.startswith(name):
                handler(line[len(name):].strip(), now)
                return
        self._emit("Invalid command" if self.legacy else "Type 'help' for a list of commands.")

    def _version(self, _args: str, _now: float) -> None:
        self._emit(self.version_line)

    def _list_modules(self, _args: str, _now: float) -> None:
        if self.endstops:
            self._emit("Endstops: min soft")
        self._emit("--END--")

    def _help(self, _args: str, _now: float) -> None:
        self._emit("Board: emulated Sangaboard")
        self._emit("--END--")

    def _move(self, args: str, now: float) -> None:
        axis, _, rest = args.partition(" ") if args[:1] in ("x", "y", "z") else ("", "", args)
        values = [_atol(v) for v in rest.split()][: (1 if axis else 3)]
        values += [0] * ((1 if axis else 3) - len(values))
        if axis:
            displacement = [0, 0, 0]
            displacement["xyz".index(axis)] = values[0]
        else:
            displacement = values
        self._start_move(displacement, now)
        if self._non_blocking:
            self._emit("done.")
        else:
            self._reply_when_idle = "done."
            self._check_move_end(now)

    def _start_move(self, displacement: list[int], now: float) -> None:
        # A new move replaces one in progress (v1 has no queue): stop where the motors are.
        self._motion.halt(now)
        start = tuple(float(round(v)) for v in self._motion.position(now))
        target = tuple(s + d for s, d in zip(start, displacement))
        steps = max(abs(d) for d in displacement)
        if steps == 0:
            return
        length = sum(d * d for d in displacement) ** 0.5
        cruise_s = steps * self._min_step_delay_us * 1e-6
        speed = length / cruise_s
        ramp_s = self._ramp_time_us * 1e-6
        accel = speed / ramp_s if ramp_s > 0 else _FAST_ACCEL
        self._motion.enqueue(Move(start, target, speed, accel, 0.0), now)  # type: ignore[arg-type]
        self._move_running = True

    def _release(self, _args: str, _now: float) -> None:
        self._emit("motors released" if self.legacy else "done")

    def _position(self, _args: str, now: float) -> None:
        self._emit("{} {} {}".format(*self._reported(now)))

    def _ramp_time(self, args: str, _now: float) -> None:
        if args.startswith("?"):
            self._emit(f"ramp time {self._ramp_time_us}" if self.legacy
                       else f"ramp_time {self._ramp_time_us}")
            return
        self._ramp_time_us = max(0, _atol(args))
        self._emit("done.")

    def _step_delay(self, args: str, _now: float) -> None:
        if args.startswith("?"):
            self._emit(f"minimum step delay {self._min_step_delay_us}")
            return
        self._min_step_delay_us = max(1, _atol(args))
        self._emit("done.")

    def _zero(self, _args: str, now: float) -> None:
        self._offset = [round(v) for v in self._motion.position(now)]
        self._emit("position reset to 0 0 0")

    def _stop(self, _args: str, now: float) -> None:
        # Like the firmware: motion ends at once and no 'stopped' notice follows the abort.
        self._motion.halt(now)
        self._move_running = False
        self._reply_when_idle = None
        self._emit("Move aborted")

    def _moving(self, _args: str, now: float) -> None:
        self._emit("true" if self._motion.busy(now) else "false")

    def _notify_on_stop(self, _args: str, now: float) -> None:
        if self._motion.busy(now):
            self._notify = True
        else:
            self._emit("Error: stage is not moving")

    def _blocking_moves(self, args: str, _now: float) -> None:
        if args.startswith("?"):
            self._emit(f"blocking_moves {'false' if self._non_blocking else 'true'}")
            return
        self._non_blocking = not args.startswith("t")
        self._emit("done.")

    def _home_min(self, _args: str, now: float) -> None:
        if not self.endstops:
            self._emit("Min endstops not installed")
            return
        # Drive to the physical minimum; the endstop sets the counter there to 0.
        self._start_move([-round(p) for p in self._motion.position(now)], now)
        self._offset = [0, 0, 0]
        self._reply_when_idle = "done."
        self._check_move_end(now)


def _atol(text: str) -> int:
    """C ``atol``: leading integer, 0 when there is none."""
    text = text.strip()
    digits = ""
    for i, ch in enumerate(text):
        if ch.isdigit() or (i == 0 and ch in "+-"):
            digits += ch
        else:
            break
    try:
        return int(digits)
    except ValueError:
        return 0

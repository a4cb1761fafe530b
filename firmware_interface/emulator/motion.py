"""Physics of the emulated 3-axis machine: trapezoidal velocity profiles, a move queue, feed hold.

Positions are machine coordinates in mm. State is never ticked: it is computed from the clock on
demand, so a reading mid-motion is exact and costs nothing while the machine stands still.
Not thread-safe by itself; ``GrblEmulator`` serialises access with its lock.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

Vec = tuple[float, float, float]


@dataclass(frozen=True)
class MotionTimings:
    """How fast the emulated machine moves. ``realtime=False`` makes every move finish instantly."""

    xy_speed_mm_s: float = 5.0
    xy_accel_mm_s2: float = 200.0
    xy_settle_s: float = 0.05
    z_speed_mm_s: float = 1.0
    z_accel_mm_s2: float = 50.0
    z_settle_s: float = 0.01
    realtime: bool = True


@dataclass(frozen=True)
class _Phase:
    """Constant acceleration from distance ``s0`` and speed ``v0`` for ``duration_s``."""

    duration_s: float
    s0: float
    v0: float
    accel: float

    def at(self, t: float) -> tuple[float, float]:
        return self.s0 + self.v0 * t + 0.5 * self.accel * t * t, self.v0 + self.accel * t


def trapezoid(distance: float, speed: float, accel: float, v_start: float = 0.0) -> list[_Phase]:
    """Phases of a rest-to-rest move (or a pure stop when ``v_start`` > 0 and distance is its brake)."""
    if distance <= 0:
        return []
    if v_start > 0:
        # Braking from v_start to rest over exactly `distance` (feed hold).
        decel = v_start * v_start / (2 * distance)
        return [_Phase(v_start / decel, 0.0, v_start, -decel)]
    ramp = speed * speed / accel
    if distance < ramp:  # never reaches cruise speed: triangle profile
        speed = math.sqrt(distance * accel)
        ramp = distance
    t_ramp = speed / accel
    cruise = distance - ramp
    return [
        _Phase(t_ramp, 0.0, 0.0, accel),
        _Phase(cruise / speed, ramp / 2, speed, 0.0),
        _Phase(t_ramp, ramp / 2 + cruise, speed, -accel),
    ]


def move_duration_s(distance: float, speed: float, accel: float) -> float:
    return sum(p.duration_s for p in trapezoid(distance, speed, accel))


@dataclass
class Move:
    start: Vec
    target: Vec
    speed_mm_s: float
    accel_mm_s2: float
    settle_s: float
    kind: str = "run"
    """'run' (G-code), 'jog' or 'home'."""
    start_time: float | None = None
    v_start: float = 0.0

    def __post_init__(self) -> None:
        self.plan()

    def plan(self) -> None:
        """(Re)compute geometry and profile; called again when a queued move learns its start."""
        delta = [b - a for a, b in zip(self.start, self.target)]
        self.length = math.sqrt(sum(d * d for d in delta))
        self.unit = tuple(d / self.length for d in delta) if self.length else (0.0, 0.0, 0.0)
        self.phases = trapezoid(self.length, self.speed_mm_s, self.accel_mm_s2, self.v_start)
        self.duration_s = sum(p.duration_s for p in self.phases)

    def progress(self, now: float) -> tuple[float, float]:
        """(distance travelled, speed) at ``now``."""
        assert self.start_time is not None
        t = now - self.start_time
        for phase in self.phases:
            if t <= phase.duration_s:
                return phase.at(max(t, 0.0))
            t -= phase.duration_s
        return self.length, 0.0

    def point(self, distance: float) -> Vec:
        return tuple(s + u * distance for s, u in zip(self.start, self.unit))  # type: ignore[return-value]

    @property
    def end_time(self) -> float:
        assert self.start_time is not None
        return self.start_time + self.duration_s


class MotionModel:
    """A queue of moves executed one after another, each from rest to rest, on a shared clock."""

    def __init__(self, start_mm: Vec, timings: MotionTimings) -> None:
        self.timings = timings
        self._rest: Vec = start_mm
        self._queue: deque[Move] = deque()
        self._active: Move | None = None
        self._held_target: Move | None = None
        self._hold = False
        self._idle_at = -math.inf

    # -- queries -------------------------------------------------------------------------------
    def position(self, now: float) -> Vec:
        self._advance(now)
        if self._active is None:
            return self._rest
        return self._active.point(self._active.progress(now)[0])

    def speed_mm_s(self, now: float) -> float:
        self._advance(now)
        return 0.0 if self._active is None else self._active.progress(now)[1]

    def busy(self, now: float) -> bool:
        """True while moving, queued, or settling."""
        self._advance(now)
        return self._active is not None or now < self._idle_at

    def active_kind(self, now: float) -> str | None:
        self._advance(now)
        if self._active is not None:
            return self._active.kind
        return None

    def hold_state(self, now: float) -> int | None:
        """None when not held, 1 while braking, 0 once stopped in hold."""
        if not self._hold:
            return None
        self._advance(now)
        return 1 if self._active is not None else 0

    def queued(self, now: float) -> int:
        """Planner blocks in use: the executing move plus those waiting."""
        self._advance(now)
        return len(self._queue) + (1 if self._active is not None else 0)

    def final_target(self) -> Vec:
        """Where the machine ends up once the queue is done (parser position for the next line)."""
        if self._queue:
            return self._queue[-1].target
        if self._held_target is not None:
            return self._held_target.target
        return self._active.target if self._active is not None else self._rest

    # -- commands ------------------------------------------------------------------------------
    def enqueue(self, move: Move, now: float) -> None:
        self._queue.append(move)
        self._advance(now)

    def feed_hold(self, now: float) -> None:
        self._advance(now)
        if self._hold:
            return
        self._hold = True
        active = self._active
        if active is None:
            return
        s, v = active.progress(now)
        brake = v * v / (2 * active.accel_mm_s2) if v > 0 else 0.0
        stop_at = min(active.length, s + brake)
        self._held_target = active
        self._active = None
        if stop_at > s:
            self._active = Move(active.point(s), active.point(stop_at), v, active.accel_mm_s2,
                                0.0, active.kind, start_time=now, v_start=v)
        else:
            self._rest = active.point(s)

    def resume(self, now: float) -> None:
        """Cycle start: leave hold and finish the interrupted move, then the queue."""
        if not self._hold or self.hold_state(now) != 0:
            return
        self._hold = False
        held, self._held_target = self._held_target, None
        if held is not None:
            rest = Move(self._rest, held.target, held.speed_mm_s, held.accel_mm_s2, held.settle_s,
                        held.kind)
            self._queue.appendleft(rest)
        self._advance(now)

    def cancel(self, now: float, *, kinds: tuple[str, ...] | None = None) -> None:
        """Brake to a stop and flush the queue (jog cancel). ``kinds`` limits which moves it hits."""
        if self._active is not None and kinds is not None and self._active.kind not in kinds:
            return
        self.feed_hold(now)
        self._queue.clear()
        self._held_target = None
        self._hold = False

    def halt(self, now: float) -> bool:
        """Immediate stop (reset): returns True when it interrupted motion (position uncertain)."""
        self._advance(now)
        moving = self._active is not None and not (self._hold and self.hold_state(now) == 0)
        moving = moving or (bool(self._queue) and not self._hold)
        self._rest = self.position(now)
        self._active = None
        self._queue.clear()
        self._held_target = None
        self._hold = False
        self._idle_at = -math.inf
        return moving

    # -- internals -----------------------------------------------------------------------------
    def _advance(self, now: float) -> None:
        while True:
            active = self._active
            if active is not None:
                if now < active.end_time:
                    return
                self._rest = active.target
                self._idle_at = active.end_time + (0.0 if self._hold else active.settle_s)
                self._active = None
                start = active.end_time
            else:
                start = now
            if self._hold or not self._queue:
                return
            move = self._queue.popleft()
            if not self.timings.realtime or move.target == self._rest:
                # Zero-delay mode: the protocol runs as usual but the machine teleports.
                self._rest = move.target
                continue
            move.start = self._rest
            move.plan()
            move.start_time = start
            self._active = move

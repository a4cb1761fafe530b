"""The emulated controller's ``$`` settings: defaults from the motion model, listing, validated
writes, and the move they allow between two points."""

from __future__ import annotations

from firmware_interface.emulator.motion import MotionTimings, Move, Vec

INTEGER_SETTINGS = frozenset({0, 1, 2, 3, 4, 5, 6, 10, 13, 20, 21, 22, 23, 26, 30, 31, 32})
# Zero steps/mm, rate or acceleration would divide by zero in the physics model.
_POSITIVE_SETTINGS = frozenset({100, 101, 102, 110, 111, 112, 120, 121, 122})


def default_settings(timings: MotionTimings, travel_mm: Vec, homing: bool) -> dict[int, float]:
    """GRBL's documented defaults, except motion and travel, which describe the emulated stage."""
    xy_rate, z_rate = timings.xy_speed_mm_s * 60.0, timings.z_speed_mm_s * 60.0
    return {
        0: 10, 1: 25, 2: 0, 3: 0, 4: 0, 5: 0, 6: 0, 10: 1, 11: 0.010, 12: 0.002, 13: 0,
        20: int(homing), 21: 0, 22: int(homing), 23: 0, 24: 25.0, 25: 500.0, 26: 250, 27: 1.0,
        30: 1000, 31: 0, 32: 0,
        # Z: 0.1 µm per step, as a fine-focus drive needs for sub-micron z-stacks.
        100: 1000.0, 101: 1000.0, 102: 10000.0,
        110: xy_rate, 111: xy_rate, 112: z_rate,
        120: timings.xy_accel_mm_s2, 121: timings.xy_accel_mm_s2, 122: timings.z_accel_mm_s2,
        130: travel_mm[0], 131: travel_mm[1], 132: travel_mm[2],
    }


def format_setting(number: int, value: float) -> str:
    return str(int(value)) if number in INTEGER_SETTINGS else f"{value:.3f}"


def write_setting(settings: dict[int, float], line: str) -> int:
    """Apply ``$N=value``; returns 0 or the GRBL error code it would answer."""
    name, sep, value_text = line[1:].partition("=")
    if not sep or not name.isdigit() or int(name) not in settings:
        return 3
    try:
        value = float(value_text)
    except ValueError:
        return 2
    number = int(name)
    if value < 0:
        return 4
    if number == 20 and value and not settings[22]:
        return 10
    if number in _POSITIVE_SETTINGS and value == 0:
        return 4
    settings[number] = int(value) if number in INTEGER_SETTINGS else value
    return 0


def plan_move(start: Vec, target: Vec, feed_mm_min: float | None, settings: dict[int, float],
              timings: MotionTimings, kind: str) -> Move | None:
    """A straight move limited per axis by ``$110..$112`` (rate) and ``$120..$122`` (acceleration),
    as GRBL scales the vector so no axis exceeds its own; None when it goes nowhere. No feed: a
    rapid, at the axes' maximum rates."""
    delta = [abs(b - a) for a, b in zip(start, target)]
    length = sum(d * d for d in delta) ** 0.5
    if length == 0:
        return None
    speed = (feed_mm_min or float("inf")) / 60.0
    accel = float("inf")
    for i, d in enumerate(delta):
        if d > 0:
            speed = min(speed, settings[110 + i] / 60.0 * length / d)
            accel = min(accel, settings[120 + i] * length / d)
    settle = max(timings.xy_settle_s if delta[0] or delta[1] else 0.0,
                 timings.z_settle_s if delta[2] else 0.0)
    return Move(start, target, speed, accel, settle, kind)

"""Autofocus by sweeping z: a coarse sweep finds the peak's neighbourhood, a fine sweep and a parabola
through its three best samples place it. Sweeps always run upwards, so z is approached from one side.

A result counts only when the peak lies inside the searched range and stands out from the curve; a
peak at the edge moves the search there once; otherwise the field is flagged, never silently kept.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from agent import focus
from agent.hardware.camera import Camera
from firmware_interface.stage import Stage

# Below this max/min ratio of a sweep's scores there is no peak worth trusting (blank glass, no sample).
_MIN_PROMINENCE = 1.02


@dataclass
class AutofocusResult:
    z_um: float
    success: bool
    frames: int
    elapsed_s: float
    reason: str = ""
    curve: list[tuple[float, float]] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {
            "z_um": round(self.z_um, 3),
            "success": self.success,
            "frames": self.frames,
            "elapsed_s": round(self.elapsed_s, 4),
            "reason": self.reason,
        }


class SweepAutofocus:
    def __init__(
        self, stage: Stage, camera: Camera, *, measure: str, downsample: int,
        coarse_step_um: float, fine_step_um: float, z_limits_um: tuple[float, float],
        move_timeout_s: float, capture_timeout_s: float,
    ) -> None:
        self.stage = stage
        self.camera = camera
        self.measure = measure
        self.downsample = downsample
        self.coarse_step_um = coarse_step_um
        self.fine_step_um = fine_step_um
        self.z_limits_um = z_limits_um
        self.move_timeout_s = move_timeout_s
        self.capture_timeout_s = capture_timeout_s

    def focus(self, center_z_um: float, half_range_um: float) -> AutofocusResult:
        start = time.perf_counter()
        curve: list[tuple[float, float]] = []
        coarse = self._sweep(center_z_um, half_range_um, self.coarse_step_um, curve)
        peak = _argmax(coarse)
        if peak in (0, len(coarse) - 1):
            # Peak at an edge: the focus lies beyond; search once more centred on that edge.
            coarse = self._sweep(coarse[peak][0], half_range_um, self.coarse_step_um, curve)
            peak = _argmax(coarse)
        scores = [s for _, s in coarse]
        if peak in (0, len(coarse) - 1):
            return self._fail(center_z_um, curve, start, "peak outside the searched range")
        if max(scores) < _MIN_PROMINENCE * min(scores):
            return self._fail(center_z_um, curve, start, "no focus peak (flat focus curve)")
        fine = self._sweep(coarse[peak][0], self.coarse_step_um, self.fine_step_um, curve)
        z_best = _parabola_peak(fine)
        return AutofocusResult(z_best, True, len(curve), time.perf_counter() - start, "", curve)

    def _sweep(self, center: float, half_range: float, step: float, curve: list) -> list[tuple[float, float]]:
        lo = max(self.z_limits_um[0], center - half_range)
        hi = min(self.z_limits_um[1], center + half_range)
        samples = []
        for z in np.arange(lo, hi + step / 2, step):
            self.stage.move_to(z_um=float(z), timeout_s=self.move_timeout_s)
            frame = self.camera.capture(timeout_s=self.capture_timeout_s)
            score = focus.focus_measure(frame.image, self.measure, downsample=self.downsample)
            samples.append((float(z), score))
            curve.append((round(float(z), 3), score))
        return samples

    def _fail(self, z: float, curve: list, start: float, reason: str) -> AutofocusResult:
        return AutofocusResult(z, False, len(curve), time.perf_counter() - start, reason, curve)


def _argmax(samples: list[tuple[float, float]]) -> int:
    return int(np.argmax([s for _, s in samples]))


def _parabola_peak(samples: list[tuple[float, float]]) -> float:
    """Vertex of the parabola through the best sample and its neighbours (the best sample at an edge)."""
    i = _argmax(samples)
    if i == 0 or i == len(samples) - 1:
        return samples[i][0]
    (z0, s0), (z1, s1), (z2, s2) = samples[i - 1], samples[i], samples[i + 1]
    denom = s0 - 2 * s1 + s2
    if denom >= 0:
        return z1
    offset = 0.5 * (s0 - s2) / denom
    return z1 + float(np.clip(offset, -1.0, 1.0)) * (z2 - z1)


class FieldFocuser:
    """Chooses where each field's search starts and how wide it is, then focuses.

    The first field searches widely around the configured start; later fields search narrowly around
    the last successful focus. Resumed scans feed their finished fields in through ``remember``.
    """

    def __init__(self, autofocus: SweepAutofocus, *, start_z_um: float, first_range_um: float,
                 range_um: float) -> None:
        self.autofocus = autofocus
        self.start_z_um = start_z_um
        self.first_range_um = first_range_um
        self.range_um = range_um
        self._last_z: float | None = None

    def remember(self, x_um: float, y_um: float, z_um: float) -> None:
        self._last_z = z_um

    def focus_field(self, x_um: float, y_um: float) -> AutofocusResult:
        if self._last_z is None:
            result = self.autofocus.focus(self.start_z_um, self.first_range_um)
        else:
            result = self.autofocus.focus(self._last_z, self.range_um)
        if result.success:
            self.remember(x_um, y_um, result.z_um)
        return result


def build_focuser(settings, stage: Stage, camera: Camera, measure: str) -> FieldFocuser:
    s = settings
    sweep = SweepAutofocus(
        stage, camera, measure=measure, downsample=s.focus.downsample,
        coarse_step_um=s.focus.coarse_step_um, fine_step_um=s.focus.fine_step_um,
        z_limits_um=(0.0, s.stage.travel_um[2]), move_timeout_s=s.stage.move_timeout_s,
        capture_timeout_s=s.camera.capture_timeout_s,
    )
    return FieldFocuser(sweep, start_z_um=s.focus.start_z_um, first_range_um=s.focus.first_range_um,
                        range_um=s.focus.range_um)

"""Autofocus in a handful of frames: bracket the focus peak, then place it with a fitted parabola.

The focus curve (score against z) of the default measure on frames downsampled 4x is a sharp peak
(full width at half maximum ~1.2 um on the virtual 100x objective) on long tails that still rise
towards focus 5 um away (docs/focus.md). Near the peak its logarithm is close to a parabola, so a
parabola through the log scores of three frames (a Gaussian fit) places the peak to ~0.1-0.25 um
when the frames are at most ``2 * fine_step_um`` apart and the best one is not at an end.

``PeakSearch`` is the search itself, written against a ``probe(z_um) -> score`` callable so it can be
tested on synthetic curves:

1. Three frames at ``center - step``, ``center``, ``center + step``.
2. While the best frame is at an end of the sampled range, step beyond it (the step grows by 1.5x up
   to ``max_step_um``, or jumps to the parabola's vertex when that is closer): the peak gets bracketed.
   A flat curve (no frame ``min_peak_ratio`` above the worst) widens the search on both sides.
3. Once bracketed, if the bracket is too coarse, two frames at the parabola's vertex +- fine step
   (or one frame halving each side of the best frame that is still wider than two fine steps).
4. Accept the vertex only when the best frame is interior, its neighbours are within
   ``2 * fine_step_um``, the fitted log-parabola is concave and the peak stands ``min_peak_ratio``
   above the lowest frame; or when three frames one fine step apart have their best at an end but
   their vertex inside (a prediction a little off). Leaving ``[lo, hi]`` or the frame budget fails
   with a reason; the result's z is then the best frame seen.

With a prediction from the focus map (``FieldFocuser``) step 1 uses the fine step around the
prediction, so a good prediction is confirmed in three frames. Stage moves go wherever the search
needs: the GRBL driver overshoots below and comes back up on every downward z move (backlash), so
every frame is taken after an upward approach.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from agent import focus
from agent.acquisition.focus_map import FocusMap, Prediction
from agent.hardware.camera import Camera
from firmware_interface.stage import Stage

# Bracket expansion per step while walking towards the peak (the golden-section search's 1.618
# overshoots the 1.2 um wide peak more often; 1.5 reaches 5 um away in three steps from 1.5 um).
_EXPAND = 1.5
# Two samples closer than this share of the fine step add nothing to the fit: do not take both.
_MIN_SEPARATION = 0.4
# An end-of-range vertex counts only this share of the fine step inside the sampled range.
_END_MARGIN = 0.25
# Scores are floored here before the logarithm (a black frame scores 0).
_SCORE_FLOOR = 1e-9


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


@dataclass(frozen=True)
class SearchParams:
    fine_step_um: float = 0.5
    coarse_step_um: float = 1.5
    max_step_um: float = 3.0
    min_peak_ratio: float = 1.1
    max_frames: int = 16


@dataclass
class SearchOutcome:
    z_um: float
    success: bool
    reason: str = ""


def fit_log_parabola(samples: list[tuple[float, float]]) -> float | None:
    """Vertex z of the parabola through the logs of three (z, score) samples; None if not concave.

    The samples may be unevenly spaced. A concave log-parabola is a Gaussian, which matches the top of
    a focus peak better than a parabola on raw scores (sharper peaks, long tails).
    """
    if len(samples) != 3:
        raise ValueError(f"need exactly three samples, got {len(samples)}")
    (z0, s0), (z1, s1), (z2, s2) = sorted(samples)
    if not (z0 < z1 < z2):
        raise ValueError("the three samples need distinct z")
    y0, y1, y2 = (math.log(max(s, _SCORE_FLOOR)) for s in (s0, s1, s2))
    d01 = (y1 - y0) / (z1 - z0)
    d12 = (y2 - y1) / (z2 - z1)
    curvature = (d12 - d01) / (z2 - z0)  # the parabola's leading coefficient
    if curvature >= 0:
        return None
    # y = y0 + d01 (z - z0) + curvature (z - z0)(z - z1); dy/dz = 0 at the vertex.
    return 0.5 * (z0 + z1) - d01 / (2.0 * curvature)


class PeakSearch:
    """Brackets and fits the focus peak through ``probe``; see the module docstring."""

    def __init__(self, params: SearchParams) -> None:
        self.p = params

    def run(self, probe: Callable[[float], float], center_um: float, step_um: float,
            lo_um: float, hi_um: float) -> SearchOutcome:
        center_um = min(max(center_um, lo_um), hi_um)
        samples: dict[float, float] = {}
        self._take(probe, samples, [center_um - step_um, center_um, center_um + step_um], lo_um, hi_um)
        while True:
            zs = sorted(samples)
            ss = [samples[z] for z in zs]
            if len(zs) < 3:
                return SearchOutcome(center_um, False, "search range too narrow for three frames")
            decision = self._decide(zs, ss, samples, step_um, lo_um, hi_um)
            if isinstance(decision, SearchOutcome):
                return decision
            nxt, reason = decision
            best = zs[int(np.argmax(ss))]
            nxt = [z for z in nxt if self._is_new(z, samples)]
            if len(samples) + len(nxt) > self.p.max_frames:
                return SearchOutcome(best, False, f"{reason} within {self.p.max_frames} frames")
            if not nxt or self._take(probe, samples, nxt, lo_um, hi_um) == 0:
                return SearchOutcome(best, False, reason)

    def _decide(self, zs: list[float], ss: list[float], samples: dict[float, float], step_um: float,
                lo_um: float, hi_um: float) -> SearchOutcome | tuple[list[float], str]:
        """The accepted peak, or the next frames to take and why they are needed."""
        if max(ss) <= self.p.min_peak_ratio * max(min(ss), _SCORE_FLOOR):
            return self._widen(zs, step_um, lo_um, hi_um), "no focus peak (flat focus curve)"
        i = int(np.argmax(ss))
        if i in (0, len(zs) - 1):
            end = self._end_vertex(zs, ss, i)
            if end is not None:
                return SearchOutcome(end, True)
            return self._beyond(zs, ss, i, lo_um, hi_um), "peak outside the searched range"
        triplet = [(zs[k], ss[k]) for k in (i - 1, i, i + 1)]
        vertex = fit_log_parabola(triplet)
        if vertex is not None and self._fine_enough(triplet):
            return SearchOutcome(min(max(vertex, zs[i - 1]), zs[i + 1]), True)
        return self._refine(zs, i, vertex, samples), "peak not resolved"

    # -- where to look next -----------------------------------------------------------------------
    def _fine_enough(self, triplet: list[tuple[float, float]]) -> bool:
        gap = max(triplet[1][0] - triplet[0][0], triplet[2][0] - triplet[1][0])
        return gap <= 2.0 * self.p.fine_step_um + 1e-6

    def _refine(self, zs: list[float], i: int, vertex: float | None,
                samples: dict[float, float]) -> list[float]:
        """Frames that narrow the bracket around the best frame to at most two fine steps a side."""
        f = self.p.fine_step_um
        wide = [d for d, z in ((-1.0, zs[i - 1]), (1.0, zs[i + 1])) if abs(z - zs[i]) > 2.0 * f + 1e-6]
        if len(wide) == 2 and vertex is not None:
            # A coarse bracket: frames either side of the fitted peak usually finish it in one go.
            centre = min(max(vertex, zs[i - 1]), zs[i + 1])
            picks = [z for z in (centre - f, centre + f) if self._is_new(z, samples)]
            if picks:
                return picks
        # Halve each wide side (at most two fine steps out): one frame per wide side.
        picks = []
        for d in wide:
            gap = abs((zs[i + 1] if d > 0 else zs[i - 1]) - zs[i])
            picks.append(zs[i] + d * min(2.0 * f, 0.5 * gap))
        return picks

    def _end_vertex(self, zs: list[float], ss: list[float], i: int) -> float | None:
        """The peak of a fine triplet whose best frame is at the end but whose vertex lies inside.

        A prediction half a fine step off puts the best frame at the end; on a fine triplet the
        Gaussian's vertex still places the peak to ~0.15 um as long as it lies inside the triplet.
        """
        k = (i - 2, i - 1, i) if i == len(zs) - 1 else (0, 1, 2)
        triplet = [(zs[j], ss[j]) for j in k]
        if max(triplet[1][0] - triplet[0][0], triplet[2][0] - triplet[1][0]) > self.p.fine_step_um + 1e-6:
            return None
        vertex = fit_log_parabola(triplet)
        margin = _END_MARGIN * self.p.fine_step_um
        if vertex is None or not triplet[0][0] + margin <= vertex <= triplet[2][0] - margin:
            return None
        return vertex

    def _beyond(self, zs: list[float], ss: list[float], i: int, lo: float, hi: float) -> list[float]:
        """One frame past the best end frame: the peak lies that way."""
        sign = 1.0 if i == len(zs) - 1 else -1.0
        edge = zs[i]
        gap = abs(edge - zs[i - 1] if sign > 0 else zs[1] - edge)
        step = min(self.p.max_step_um, max(self.p.fine_step_um, gap * _EXPAND))
        near = [(zs[k], ss[k]) for k in ((i - 2, i - 1, i) if sign > 0 else (0, 1, 2))]
        vertex = fit_log_parabola(near) if len(zs) >= 3 else None
        if vertex is not None and sign * (vertex - edge) > 0:
            # The three end frames already curve over: their vertex is a better guess than a blind step.
            step = min(step, max(self.p.fine_step_um, sign * (vertex - edge) + 0.5 * self.p.fine_step_um))
        target = edge + sign * step
        if (sign > 0 and edge >= hi) or (sign < 0 and edge <= lo):
            return []
        return [min(max(target, lo), hi)]

    def _widen(self, zs: list[float], step: float, lo: float, hi: float) -> list[float]:
        """A flat curve says nothing about direction: look further out on both sides."""
        out = min(self.p.max_step_um, 2.0 * step)
        new = []
        if zs[0] > lo:
            new.append(max(lo, zs[0] - out))
        if zs[-1] < hi:
            new.append(min(hi, zs[-1] + out))
        return new

    def _is_new(self, z: float, samples: dict[float, float]) -> bool:
        return all(abs(z - s) >= _MIN_SEPARATION * self.p.fine_step_um for s in samples)

    def _take(self, probe: Callable[[float], float], samples: dict[float, float], zs: list[float],
              lo: float, hi: float) -> int:
        # Bottom to top, so a batch costs at most one backlash overshoot.
        taken = 0
        for z in sorted({min(max(z, lo), hi) for z in zs}):
            if self._is_new(z, samples):
                samples[z] = probe(z)
                taken += 1
        return taken


class Autofocus:
    """Runs ``PeakSearch`` on the real stage and camera; every frame it takes goes into the curve."""

    def __init__(self, stage: Stage, camera: Camera, params: SearchParams, *, measure: str,
                 downsample: int, z_limits_um: tuple[float, float], move_timeout_s: float,
                 capture_timeout_s: float) -> None:
        self.stage = stage
        self.camera = camera
        self.search = PeakSearch(params)
        self.params = params
        self.measure = measure
        self.downsample = downsample
        self.z_limits_um = z_limits_um
        self.move_timeout_s = move_timeout_s
        self.capture_timeout_s = capture_timeout_s

    def focus(self, attempts: list[tuple[float, float, float]]) -> AutofocusResult:
        """Try ``(center_um, step_um, half_range_um)`` searches in turn until one succeeds."""
        start = time.perf_counter()
        curve: list[tuple[float, float]] = []
        outcome = SearchOutcome(attempts[0][0], False, "no search attempted")
        for center, step, half_range in attempts:
            lo = max(self.z_limits_um[0], center - half_range)
            hi = min(self.z_limits_um[1], center + half_range)
            outcome = self.search.run(lambda z: self._probe(z, curve), center, step, lo, hi)
            if outcome.success:
                break
        reason = "" if outcome.success else f"{outcome.reason} (after {len(attempts)} searches)"
        return AutofocusResult(outcome.z_um, outcome.success, len(curve), time.perf_counter() - start,
                               reason, curve)

    def _probe(self, z_um: float, curve: list[tuple[float, float]]) -> float:
        self.stage.move_to(z_um=z_um, timeout_s=self.move_timeout_s)
        frame = self.camera.capture(timeout_s=self.capture_timeout_s)
        score = focus.focus_measure(frame.image, self.measure, downsample=self.downsample)
        curve.append((round(z_um, 3), score))
        return score


class FieldFocuser:
    """Chooses each field's search from the focus map, focuses, and feeds the map.

    No prediction (the first field): a coarse search around ``start_z_um``, ``first_range_um`` wide.
    With a prediction: three frames a fine step apart around it, within ``range_um``; when that fails,
    a coarse search around the prediction over ``first_range_um``. Only successful fields (and those a
    resumed scan hands in through ``remember``) enter the map, so a flagged field never steers others.
    """

    def __init__(self, autofocus: Autofocus, focus_map: FocusMap, *, start_z_um: float,
                 first_range_um: float, range_um: float) -> None:
        self.autofocus = autofocus
        self.map = focus_map
        self.start_z_um = start_z_um
        self.first_range_um = first_range_um
        self.range_um = range_um
        self.last_prediction: Prediction | None = None

    def remember(self, x_um: float, y_um: float, z_um: float) -> None:
        self.map.add(x_um, y_um, z_um)

    def predict(self, x_um: float, y_um: float) -> Prediction | None:
        return self.map.predict(x_um, y_um)

    def focus_field(self, x_um: float, y_um: float) -> AutofocusResult:
        p = self.autofocus.params
        self.last_prediction = self.map.predict(x_um, y_um)
        if self.last_prediction is None:
            attempts = [(self.start_z_um, p.coarse_step_um, self.first_range_um),
                        (self.start_z_um, p.coarse_step_um, 2.0 * self.first_range_um)]
        else:
            z = self.last_prediction.z_um
            attempts = [(z, p.fine_step_um, self.range_um), (z, p.coarse_step_um, self.first_range_um)]
        result = self.autofocus.focus(attempts)
        if result.success:
            self.remember(x_um, y_um, result.z_um)
        return result


def build_focuser(settings, stage: Stage, camera: Camera, measure: str) -> FieldFocuser:
    f = settings.focus
    params = SearchParams(fine_step_um=f.fine_step_um, coarse_step_um=f.coarse_step_um,
                          max_step_um=f.max_step_um, min_peak_ratio=f.min_peak_ratio,
                          max_frames=f.max_frames)
    autofocus = Autofocus(
        stage, camera, params, measure=measure, downsample=f.downsample,
        z_limits_um=(0.0, settings.stage.travel_um[2]), move_timeout_s=settings.stage.move_timeout_s,
        capture_timeout_s=settings.camera.capture_timeout_s,
    )
    focus_map = FocusMap(quadratic_min_points=f.map_quadratic_points, radius_um=f.map_radius_um,
                         outlier_um=f.map_outlier_um)
    return FieldFocuser(autofocus, focus_map, start_z_um=f.start_z_um, first_range_um=f.first_range_um,
                        range_um=f.range_um)

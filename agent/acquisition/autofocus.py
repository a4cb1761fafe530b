"""Autofocus in a handful of frames: bracket the focus peak, then place it with a fitted parabola.

The focus curve (score against z) of the default measure on frames downsampled 4x is a sharp peak
(full width at half maximum ~1.2 um on the virtual 100x objective) on long tails that still rise
towards focus 5 um away (docs/focus.md). Near the peak its logarithm is close to a parabola, so a
parabola through the log scores of three frames (a Gaussian fit) places the peak to ~0.1-0.25 um
when the frames are at most ``2 * fine_step_um`` apart and the best one is not at an end.

``PeakSearch`` is the search itself, written against a ``probe(z_um) -> score`` callable so it can be
tested on synthetic curves. A probe may return ``(fine, coarse)``: ``Autofocus`` scores every frame at
``focus.downsample`` (fine: a sharp peak that places focus) and ``focus.coarse_downsample`` (coarse: a
wide curve whose log still rises 10 um from focus, which steers the search).

1. Three frames at ``center - step``, ``center``, ``center + step`` (cold: ``coarse_step_um`` = 3 um).
2. Accept when the fine frames place the peak: the best frame is interior, its neighbours within
   ``2 * fine_step_um``, the fitted log-parabola (asymmetric by ``peak_asymmetry``) concave and the
   peak ``min_peak_ratio`` above the lowest frame; or three frames one fine step apart have their best
   at an end but their vertex inside (a prediction a little off).
3. Otherwise estimate the peak: near it (fine frames around the best) from the fine log-parabola,
   else from the coarse curve's known shape fitted to every frame (``model_peak``: three frames
   anywhere within ~10 um place the peak to < 1 um), and take the frames that make a fine triplet
   around the estimate (one frame when a fine triplet's vertex lies beyond its end).
4. No frame ``min_peak_ratio`` above the worst, fine and coarse alike (blank glass): one look
   ``2 * max_step_um`` further out on both sides, then fail as a flat curve; ``Autofocus`` does not
   run its second search after that. Leaving ``[lo, hi]`` or the frame budget fails with a reason;
   the result's z is then the best frame seen.

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
# Shape of the coarse focus curve (``model_peak``), fitted to laplacian_variance at downsample 8 over
# fields of the virtual microscope from -10 to +6 um (rms 0.07 in log score; docs/focus.md): exponent, width,
# how much faster it falls above focus, and where its peak lies relative to the fine curve's.
_SHAPE_EXPONENT = 1.94
_SHAPE_WIDTH_UM = 2.27
_SHAPE_ASYMMETRY = 1.2
_SHAPE_OFFSET_UM = -0.29
# A frame planned this close (share of the fine step) to one already taken is not worth taking.
_PICK_SEPARATION = 0.6
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
    coarse_step_um: float = 3.0
    max_step_um: float = 3.0
    min_peak_ratio: float = 1.1
    max_frames: int = 16
    peak_asymmetry: float = 1.2


@dataclass
class SearchOutcome:
    z_um: float
    success: bool
    reason: str = ""


# A probe returns the frame's fine score, or (fine, coarse): the coarse score (a stronger downsample)
# has a wider focus curve that still rises 10 um from focus; it steers, the fine score places the peak.
Score = float | tuple[float, float]
FLAT_REASON = "no focus peak (flat focus curve)"


def _log(s: float) -> float:
    return math.log(max(s, _SCORE_FLOOR))


def fit_log_parabola(samples: list[tuple[float, float]], asymmetry: float = 1.0) -> float | None:
    """Vertex z of the parabola through the logs of three (z, score) samples; None if not concave.

    The samples may be unevenly spaced. A concave log-parabola is a Gaussian, which matches the top of
    a focus peak better than a parabola on raw scores (sharper peaks, long tails).

    ``asymmetry`` > 1 fits a peak that falls that many times faster above its vertex than below
    (defocus blur grows faster on one side of focus): z above the vertex is stretched by
    ``asymmetry`` about it and the symmetric vertex refitted until it stays put. With 1 the fit is
    the plain Gaussian.
    """
    if len(samples) != 3:
        raise ValueError(f"need exactly three samples, got {len(samples)}")
    pts = sorted(samples)
    (z0, s0), (z1, s1), (z2, s2) = pts
    if not (z0 < z1 < z2):
        raise ValueError("the three samples need distinct z")
    ys = [_log(s) for s in (s0, s1, s2)]
    vertex = _vertex((z0, z1, z2), ys)
    if vertex is None or asymmetry == 1.0:
        return vertex
    for _ in range(30):
        warped = tuple(z if z <= vertex else vertex + asymmetry * (z - vertex) for z in (z0, z1, z2))
        nxt = _vertex(warped, ys)
        if nxt is None:
            return vertex
        if abs(nxt - vertex) < 1e-6:
            return nxt
        vertex = nxt
    return vertex


def _vertex(zs: tuple[float, float, float], ys: list[float]) -> float | None:
    (z0, z1, z2), (y0, y1, y2) = zs, ys
    d01 = (y1 - y0) / (z1 - z0)
    d12 = (y2 - y1) / (z2 - z1)
    curvature = (d12 - d01) / (z2 - z0)  # the parabola's leading coefficient
    if curvature >= 0:
        return None
    # y = y0 + d01 (z - z0) + curvature (z - z0)(z - z1); dy/dz = 0 at the vertex.
    return 0.5 * (z0 + z1) - d01 / (2.0 * curvature)


def model_peak(samples: list[tuple[float, float]], lo_um: float, hi_um: float) -> float | None:
    """The peak z that best explains coarse (z, score) samples with the coarse curve's known shape.

    ``log score = a - n log(1 + (u / w)^2)``, ``u`` the defocus (stretched ``_SHAPE_ASYMMETRY``x above
    focus): a power of the blur, which grows linearly with defocus. Only ``a`` (how much the field
    has to show) and the peak are free, so three frames anywhere on the curve, tails included, place
    the peak: to ~0.05 um within 2 um of it, to ~0.8 um 9 um away on the virtual microscope. A grid
    search over the peak (0.02 um) with ``a`` in closed form. None with fewer than three samples.
    """
    if len(samples) < 3:
        return None
    zs = np.array([z for z, _ in samples])
    ys = np.array([_log(v) for _, v in samples])
    grid = np.arange(max(lo_um, zs.min() - 8.0), min(hi_um, zs.max() + 8.0) + 1e-9, 0.02)
    if grid.size == 0:
        return None
    u = zs[None, :] - grid[:, None]
    u = np.where(u > 0, _SHAPE_ASYMMETRY * u, u)
    model = -_SHAPE_EXPONENT * np.log1p((u / _SHAPE_WIDTH_UM) ** 2)
    a = (ys[None, :] - model).mean(axis=1)
    sse = ((ys[None, :] - model - a[:, None]) ** 2).sum(axis=1)
    return float(grid[int(np.argmin(sse))]) - _SHAPE_OFFSET_UM


class PeakSearch:
    """Brackets and fits the focus peak through ``probe``; see the module docstring."""

    def __init__(self, params: SearchParams) -> None:
        self.p = params

    def run(self, probe: Callable[[float], Score], center_um: float, step_um: float,
            lo_um: float, hi_um: float) -> SearchOutcome:
        center_um = min(max(center_um, lo_um), hi_um)
        samples: dict[float, tuple[float, float]] = {}
        self._take(probe, samples, [center_um - step_um, center_um, center_um + step_um], lo_um, hi_um)
        widened = False
        while True:
            zs = sorted(samples)
            if len(zs) < 3:
                return SearchOutcome(center_um, False, "search range too narrow for three frames")
            fine = [samples[z][0] for z in zs]
            coarse = [samples[z][1] for z in zs]
            best = zs[int(np.argmax(fine))]
            decision = self._decide(zs, fine, coarse, samples, lo_um, hi_um, widened)
            if isinstance(decision, SearchOutcome):
                return decision
            nxt, reason = decision
            widened = widened or reason == FLAT_REASON
            nxt = [z for z in nxt if self._is_new(z, samples)]
            if len(samples) + len(nxt) > self.p.max_frames:
                return SearchOutcome(best, False, f"{reason} within {self.p.max_frames} frames")
            if not nxt or self._take(probe, samples, nxt, lo_um, hi_um) == 0:
                return SearchOutcome(best, False, reason)

    def _decide(self, zs: list[float], fine: list[float], coarse: list[float],
                samples: dict[float, tuple[float, float]], lo_um: float, hi_um: float,
                widened: bool) -> SearchOutcome | tuple[list[float], str]:
        """The accepted peak, or the next frames to take and why they are needed."""
        flat = (max(fine) <= self.p.min_peak_ratio * max(min(fine), _SCORE_FLOOR)
                and max(coarse) <= self.p.min_peak_ratio * max(min(coarse), _SCORE_FLOOR))
        if flat:
            if widened:
                return SearchOutcome(zs[int(np.argmax(fine))], False, FLAT_REASON)
            return self._widen(zs, lo_um, hi_um), FLAT_REASON
        accepted = self._accept(zs, fine)
        if accepted is not None:
            return SearchOutcome(accepted, True)
        # Where is the peak? Near it (fine frames around the best one) the fine curve knows best;
        # before that the coarse curve's known shape places it from three frames anywhere.
        i = int(np.argmax(fine))
        f = self.p.fine_step_um
        near = any(0 < abs(zs[j] - zs[i]) <= 2.0 * f + 1e-6 for j in (i - 1, i + 1) if 0 <= j < len(zs))
        estimate = self._estimate(zs, fine) if near else None
        from_model = estimate is None
        if from_model:
            v = model_peak(list(zip(zs, coarse)), lo_um, hi_um)
            estimate = None if v is None else (v, zs[0] <= v <= zs[-1])
        if estimate is not None:
            v, inside = estimate
            v = min(max(v, lo_um), hi_um)
            if inside or from_model:
                # The frames that make a fine triplet around the estimate.
                picks = [z for z in (v - f, v, v + f) if self._is_new(z, samples, _PICK_SEPARATION)]
                if picks:
                    return picks, "peak not resolved" if inside else "peak outside the searched range"
            else:
                # Extrapolated from the fine frames: one frame there brackets the peak.
                edge = zs[-1] if v > zs[-1] else zs[0]
                v = edge + math.copysign(max(abs(v - edge), f), v - edge)
                v = min(max(v, lo_um), hi_um)
                if self._is_new(v, samples):
                    return [v], "peak outside the searched range"
        i = int(np.argmax(coarse))
        if i in (0, len(zs) - 1):
            return self._beyond(zs, i, lo_um, hi_um), "peak outside the searched range"
        return self._refine(zs, int(np.argmax(fine))), "peak not resolved"

    # -- accepting a peak -------------------------------------------------------------------------
    def _accept(self, zs: list[float], fine: list[float]) -> float | None:
        """The fitted peak when the fine frames already place it, else None.

        The best frame is interior, its neighbours within two fine steps, the log-parabola concave and
        the peak ``min_peak_ratio`` above the lowest frame; or three frames one fine step apart have
        their best at an end but the vertex inside (a prediction a little off).
        """
        if max(fine) <= self.p.min_peak_ratio * max(min(fine), _SCORE_FLOOR):
            return None
        i = int(np.argmax(fine))
        if i in (0, len(zs) - 1):
            return self._end_vertex(zs, fine, i)
        triplet = [(zs[k], fine[k]) for k in (i - 1, i, i + 1)]
        if not self._fine_enough(triplet):
            return None
        vertex = fit_log_parabola(triplet, self.p.peak_asymmetry)
        if vertex is None:
            return None
        return min(max(vertex, zs[i - 1]), zs[i + 1])

    def _fine_enough(self, triplet: list[tuple[float, float]]) -> bool:
        gap = max(triplet[1][0] - triplet[0][0], triplet[2][0] - triplet[1][0])
        return gap <= 2.0 * self.p.fine_step_um + 1e-6

    def _end_vertex(self, zs: list[float], ss: list[float], i: int) -> float | None:
        """The peak of a fine triplet whose best frame is at the end but whose vertex lies inside.

        A prediction half a fine step off puts the best frame at the end; on a fine triplet the
        Gaussian's vertex still places the peak to ~0.15 um as long as it lies inside the triplet.
        """
        k = (i - 2, i - 1, i) if i == len(zs) - 1 else (0, 1, 2)
        triplet = [(zs[j], ss[j]) for j in k]
        if max(triplet[1][0] - triplet[0][0], triplet[2][0] - triplet[1][0]) > self.p.fine_step_um + 1e-6:
            return None
        vertex = fit_log_parabola(triplet, self.p.peak_asymmetry)
        margin = _END_MARGIN * self.p.fine_step_um
        if vertex is None or not triplet[0][0] + margin <= vertex <= triplet[2][0] - margin:
            return None
        return vertex

    # -- where to look next -----------------------------------------------------------------------
    def _estimate(self, zs: list[float], ss: list[float]) -> tuple[float, bool] | None:
        """The peak's z from the log-parabola through the best frame and its neighbours (or the three
        end frames when the best is at an end), and whether it lies inside the sampled range.

        None when that parabola is not concave (far tails curve the other way), or when it puts the
        peak further beyond the end than ``max_step_um`` (an extrapolation that long is a guess).
        """
        i = int(np.argmax(ss))
        n = len(zs)
        k = (i - 1, i, i + 1) if 0 < i < n - 1 else ((0, 1, 2) if i == 0 else (n - 3, n - 2, n - 1))
        vertex = fit_log_parabola([(zs[j], ss[j]) for j in k])
        if vertex is None:
            return None
        if 0 < i < n - 1:
            return min(max(vertex, zs[i - 1]), zs[i + 1]), True
        edge, sign = zs[i], (1.0 if i == n - 1 else -1.0)
        beyond = sign * (vertex - edge)
        if beyond > self.p.max_step_um:
            return None
        if beyond <= 0:
            # The end frames curve over inside: the peak is at most a little beyond the end frame.
            return edge + sign * 0.5 * self.p.fine_step_um, False
        return vertex, False

    def _refine(self, zs: list[float], i: int) -> list[float]:
        """Halve each side of the best frame that is wider than two fine steps."""
        f = self.p.fine_step_um
        picks = []
        for j in (i - 1, i + 1):
            if 0 <= j < len(zs) and abs(zs[j] - zs[i]) > 2.0 * f + 1e-6:
                picks.append(zs[i] + math.copysign(min(2.0 * f, 0.5 * abs(zs[j] - zs[i])), zs[j] - zs[i]))
        return picks

    def _beyond(self, zs: list[float], i: int, lo: float, hi: float) -> list[float]:
        """One frame past the best end frame: the peak lies that way."""
        sign = 1.0 if i == len(zs) - 1 else -1.0
        edge = zs[i]
        if (sign > 0 and edge >= hi) or (sign < 0 and edge <= lo):
            return []
        gap = abs(edge - zs[i - 1] if sign > 0 else zs[1] - edge)
        step = min(self.p.max_step_um, max(self.p.fine_step_um, gap * _EXPAND))
        return [min(max(edge + sign * step, lo), hi)]

    def _widen(self, zs: list[float], lo: float, hi: float) -> list[float]:
        """A flat curve says nothing about direction: one look further out on both sides."""
        out = 2.0 * self.p.max_step_um
        new = []
        if zs[0] > lo:
            new.append(max(lo, zs[0] - out))
        if zs[-1] < hi:
            new.append(min(hi, zs[-1] + out))
        return new

    def _is_new(self, z: float, samples: dict[float, tuple[float, float]],
                separation: float = _MIN_SEPARATION) -> bool:
        return all(abs(z - s) >= separation * self.p.fine_step_um for s in samples)

    def _take(self, probe: Callable[[float], Score], samples: dict[float, tuple[float, float]],
              zs: list[float], lo: float, hi: float) -> int:
        # Bottom to top, so a batch costs at most one backlash overshoot.
        taken = 0
        for z in sorted({min(max(z, lo), hi) for z in zs}):
            if self._is_new(z, samples):
                score = probe(z)
                samples[z] = (float(score[0]), float(score[1])) if isinstance(score, tuple) else (
                    float(score), float(score))
                taken += 1
        return taken


class Autofocus:
    """Runs ``PeakSearch`` on the real stage and camera; every frame it takes goes into the curve."""

    def __init__(self, stage: Stage, camera: Camera, params: SearchParams, *, measure: str,
                 downsample: int, z_limits_um: tuple[float, float], move_timeout_s: float,
                 capture_timeout_s: float, coarse_downsample: int = 8) -> None:
        self.stage = stage
        self.camera = camera
        self.search = PeakSearch(params)
        self.params = params
        self.measure = measure
        self.downsample = downsample
        self.coarse_downsample = coarse_downsample
        self.z_limits_um = z_limits_um
        self.move_timeout_s = move_timeout_s
        self.capture_timeout_s = capture_timeout_s

    def focus(self, attempts: list[tuple[float, float, float]]) -> AutofocusResult:
        """Try ``(center_um, step_um, half_range_um)`` searches in turn until one succeeds."""
        start = time.perf_counter()
        curve: list[tuple[float, float]] = []
        outcome = SearchOutcome(attempts[0][0], False, "no search attempted")
        searches = 0
        for center, step, half_range in attempts:
            searches += 1
            lo = max(self.z_limits_um[0], center - half_range)
            hi = min(self.z_limits_um[1], center + half_range)
            outcome = self.search.run(lambda z: self._probe(z, curve), center, step, lo, hi)
            if outcome.success or outcome.reason.startswith(FLAT_REASON):
                # Nothing to focus on (blank glass, no light) is not fixed by searching again.
                break
        reason = "" if outcome.success else f"{outcome.reason} (after {searches} search{'es' if searches > 1 else ''})"
        return AutofocusResult(outcome.z_um, outcome.success, len(curve), time.perf_counter() - start,
                               reason, curve)

    def _probe(self, z_um: float, curve: list[tuple[float, float]]) -> tuple[float, float]:
        self.stage.move_to(z_um=z_um, timeout_s=self.move_timeout_s)
        frame = self.camera.capture(timeout_s=self.capture_timeout_s)
        score = focus.focus_measure(frame.image, self.measure, downsample=self.downsample)
        coarse = focus.focus_measure(frame.image, self.measure, downsample=self.coarse_downsample)
        curve.append((round(z_um, 3), score))
        return score, coarse


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
                          max_frames=f.max_frames, peak_asymmetry=f.peak_asymmetry)
    autofocus = Autofocus(
        stage, camera, params, measure=measure, downsample=f.downsample,
        z_limits_um=(0.0, settings.stage.travel_um[2]), move_timeout_s=settings.stage.move_timeout_s,
        capture_timeout_s=settings.camera.capture_timeout_s, coarse_downsample=f.coarse_downsample,
    )
    focus_map = FocusMap(quadratic_min_points=f.map_quadratic_points, radius_um=f.map_radius_um,
                         outlier_um=f.map_outlier_um)
    return FieldFocuser(autofocus, focus_map, start_z_um=f.start_z_um, first_range_um=f.first_range_um,
                        range_um=f.range_um)

"""Focus map: predicts the in-focus z of the next field from the fields focused so far.

A smear's focus surface is smooth (stage tilt plus a little bow of slide and coverslip), so a low-order
surface through the focused fields predicts the next field to a fraction of the depth of field. The
model grows with the evidence: the nearest field's z for one or two points, a plane from three, a
quadratic once ``quadratic_min_points`` exist. Points are weighted by distance (Gaussian,
``radius_um``) so that on a real, not exactly quadratic slide the fit stays local.

Degenerate geometry is normal here: the first row of a serpentine scan is one line, so nothing is
known about the y slope, and the first field of the next row alone would fix it and every cross term.
Weak zero-mean priors on slopes and curvatures (ridge terms) keep such directions flat until the points
span them, instead of extrapolating a slope fitted to one field.

A misfocused field that slipped through (or a real bump, dirt on the coverslip) must not bend the
surface for its neighbours: points whose residual exceeds ``max(outlier_um, 3 robust sigma)`` are
left out and the surface refitted.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_RCOND = 1e-9
# Weak priors, in the units of the fit: a focus measurement good to ~0.1 um; slide slopes of up to a
# few um/mm are common (stage and slide tilt); curvature of a few um over 10 mm, i.e. ~0.1 um/mm^2.
_Z_NOISE_UM = 0.1
_SLOPE_PRIOR_UM_PER_MM = 20.0
_CURVATURE_PRIOR_UM_PER_MM2 = 0.3
_OUTLIER_ROUNDS = 3
_MIN_POINTS_FOR_OUTLIERS = 5
# MAD to standard deviation for normally distributed residuals.
_MAD_TO_SIGMA = 1.4826


@dataclass(frozen=True)
class Prediction:
    z_um: float
    model: str
    """'nearest', 'plane' or 'quadratic'."""
    points: int
    """Points the model rests on (outliers excluded)."""
    rms_um: float
    """Weighted rms residual of those points: how well the surface explains them (0 for 'nearest')."""


class FocusMap:
    def __init__(self, *, quadratic_min_points: int = 8, radius_um: float = 5000.0,
                 outlier_um: float = 0.5) -> None:
        if quadratic_min_points < 6:
            raise ValueError("a quadratic surface needs at least 6 points")
        if radius_um <= 0 or outlier_um <= 0:
            raise ValueError("radius_um and outlier_um must be positive")
        self.quadratic_min_points = quadratic_min_points
        self.radius_um = radius_um
        self.outlier_um = outlier_um
        self._points: list[tuple[float, float, float]] = []

    def __len__(self) -> int:
        return len(self._points)

    def add(self, x_um: float, y_um: float, z_um: float) -> None:
        if not all(np.isfinite((x_um, y_um, z_um))):
            raise ValueError(f"focus map point must be finite, got {(x_um, y_um, z_um)}")
        self._points.append((float(x_um), float(y_um), float(z_um)))

    def predict(self, x_um: float, y_um: float) -> Prediction | None:
        """Expected focus z at (x_um, y_um), or None while the map is empty."""
        if not self._points:
            return None
        pts = np.asarray(self._points, dtype=np.float64)
        if len(pts) < 3:
            nearest = int(np.argmin(np.hypot(pts[:, 0] - x_um, pts[:, 1] - y_um)))
            return Prediction(float(pts[nearest, 2]), "nearest", len(pts), 0.0)
        model = "quadratic" if len(pts) >= self.quadratic_min_points else "plane"
        weights = np.exp(-((pts[:, 0] - x_um) ** 2 + (pts[:, 1] - y_um) ** 2) / self.radius_um**2)
        inliers = np.ones(len(pts), dtype=bool)
        surface = _fit(pts, weights, inliers, model)
        for _ in range(_OUTLIER_ROUNDS):
            if len(pts) < _MIN_POINTS_FOR_OUTLIERS:
                break
            residuals = pts[:, 2] - surface(pts)
            keep = np.abs(residuals) <= self._outlier_limit(residuals[inliers])
            if keep.sum() < 3 or np.array_equal(keep, inliers):
                break
            inliers = keep
            surface = _fit(pts, weights, inliers, model)
        residuals = pts[inliers, 2] - surface(pts[inliers])
        w = weights[inliers]
        rms = float(np.sqrt(np.sum(w * residuals**2) / max(np.sum(w), 1e-300)))
        z_um = float(surface(np.array([[x_um, y_um, 0.0]]))[0])
        return Prediction(z_um, model, int(inliers.sum()), rms)

    def _outlier_limit(self, residuals: np.ndarray) -> float:
        sigma = _MAD_TO_SIGMA * float(np.median(np.abs(residuals - np.median(residuals))))
        return max(self.outlier_um, 3.0 * sigma)


def _design(pts: np.ndarray, model: str, centre: tuple[float, float]) -> np.ndarray:
    # Millimetres from the points' centroid: the priors below are in physical units, and the
    # constant term is the surface at the centroid.
    u = (pts[:, 0] - centre[0]) / 1000.0
    v = (pts[:, 1] - centre[1]) / 1000.0
    cols = [np.ones_like(u), u, v]
    if model == "quadratic":
        cols += [u * u, u * v, v * v]
    return np.stack(cols, axis=1)


def _fit(pts: np.ndarray, weights: np.ndarray, inliers: np.ndarray, model: str):
    """Weighted least squares with weak priors; returns the surface as a function of N x 2+ points."""
    sel, w = pts[inliers], weights[inliers]
    # Far points have tiny weights; a floor keeps the solve defined when every point is far away.
    w = np.maximum(w, 1e-12)
    centre = (float(np.average(sel[:, 0], weights=w)), float(np.average(sel[:, 1], weights=w)))
    a = _design(sel, model, centre) * (np.sqrt(w) / _Z_NOISE_UM)[:, None]
    b = sel[:, 2] * np.sqrt(w) / _Z_NOISE_UM
    # Priors (zero-mean, sd tau) on every term but the constant. The points of a serpentine scan are
    # nearly collinear at first (one row, then one field of the next row): without a prior the y
    # slope and the cross terms would be fitted to a single field and extrapolated wildly.
    taus = [_SLOPE_PRIOR_UM_PER_MM] * 2 + [_CURVATURE_PRIOR_UM_PER_MM2] * (a.shape[1] - 3)
    prior = np.zeros((len(taus), a.shape[1]))
    for k, tau in enumerate(taus):
        prior[k, k + 1] = 1.0 / tau
    coef, *_ = np.linalg.lstsq(np.vstack([a, prior]), np.concatenate([b, np.zeros(len(taus))]), rcond=_RCOND)

    def surface(query: np.ndarray) -> np.ndarray:
        return _design(query, model, centre) @ coef

    return surface

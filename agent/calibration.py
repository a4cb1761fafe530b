"""Bench calibration of camera against stage: scale, rotation, mirror, backlash, flat-field.

Geometry convention (shared with the virtual camera): a feature ``p`` pixels from the image centre
(x right, y down) is brought to the centre by the stage move ``D = P @ p`` µm, with the 2 x 2
pixel-to-stage matrix ``P = um_per_px * R(rotation) @ F``; R rotates by +rotation_deg in pixel
coordinates and F mirrors x when the image is flipped. After a stage move D, image content moves by
``-inv(P) @ D`` pixels; phase correlation measures that shift and a least-squares fit over many
moves gives P.

Every calibration point is approached from below in both axes (an overshoot first), so backlash does
not enter the scale fit. Backlash is then measured on its own: the same point approached from below
and from above, the difference of the two images being the lost motion.

The flat-field is a white reference: either frames of a blank area averaged, or, when no blank area
is given, the per-pixel median of many fields (cells land in different places, so the median is
mostly background) smoothed to the slowly varying illumination. ``FlatField.apply`` divides it out.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from agent.errors import InputError, OutputError, WbcscopeError
from agent.hardware.camera import Camera
from firmware_interface.stage import Stage

CALIBRATION_FILE = "calibration.json"
FLAT_FIELD_FILE = "calibration_flat.npy"
_CELL_UM = 8.0  # a red cell's diameter: the closing for the median flat-field must bridge it
_FLAT_DOWNSAMPLE = 4  # illumination is smooth: a quarter-resolution reference is plenty and 16x smaller
_MIN_RESPONSE = 0.05  # phase-correlation peaks below this are noise, not a match
# Phase correlation weighs every spatial frequency alike, and near the pixel pitch a microscope image
# is mostly sensor noise (fixed-pattern noise included): correlating at half resolution drops those
# frequencies and keeps the shift precise to about a tenth of a pixel.
_SHIFT_DOWNSAMPLE = 2


class CalibrationError(WbcscopeError, RuntimeError):
    """The measurements do not support a calibration (blank field, moves too large, ...)."""


# ---- image shift ----------------------------------------------------------------------------------
def _grey(image: np.ndarray) -> np.ndarray:
    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
    return grey.astype(np.float32)


def _prepared(grey: np.ndarray) -> np.ndarray:
    h, w = grey.shape[:2]
    small = cv2.resize(grey, (w // _SHIFT_DOWNSAMPLE, h // _SHIFT_DOWNSAMPLE), interpolation=cv2.INTER_AREA)
    # High-pass: uneven illumination moves with the camera, not the slide, and would pull the
    # correlation peak towards zero shift.
    return small - cv2.GaussianBlur(small, (0, 0), max(small.shape) / 40.0)


def _even_dft_size(n: int) -> int:
    for m in range(n - n % 2, 1, -2):
        if cv2.getOptimalDFTSize(m) == m:
            return m
    return n


def _correlate(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float]:
    """Phase correlation of two prepared images; the shift is in full-resolution pixels."""
    # cv2.phaseCorrelate zero-pads to its optimal DFT size and its peak is then off by half a pixel
    # when that size is odd: cut to an even size the DFT needs no padding for.
    h, w = _even_dft_size(a.shape[0]), _even_dft_size(a.shape[1])
    a, b = a[:h, :w], b[:h, :w]
    window = cv2.createHanningWindow((w, h), cv2.CV_32F)
    (dx, dy), response = cv2.phaseCorrelate(a, b, window)
    return float(dx) * _SHIFT_DOWNSAMPLE, float(dy) * _SHIFT_DOWNSAMPLE, float(response)


def measure_shift_px(before: np.ndarray, after: np.ndarray, refinements: int = 4) -> tuple[float, float, float]:
    """(dx, dy, response): how far image content moved from ``before`` to ``after``, in pixels."""
    a, b = _grey(before), _grey(after)
    dx, dy, response = _correlate(_prepared(a), _prepared(b))
    # OpenCV's sub-pixel peak (a centroid) is biased unless the shift is near a whole pixel of the
    # correlated grid: cut out the overlap at the estimated shift, move one part by the remaining
    # fraction, and correlate again; the correction shrinks each time.
    h, w = a.shape
    for _ in range(refinements):
        ix, iy = int(round(dx)), int(round(dy))
        x0, x1 = max(0, -ix), w - max(0, ix)
        y0, y1 = max(0, -iy), h - max(0, iy)
        if x1 - x0 < 64 or y1 - y0 < 64:
            break
        crop_a = a[y0:y1, x0:x1]
        crop_b = b[y0 + iy:y1 + iy, x0 + ix:x1 + ix]
        shift = np.float64([[1, 0, dx - ix], [0, 1, dy - iy]])
        crop_b = cv2.warpAffine(crop_b, shift, (crop_b.shape[1], crop_b.shape[0]),
                                flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REFLECT)
        rx, ry, response = _correlate(_prepared(crop_a), _prepared(crop_b))
        if abs(rx) > 2.0 or abs(ry) > 2.0:
            break  # the crop matched something else: keep the coarse estimate
        dx, dy = dx + rx, dy + ry
        if abs(rx) < 0.01 and abs(ry) < 0.01:
            break
    return dx, dy, response


# ---- results --------------------------------------------------------------------------------------
@dataclass
class Calibration:
    um_per_px: float
    rotation_deg: float
    flipped: bool
    backlash_um: tuple[float, float]
    pixel_to_stage: list[list[float]]
    """P, µm per pixel: stage move that centres a feature p pixels from the image centre is P @ p."""
    residual_um: float
    """RMS misfit of the moves, in µm at the stage."""
    moves: int
    date_utc: str = field(default_factory=lambda: dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))
    camera: str = ""
    flat_field_file: str | None = None
    flat_field_method: str | None = None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["backlash_um"] = list(self.backlash_um)
        return d

    @classmethod
    def from_dict(cls, data: dict) -> "Calibration":
        data = dict(data)
        data["backlash_um"] = tuple(data["backlash_um"])
        return cls(**data)

    def save(self, path: Path) -> None:
        tmp = path.with_name(path.name + ".tmp")
        try:
            tmp.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
            tmp.replace(path)
        except OSError as exc:
            raise OutputError(f"cannot write {path}: {exc.strerror}") from None

    @classmethod
    def load(cls, path: Path) -> "Calibration":
        try:
            return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))
        except FileNotFoundError:
            raise InputError(f"calibration file not found: {path}") from None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise InputError(f"unusable calibration file {path}: {exc}") from None

    def describe(self) -> str:
        lines = [
            f"Image scale: {self.um_per_px:.4f} µm per pixel ({1 / self.um_per_px:.2f} pixels per µm).",
            f"Rotation of the image relative to the stage axes: {self.rotation_deg:+.2f}° (positive = clockwise on "
            "screen)" + (", and the image is mirrored left-right." if self.flipped else "; the image is not mirrored."),
            f"Stage backlash: {self.backlash_um[0]:.2f} µm in X, {self.backlash_um[1]:.2f} µm in Y.",
            f"Fit: {self.moves} moves, residual {self.residual_um:.3f} µm RMS "
            f"({self.residual_um / self.um_per_px:.2f} pixels).",
        ]
        if self.flat_field_file:
            lines.append(f"Flat-field: {self.flat_field_method}; saved as {self.flat_field_file}.")
        else:
            lines.append("Flat-field: none recorded.")
        lines.append(f"Calibrated {self.date_utc}.")
        return "\n".join(lines)


def decompose(p: np.ndarray) -> tuple[float, float, bool]:
    """(um_per_px, rotation_deg, flipped) of a pixel-to-stage matrix P = s R F."""
    flipped = float(np.linalg.det(p)) < 0
    q = p @ np.diag([-1.0, 1.0]) if flipped else p  # F is its own inverse
    # Nearest similarity to q: average the two estimates of cos and sin.
    c = (q[0, 0] + q[1, 1]) / 2.0
    s = (q[1, 0] - q[0, 1]) / 2.0
    return math.hypot(c, s), math.degrees(math.atan2(s, c)), flipped


# ---- flat-field -----------------------------------------------------------------------------------
class FlatField:
    """Divides out uneven illumination: ``apply(image)`` = image * mean(ref) / ref, per channel."""

    def __init__(self, reference_bgr: np.ndarray) -> None:
        ref = np.maximum(reference_bgr.astype(np.float32), 1.0)
        self.reference = ref
        self._gain_small = (ref.reshape(-1, 3).mean(axis=0) / ref).astype(np.float32)
        self._gain_cache: dict[tuple[int, int], np.ndarray] = {}

    def gain(self, width_px: int, height_px: int) -> np.ndarray:
        key = (width_px, height_px)
        if key not in self._gain_cache:
            self._gain_cache.clear()
            self._gain_cache[key] = cv2.resize(self._gain_small, key, interpolation=cv2.INTER_LINEAR)
        return self._gain_cache[key]

    def apply(self, image: np.ndarray) -> np.ndarray:
        """The BGR uint8 image with the illumination made even (saturating at 255)."""
        h, w = image.shape[:2]
        return cv2.multiply(image, self.gain(w, h), dtype=cv2.CV_8U)

    def save(self, path: Path) -> None:
        try:
            np.save(path, self.reference)
        except OSError as exc:
            raise OutputError(f"cannot write {path}: {exc.strerror}") from None

    @classmethod
    def load(cls, path: Path) -> "FlatField":
        try:
            ref = np.load(path)
        except (OSError, ValueError) as exc:
            raise InputError(f"unusable flat-field file {path}: {exc}") from None
        if ref.ndim != 3 or ref.shape[2] != 3:
            raise InputError(f"flat-field file {path} is not an H x W x 3 image")
        return cls(ref)

    @classmethod
    def for_config(cls, config_dir: Path) -> "FlatField | None":
        """The flat-field recorded by ``wbcscope calibrate`` next to a config, or None when there is none."""
        path = Path(config_dir) / CALIBRATION_FILE
        return cls.from_calibration(path) if path.exists() else None

    @classmethod
    def from_calibration(cls, path: Path) -> "FlatField | None":
        """The flat-field a calibration file names, or None when it recorded none."""
        cal = Calibration.load(path)
        return cls.load(Path(path).parent / cal.flat_field_file) if cal.flat_field_file else None


def _reference_from(images: list[np.ndarray], smooth_sigma_px: float, cell_px: float) -> np.ndarray:
    h, w = images[0].shape[:2]
    size = (max(w // _FLAT_DOWNSAMPLE, 1), max(h // _FLAT_DOWNSAMPLE, 1))
    small = [cv2.resize(im, size, interpolation=cv2.INTER_AREA).astype(np.float32) for im in images]
    # Cells are darker than the plasma around them: a grey-level closing wider than a cell leaves each
    # field's background, and the median over fields then drops what a closing could not bridge.
    k = max(int(2 * cell_px / _FLAT_DOWNSAMPLE) | 1, 3)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
    small = [cv2.morphologyEx(im, cv2.MORPH_CLOSE, kernel) for im in small]
    ref = np.median(np.stack(small), axis=0).astype(np.float32) if len(small) > 2 else np.mean(small, axis=0)
    if smooth_sigma_px > 0:
        ref = cv2.GaussianBlur(ref, (0, 0), smooth_sigma_px / _FLAT_DOWNSAMPLE)
    return ref


# ---- the procedure --------------------------------------------------------------------------------
@dataclass
class Bench:
    """Stage and camera with the waits a calibration needs."""

    stage: Stage
    camera: Camera
    overshoot_um: float = 100.0
    """Every point is approached from (x - overshoot, y - overshoot); must exceed the backlash."""
    settle_s: float = 0.0
    capture_timeout_s: float = 2.0
    move_timeout_s: float = 60.0
    log: Callable[[str], None] = lambda _msg: None

    def move(self, x_um: float, y_um: float) -> None:
        self.stage.move_to(x_um=x_um, y_um=y_um, wait=True, timeout_s=self.move_timeout_s)

    def approach_from_below(self, x_um: float, y_um: float) -> tuple[float, float]:
        """Arrive at (x, y) moving in +x and +y; returns where the stage says it is (it may round)."""
        self.move(x_um - self.overshoot_um, y_um - self.overshoot_um)
        self.turnaround_frame()
        self.move(x_um, y_um)
        pos = self.stage.position()
        return pos.x_um, pos.y_um

    def turnaround_frame(self) -> None:
        """One frame at a reversal point, thrown away.

        The virtual camera sees the stage only when it captures, so it can apply lost motion only to
        reversals it has seen; on hardware the frame costs one frame time and checks the camera streams.
        """
        self.frame()

    def frame(self) -> np.ndarray:
        # Only a frame exposed after the stage has come to rest counts.
        not_before_s = time.monotonic() + self.settle_s
        return self.camera.capture(self.capture_timeout_s + self.settle_s, not_before_s=not_before_s).image


def focus_coarsely(bench: Bench, centre_z_um: float, range_um: float, step_um: float) -> float:
    """Sweep z upwards through centre +- range, go to the sharpest step; returns that z.

    Coarse on purpose: phase correlation needs detail, not the best plane.
    """
    from agent.focus import DEFAULT_MEASURE, focus_measure

    n = int(2 * range_um / step_um) + 1
    zs = [centre_z_um - range_um + i * step_um for i in range(n)]
    # Start below the range so every step is approached from below, as the scan does.
    bench.stage.move_to(z_um=zs[0] - bench.overshoot_um / 10.0, wait=True, timeout_s=bench.move_timeout_s)
    scores = []
    for z in zs:
        bench.stage.move_to(z_um=z, wait=True, timeout_s=bench.move_timeout_s)
        scores.append(focus_measure(bench.frame(), DEFAULT_MEASURE, downsample=4))
    best = zs[int(np.argmax(scores))]
    bench.stage.move_to(z_um=best - bench.overshoot_um / 10.0, wait=True, timeout_s=bench.move_timeout_s)
    bench.stage.move_to(z_um=best, wait=True, timeout_s=bench.move_timeout_s)
    return best


def fit_pixel_to_stage(stage_moves_um: np.ndarray, shifts_px: np.ndarray) -> tuple[np.ndarray, float]:
    """Least-squares P from moves D_i and content shifts m_i (D = -P m); returns (P, rms residual µm)."""
    pt, *_ = np.linalg.lstsq(-shifts_px, stage_moves_um, rcond=None)
    p = pt.T
    residual = stage_moves_um + shifts_px @ p.T
    return p, float(np.sqrt(np.mean(np.sum(residual**2, axis=1))))


def measure_geometry(bench: Bench, centre_um: tuple[float, float], guess_um_per_px: float,
                     step_fraction: float = 0.2) -> tuple[np.ndarray, float, int]:
    """Fit P from a cross and diagonals of moves around ``centre_um``; returns (P, residual µm, moves)."""
    w, h = bench.camera.resolution_px
    x0, y0 = bench.approach_from_below(*centre_um)
    reference = bench.frame()
    # A small first move pins the scale down well enough to size the real moves safely.
    probe_um = 0.08 * min(w, h) * guess_um_per_px
    moves, shifts = [], []
    for dx, dy in ((probe_um, 0.0), (0.0, probe_um)):
        x, y = bench.approach_from_below(x0 + dx, y0 + dy)
        mx, my, response = measure_shift_px(reference, bench.frame())
        if response < _MIN_RESPONSE:
            raise CalibrationError("no image match on a small move: is the slide in focus and not blank?")
        moves.append((x - x0, y - y0))
        shifts.append((mx, my))
    scale = float(np.mean([math.hypot(*d) / math.hypot(*s) for d, s in zip(moves, shifts)]))
    step_um = step_fraction * min(w, h) * scale
    bench.log(f"rough scale {scale:.4f} µm/px; moving in steps of {step_um:.1f} µm")
    pattern = [(k, 0) for k in (-2, -1, 1, 2)] + [(0, k) for k in (-2, -1, 1, 2)]
    pattern += [(1, 1), (-1, 1), (1, -1), (-1, -1)]
    for i, j in pattern:
        x, y = bench.approach_from_below(x0 + i * step_um, y0 + j * step_um)
        mx, my, response = measure_shift_px(reference, bench.frame())
        if response < _MIN_RESPONSE:
            bench.log(f"move ({x - x0:+.1f}, {y - y0:+.1f}) µm: no reliable match, left out")
            continue
        moves.append((x - x0, y - y0))
        shifts.append((mx, my))
    if len(moves) < 6:
        raise CalibrationError(f"only {len(moves)} moves could be matched; need 6")
    p, residual_um = fit_pixel_to_stage(np.asarray(moves), np.asarray(shifts))
    return p, residual_um, len(moves)


def measure_backlash(bench: Bench, centre_um: tuple[float, float], p: np.ndarray,
                     repeats: int = 3) -> tuple[float, float]:
    """Lost motion per axis: the point approached from below vs from above, seen by the camera."""
    x0, y0 = centre_um
    result = []
    for axis in (0, 1):
        values = []
        for _ in range(repeats):
            bench.approach_from_below(x0, y0)
            below = bench.frame()
            over = [x0, y0]
            over[axis] += bench.overshoot_um
            bench.move(*over)
            bench.turnaround_frame()
            bench.move(x0, y0)
            above = bench.frame()
            mx, my, _ = measure_shift_px(below, above)
            # Stage-frame displacement of the slide between the two arrivals (D = -P m).
            values.append(float(-(p @ np.array([mx, my]))[axis]))
        result.append(float(np.median(values)))
    return result[0], result[1]


def record_flat_field(bench: Bench, *, blank_um: tuple[float, float] | None, centre_um: tuple[float, float],
                      field_um: float, fields: int = 15, frames: int = 8,
                      um_per_px: float = 0.11) -> tuple[FlatField, str]:
    """A white reference and the words that say how it was made."""
    if blank_um is not None:
        bench.approach_from_below(*blank_um)
        images = [bench.frame() for _ in range(frames)]
        ref = np.mean([cv2.resize(im, (im.shape[1] // _FLAT_DOWNSAMPLE, im.shape[0] // _FLAT_DOWNSAMPLE),
                                  interpolation=cv2.INTER_AREA).astype(np.float32) for im in images], axis=0)
        ref = cv2.GaussianBlur(ref, (0, 0), 1.0)
        return FlatField(ref), (f"mean of {frames} frames of the blank area at "
                                f"({blank_um[0]:.0f}, {blank_um[1]:.0f}) µm")
    images = []
    side = math.ceil(math.sqrt(fields))
    x0, y0 = centre_um
    for k in range(fields):
        # Fields a little more than one field apart: every pixel sees different cells each time.
        i, j = k % side, k // side
        bench.approach_from_below(x0 + (i - side / 2) * 1.3 * field_um, y0 + (j - side / 2) * 1.3 * field_um)
        images.append(bench.frame())
    h, w = images[0].shape[:2]
    ref = _reference_from(images, smooth_sigma_px=min(w, h) / 20.0, cell_px=_CELL_UM / um_per_px)
    return FlatField(ref), (f"median of {fields} fields around ({x0:.0f}, {y0:.0f}) µm, cells removed by a "
                            "grey-level closing, smoothed (no blank area was given)")


def calibrate(bench: Bench, *, centre_um: tuple[float, float], guess_um_per_px: float,
              out_dir: Path | None = None, blank_um: tuple[float, float] | None = None,
              flat_fields: int = 15, backlash_repeats: int = 3, flat_field: bool = True,
              camera_name: str = "") -> Calibration:
    """The whole bench calibration; written to ``out_dir/calibration.json`` when ``out_dir`` is given."""
    bench.log("measuring scale and rotation ...")
    p, residual_um, moves = measure_geometry(bench, centre_um, guess_um_per_px)
    um_per_px, rotation_deg, flipped = decompose(p)
    bench.log("measuring backlash ...")
    backlash = measure_backlash(bench, centre_um, p, repeats=backlash_repeats)
    cal = Calibration(um_per_px=um_per_px, rotation_deg=rotation_deg, flipped=flipped, backlash_um=backlash,
                      pixel_to_stage=p.tolist(), residual_um=residual_um, moves=moves, camera=camera_name)
    if flat_field:
        bench.log("recording the flat-field ...")
        w, h = bench.camera.resolution_px
        flat, method = record_flat_field(bench, blank_um=blank_um, centre_um=centre_um,
                                         field_um=max(w, h) * um_per_px, fields=flat_fields, um_per_px=um_per_px)
        cal.flat_field_method = method
        if out_dir is not None:
            flat.save(Path(out_dir) / FLAT_FIELD_FILE)
            cal.flat_field_file = FLAT_FIELD_FILE
    bench.approach_from_below(*centre_um)
    if out_dir is not None:
        cal.save(Path(out_dir) / CALIBRATION_FILE)
    return cal

"""A procedural, deterministic stained blood smear for the virtual microscope.

The slide is rendered in transmittance (1 = clear plasma) and multiplied by the plasma colour at the
end, so overlapping red cells darken each other the way absorbing layers do (Beer-Lambert). White
cells are real CellaVision cut-outs from the bundled atlas (see ``agent/assets/slide/ATTRIBUTION.md``);
red cells and platelets are drawn from small precomputed sprite banks.

Determinism without state: every object belongs to one cell of a fixed grid on the slide (red-cell
lattice 8 um, platelet grid 25 um, white-cell grid 60 um) and all of its random numbers come from a
counter-based hash of (seed, stream, cell index). Any field therefore renders identically every time,
and two fields that overlap agree pixel for pixel in the overlap when their centres differ by a whole
number of pixels (objects sit on one global pixel grid of each scale).

Slide coordinates: x, y in um from the slide's corner; the stage centres the field on (x_um, y_um).
Illumination falloff belongs to the optics (it moves with the camera, not the slide), see optics.py.
"""

from __future__ import annotations

import json
import math
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

ASSETS_DIR = Path(__file__).resolve().parents[1] / "assets" / "slide"

# Relative frequencies of pasted white cells: a normal adult differential, plus a few immature
# granulocytes and nucleated red cells so classifiers see the rare classes now and then.
CLASS_WEIGHTS = {
    "neutrophil": 0.55,
    "lymphocyte": 0.28,
    "monocyte": 0.07,
    "eosinophil": 0.04,
    "basophil": 0.015,
    "ig": 0.03,
    "erythroblast": 0.015,
}

# Colours measured on a real May-Gruenwald-Giemsa field at 0.11 um/px (miLab 0152, plane 005):
# plasma ~ (249, 248, 251) BGR at the brightest spot, red cells ~ (145, 138, 183) on average.
PLASMA_BGR = (246.0, 244.0, 248.0)
RBC_OD_BGR = (0.50, 0.56, 0.28)  # optical density of a red cell's rim; pallor lowers the centre
PLATELET_OD_BGR = (0.75, 1.05, 0.60)

_RBC_STREAM, _PLT_STREAM, _WBC_STREAM = 1, 2, 3
_RBC_BANK_SIZE = 48
_PLT_BANK_SIZE = 16
_WBC_CELL_UM = 60.0
_PLT_CELL_UM = 25.0
_RELAX_PASSES = 4
_MASK_LEVEL = 0.5  # alpha above which a white-cell pixel counts as cell for the truth boxes


@dataclass(frozen=True)
class SlideSettings:
    seed: int = 1
    width_um: float = 20000.0
    height_um: float = 20000.0
    z_focus_um: float = 500.0
    """In-focus stage z at the slide centre."""
    tilt_x_um_per_mm: float = 1.0
    tilt_y_um_per_mm: float = 0.0
    curvature_um: float = 2.0
    """Paraboloid sag (surface rises) between the centre and curvature_span_mm / 2 away from it."""
    curvature_span_mm: float = 10.0
    wbc_per_mm2: float = 50.0
    """50/mm2 puts on average 1.4 white cells in a 211 x 132 um field; about a quarter are empty."""
    rbc_pitch_um: float = 8.0
    rbc_diameter_um: float = 7.5
    rbc_missing_fraction: float = 0.16
    """Mean share of empty red-cell lattice sites: a good monolayer shows plasma between cells."""
    platelets_per_mm2: float = 450.0
    assets_dir: Path = field(default=ASSETS_DIR)


@dataclass(frozen=True)
class TruthCell:
    box: tuple[int, int, int, int]
    """(x, y, w, h) in field pixels: tight box of the pasted cell mask, clipped to the frame."""
    label: str
    fully_inside: bool


@dataclass(frozen=True)
class FieldTruth:
    cells: list[TruthCell]
    z0_um: float
    """In-focus z at the field centre."""


@dataclass(frozen=True)
class _Wbc:
    key: tuple[int, int]
    x_um: float
    y_um: float
    sprite: int
    angle_deg: float
    flip: bool
    scale: float
    stain_gamma: float
    radius_um: float


def _uniform(seed: int, stream: int, i: np.ndarray, j: np.ndarray, k: int) -> np.ndarray:
    """Counter-based uniform [0, 1) numbers: a splitmix64 finaliser over the packed indices."""
    i64 = np.asarray(i, np.int64).astype(np.uint64)
    j64 = np.asarray(j, np.int64).astype(np.uint64)
    x = (
        np.full(i64.shape, seed & 0xFFFFFFFF, np.uint64) * np.uint64(0x9E3779B97F4A7C15)
        ^ i64 * np.uint64(0xC2B2AE3D27D4EB4F)
        ^ j64 * np.uint64(0x165667B19E3779F9)
        ^ np.full(i64.shape, (stream << 16) + k, np.uint64) * np.uint64(0x27D4EB2F165667C5)
    )
    x = np.atleast_1d(x)
    x ^= x >> np.uint64(30)
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(27)
    x *= np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(31)
    return (x >> np.uint64(11)).astype(np.float64) * (1.0 / 9007199254740992.0)


def _normal(seed: int, stream: int, i: np.ndarray, j: np.ndarray, k: int) -> np.ndarray:
    u1 = np.maximum(_uniform(seed, stream, i, j, k), 1e-12)
    u2 = _uniform(seed, stream, i, j, k + 1)
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)


class VirtualSlide:
    """Renders in-focus fields and their ground truth. Loads its assets lazily, on first render."""

    def __init__(self, settings: SlideSettings | None = None) -> None:
        self.settings = settings or SlideSettings()
        self._atlas: tuple[list[np.ndarray], list[np.ndarray], list[str], list[float]] | None = None
        self._class_sprites: dict[str, list[int]] = {}
        self._banks: dict[float, tuple[list[np.ndarray], list[np.ndarray]]] = {}
        self._wbc_cache: OrderedDict[tuple, tuple[np.ndarray, np.ndarray, tuple[int, int, int, int]]] = (
            OrderedDict()
        )
        # Low-frequency stain/thickness variation across the slide (fixed to the slide, not the field).
        rng = np.random.default_rng([self.settings.seed, 7])
        self._waves = [
            (rng.uniform(0, 2 * np.pi), 2 * np.pi / rng.uniform(150, 900), rng.uniform(0, np.pi), amp)
            for amp in (0.012, 0.008, 0.006)
        ]

    # ---- focus surface ------------------------------------------------------------------------
    def focus_z_um(self, x_um: float, y_um: float) -> float:
        s = self.settings
        dx_mm = (x_um - s.width_um / 2) / 1000.0
        dy_mm = (y_um - s.height_um / 2) / 1000.0
        half_span_mm = s.curvature_span_mm / 2.0
        sag = s.curvature_um * (dx_mm * dx_mm + dy_mm * dy_mm) / (half_span_mm * half_span_mm)
        return s.z_focus_um + s.tilt_x_um_per_mm * dx_mm + s.tilt_y_um_per_mm * dy_mm + sag

    # ---- public rendering -----------------------------------------------------------------------
    def render(self, x_um: float, y_um: float, width_px: int, height_px: int, um_per_px: float) -> np.ndarray:
        """In-focus BGR uint8 field centred on slide point (x_um, y_um)."""
        ox, oy = self._origin_px(x_um, y_um, width_px, height_px, um_per_px)
        light = self._plasma_light(ox, oy, width_px, height_px, um_per_px)
        # Start from the lit plasma and multiply absorbers in: saves two full-frame passes.
        canvas = light[:, :, None] * np.asarray(PLASMA_BGR, np.float32)
        wbcs = self._wbcs_near(ox, oy, width_px, height_px, um_per_px)
        self._draw_rbcs(canvas, ox, oy, um_per_px, wbcs)
        self._draw_platelets(canvas, ox, oy, um_per_px)
        for w in wbcs:
            self._draw_wbc(canvas, light, w, ox, oy, um_per_px)
        return cv2.convertScaleAbs(canvas)  # rounds and saturates to uint8; values are never negative

    def truth(self, x_um: float, y_um: float, width_px: int, height_px: int, um_per_px: float) -> FieldTruth:
        ox, oy = self._origin_px(x_um, y_um, width_px, height_px, um_per_px)
        cells = []
        for w in self._wbcs_near(ox, oy, width_px, height_px, um_per_px):
            _, _, (bx, by, bw, bh) = self._wbc_sprite(w, um_per_px)
            x0, y0 = self._wbc_topleft(w, ox, oy, um_per_px)
            gx0, gy0 = x0 + bx, y0 + by
            gx1, gy1 = gx0 + bw, gy0 + bh
            cx0, cy0 = max(gx0, 0), max(gy0, 0)
            cx1, cy1 = min(gx1, width_px), min(gy1, height_px)
            if cx1 <= cx0 or cy1 <= cy0:
                continue
            inside = gx0 >= 0 and gy0 >= 0 and gx1 <= width_px and gy1 <= height_px
            label = self._load_atlas()[2][w.sprite]
            cells.append(TruthCell((cx0, cy0, cx1 - cx0, cy1 - cy0), label, inside))
        return FieldTruth(cells, self.focus_z_um(x_um, y_um))

    # ---- geometry -------------------------------------------------------------------------------
    @staticmethod
    def _origin_px(x_um: float, y_um: float, width_px: int, height_px: int, um_per_px: float) -> tuple[int, int]:
        """Global pixel index of the field's top-left pixel on this scale's slide-wide pixel grid."""
        return (
            int(math.floor(x_um / um_per_px - width_px / 2 + 0.5)),
            int(math.floor(y_um / um_per_px - height_px / 2 + 0.5)),
        )

    def _plasma_light(self, ox: int, oy: int, width_px: int, height_px: int, um_per_px: float) -> np.ndarray:
        xs = (ox + np.arange(width_px, dtype=np.float64)) * um_per_px
        ys = (oy + np.arange(height_px, dtype=np.float64)) * um_per_px
        # Separable products of slow sinusoids: one outer product each, cheap and slide-fixed.
        light = np.ones((height_px, width_px), np.float32)
        for phase, k, theta, amp in self._waves:
            fx = (amp * np.sin(k * np.cos(theta) * xs + phase)).astype(np.float32)
            gy = np.cos(k * np.sin(theta) * ys + theta).astype(np.float32)
            light += gy[:, None] * fx[None, :]
        return light

    # ---- red cells ------------------------------------------------------------------------------
    def _rbc_positions(self, ox: int, oy: int, width_px: int, height_px: int, um_per_px: float) -> tuple:
        s = self.settings
        pitch = s.rbc_pitch_um
        margin_um = s.rbc_diameter_um * 1.2 + (_RELAX_PASSES + 1) * pitch
        x0_um, y0_um = ox * um_per_px - margin_um, oy * um_per_px - margin_um
        x1_um, y1_um = (ox + width_px) * um_per_px + margin_um, (oy + height_px) * um_per_px + margin_um
        ii = np.arange(math.floor(x0_um / pitch), math.ceil(x1_um / pitch) + 1)
        row_um = pitch * 0.9  # between square (1.0) and hexagonal (0.866) row spacing
        jj = np.arange(math.floor(y0_um / row_um), math.ceil(y1_um / row_um) + 1)
        gi, gj = np.meshgrid(ii, jj)
        seed = s.seed
        # Alternate rows shift by half a pitch: a hexagonal-ish base packs like a real monolayer.
        x = (gi + 0.5 + 0.5 * (gj % 2)) * pitch + 0.17 * pitch * _normal(seed, _RBC_STREAM, gi, gj, 0).reshape(gi.shape)
        y = (gj + 0.5) * row_um + 0.17 * pitch * _normal(seed, _RBC_STREAM, gi, gj, 2).reshape(gi.shape)
        variant = (_uniform(seed, _RBC_STREAM, gi, gj, 4) * _RBC_BANK_SIZE).astype(np.int64).reshape(gi.shape)
        # Slide-fixed patches where the smear is thinner or thicker.
        patch = np.sin(x / 97.0 + 1.3 * seed) * np.cos(y / 131.0) + 0.6 * np.sin((x + y) / 53.0)
        p_missing = np.clip(s.rbc_missing_fraction * (1.0 + 0.6 * patch), 0.02, 0.7)
        present = _uniform(seed, _RBC_STREAM, gi, gj, 5).reshape(gi.shape) >= p_missing
        # Relaxation passes against the 8 lattice neighbours push apart cells that would overlap a lot;
        # each pass only looks one lattice step away, so the result stays field-independent.
        min_dist = 1.0 * s.rbc_diameter_um
        for _ in range(_RELAX_PASSES):
            dx_tot = np.zeros_like(x)
            dy_tot = np.zeros_like(y)
            for di, dj in ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)):
                nx = np.roll(x, (dj, di), axis=(0, 1))
                ny = np.roll(y, (dj, di), axis=(0, 1))
                npres = np.roll(present, (dj, di), axis=(0, 1))
                dx, dy = x - nx, y - ny
                d = np.sqrt(dx * dx + dy * dy) + 1e-6
                push = np.where(npres & (d < min_dist), 0.5 * (min_dist - d) / d, 0.0)
                dx_tot += push * dx
                dy_tot += push * dy
            x, y = x + dx_tot, y + dy_tot
        r = _RELAX_PASSES  # the outer rings saw np.roll's wrapped-around neighbours
        inner = (slice(r, -r), slice(r, -r))
        return x[inner], y[inner], variant[inner], present[inner]

    def _draw_rbcs(self, canvas: np.ndarray, ox: int, oy: int, um_per_px: float, wbcs: list[_Wbc]) -> None:
        h, w = canvas.shape[:2]
        x, y, variant, present = self._rbc_positions(ox, oy, w, h, um_per_px)
        for c in wbcs:
            # Red cells are pushed aside by a white cell in a smear; those near its centre vanish.
            d = np.hypot(x - c.x_um, y - c.y_um)
            present &= d > c.radius_um * 0.8 + self.settings.rbc_diameter_um * 0.25
        sprites, _ = self._banks_for(um_per_px)
        gx = np.floor(x[present] / um_per_px + 0.5).astype(np.int64) - ox
        gy = np.floor(y[present] / um_per_px + 0.5).astype(np.int64) - oy
        for px, py, v in zip(gx.tolist(), gy.tolist(), variant[present].tolist()):
            _multiply_at(canvas, sprites[v], px, py)

    # ---- platelets ------------------------------------------------------------------------------
    def _draw_platelets(self, canvas: np.ndarray, ox: int, oy: int, um_per_px: float) -> None:
        s = self.settings
        h, w = canvas.shape[:2]
        cell = _PLT_CELL_UM
        ii = np.arange(math.floor(ox * um_per_px / cell) - 1, math.ceil((ox + w) * um_per_px / cell) + 1)
        jj = np.arange(math.floor(oy * um_per_px / cell) - 1, math.ceil((oy + h) * um_per_px / cell) + 1)
        gi, gj = (a.ravel() for a in np.meshgrid(ii, jj))
        p = min(s.platelets_per_mm2 * (cell / 1000.0) ** 2, 1.0)
        keep = _uniform(s.seed, _PLT_STREAM, gi, gj, 0) < p
        gi, gj = gi[keep], gj[keep]
        x = (gi + _uniform(s.seed, _PLT_STREAM, gi, gj, 1)) * cell
        y = (gj + _uniform(s.seed, _PLT_STREAM, gi, gj, 2)) * cell
        variant = (_uniform(s.seed, _PLT_STREAM, gi, gj, 3) * _PLT_BANK_SIZE).astype(np.int64)
        _, bank = self._banks_for(um_per_px)
        gx = np.floor(x / um_per_px + 0.5).astype(np.int64) - ox
        gy = np.floor(y / um_per_px + 0.5).astype(np.int64) - oy
        for px, py, v in zip(gx.tolist(), gy.tolist(), variant.tolist()):
            _multiply_at(canvas, bank[v], px, py)

    def _banks_for(self, um_per_px: float) -> tuple[list[np.ndarray], list[np.ndarray]]:
        key = round(um_per_px, 6)
        if key not in self._banks:
            rng = np.random.default_rng([self.settings.seed, 11])
            rbc = [_rbc_sprite(rng, self.settings.rbc_diameter_um, um_per_px) for _ in range(_RBC_BANK_SIZE)]
            plt = [_platelet_sprite(rng, um_per_px) for _ in range(_PLT_BANK_SIZE)]
            if len(self._banks) >= 4:
                self._banks.pop(next(iter(self._banks)))
            self._banks[key] = (rbc, plt)
        return self._banks[key]

    # ---- white cells ----------------------------------------------------------------------------
    def _load_atlas(self) -> tuple[list[np.ndarray], list[np.ndarray], list[str], list[float]]:
        if self._atlas is None:
            folder = Path(self.settings.assets_dir)
            meta = json.loads((folder / "wbc_sprites.json").read_text(encoding="utf-8"))
            colour = cv2.imread(str(folder / meta["colour"]), cv2.IMREAD_COLOR)
            alpha = cv2.imread(str(folder / meta["alpha"]), cv2.IMREAD_GRAYSCALE)
            if colour is None or alpha is None:
                raise FileNotFoundError(f"virtual-slide sprite atlas missing or unreadable in {folder}")
            colours, alphas, labels, radii = [], [], [], []
            for i, sp in enumerate(meta["sprites"]):
                x, y, w, h = sp["box"]
                a = alpha[y : y + h, x : x + w]
                ys, xs = np.nonzero(a >= 128)
                radii.append(float(np.hypot(xs - w / 2, ys - h / 2).max()) * meta["um_per_px"])
                colours.append(colour[y : y + h, x : x + w])
                alphas.append(a)
                labels.append(sp["label"])
                self._class_sprites.setdefault(sp["label"], []).append(i)
            self._atlas = (colours, alphas, labels, radii)
            self._atlas_um_per_px = float(meta["um_per_px"])
        return self._atlas

    def _wbcs_near(self, ox: int, oy: int, width_px: int, height_px: int, um_per_px: float) -> list[_Wbc]:
        s = self.settings
        _, _, _, radii = self._load_atlas()
        classes = [c for c in CLASS_WEIGHTS if c in self._class_sprites]
        cum = np.cumsum([CLASS_WEIGHTS[c] for c in classes])
        cum /= cum[-1]
        cell = _WBC_CELL_UM
        margin = max(radii) * 1.1  # keeps any cell inside its grid square, so no two ever overlap
        p = min(s.wbc_per_mm2 * (cell / 1000.0) ** 2, 1.0)
        ii = np.arange(math.floor(ox * um_per_px / cell) - 1, math.ceil((ox + width_px) * um_per_px / cell) + 1)
        jj = np.arange(math.floor(oy * um_per_px / cell) - 1, math.ceil((oy + height_px) * um_per_px / cell) + 1)
        gi, gj = (a.ravel() for a in np.meshgrid(ii, jj))
        u = [_uniform(s.seed, _WBC_STREAM, gi, gj, k) for k in range(8)]
        out = []
        for n in np.nonzero(u[0] < p)[0]:
            cls = classes[int(np.searchsorted(cum, u[3][n], side="right"))]
            pool = self._class_sprites[cls]
            sprite = pool[min(int(u[4][n] * len(pool)), len(pool) - 1)]
            scale = 0.95 + 0.1 * float(u[7][n])
            out.append(
                _Wbc(
                    key=(int(gi[n]), int(gj[n])),
                    x_um=(gi[n] * cell) + margin + u[1][n] * (cell - 2 * margin),
                    y_um=(gj[n] * cell) + margin + u[2][n] * (cell - 2 * margin),
                    sprite=sprite,
                    angle_deg=360.0 * float(u[5][n]),
                    flip=bool(u[6][n] < 0.5),
                    scale=scale,
                    stain_gamma=0.9 + 0.2 * float(u[7][n] * 7 % 1.0),
                    radius_um=radii[sprite] * scale,
                )
            )
        return out

    def _wbc_sprite(self, w: _Wbc, um_per_px: float) -> tuple[np.ndarray, np.ndarray, tuple[int, int, int, int]]:
        """(transmittance HxWx3 float32, alpha HxWx1 float32, tight mask box) for one placed cell."""
        key = (w.key, w.sprite, round(um_per_px, 6))
        hit = self._wbc_cache.get(key)
        if hit is not None:
            self._wbc_cache.move_to_end(key)
            return hit
        colours, alphas, _, _ = self._load_atlas()
        colour, alpha = colours[w.sprite], alphas[w.sprite]
        if w.flip:
            colour, alpha = colour[:, ::-1], alpha[:, ::-1]
        f = self._atlas_um_per_px / um_per_px * w.scale
        h, wd = colour.shape[:2]
        side = int(math.ceil(math.hypot(h, wd) * f)) + 4
        m = cv2.getRotationMatrix2D((wd / 2, h / 2), w.angle_deg, f)
        m[0, 2] += side / 2 - wd / 2
        m[1, 2] += side / 2 - h / 2
        col = cv2.warpAffine(colour, m, (side, side), flags=cv2.INTER_LINEAR, borderValue=(255, 255, 255))
        alp = cv2.warpAffine(alpha, m, (side, side), flags=cv2.INTER_LINEAR, borderValue=0)
        trans = np.power(col.astype(np.float32) * (1 / 255.0), w.stain_gamma)
        a = alp.astype(np.float32)[:, :, None] * (1 / 255.0)
        ys, xs = np.nonzero(alp >= int(255 * _MASK_LEVEL))
        box = (int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1))
        self._wbc_cache[key] = (trans, a, box)
        if len(self._wbc_cache) > 256:
            self._wbc_cache.popitem(last=False)
        return trans, a, box

    def _wbc_topleft(self, w: _Wbc, ox: int, oy: int, um_per_px: float) -> tuple[int, int]:
        """Field pixel of the top-left corner of the cell's (square, rotated) sprite."""
        side = self._wbc_sprite(w, um_per_px)[1].shape[0]
        cx = int(math.floor(w.x_um / um_per_px + 0.5)) - ox
        cy = int(math.floor(w.y_um / um_per_px + 0.5)) - oy
        return cx - side // 2, cy - side // 2

    def _draw_wbc(self, canvas: np.ndarray, light: np.ndarray, w: _Wbc, ox: int, oy: int, um_per_px: float) -> None:
        trans, a, _ = self._wbc_sprite(w, um_per_px)
        x0, y0 = self._wbc_topleft(w, ox, oy, um_per_px)
        sh, sw = a.shape[:2]
        h, wd = canvas.shape[:2]
        cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x0 + sw, wd), min(y0 + sh, h)
        if cx1 <= cx0 or cy1 <= cy0:
            return
        sub = canvas[cy0:cy1, cx0:cx1]
        aa = a[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0]
        tt = trans[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0]
        lit = tt * light[cy0:cy1, cx0:cx1, None] * np.asarray(PLASMA_BGR, np.float32)
        sub += aa * (lit - sub)


def _multiply_at(canvas: np.ndarray, sprite: np.ndarray, cx: int, cy: int) -> None:
    """canvas *= sprite, with the sprite centred on pixel (cx, cy) and clipped to the canvas."""
    sh, sw = sprite.shape[:2]
    x0, y0 = cx - sw // 2, cy - sh // 2
    h, w = canvas.shape[:2]
    cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x0 + sw, w), min(y0 + sh, h)
    if cx1 <= cx0 or cy1 <= cy0:
        return
    canvas[cy0:cy1, cx0:cx1] *= sprite[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0]


def _rbc_sprite(rng: np.random.Generator, diameter_um: float, um_per_px: float) -> np.ndarray:
    """Transmittance (HxWx3 float32, 1 outside) of one red cell seen from above."""
    d_um = float(np.clip(rng.normal(diameter_um, 0.45), diameter_um - 1.2, diameter_um + 1.3))
    elong = 1.0 + abs(rng.normal(0.0, 0.05)) + (0.18 * rng.random() if rng.random() < 0.1 else 0.0)
    angle = rng.uniform(0, np.pi)
    pallor = rng.uniform(0.2, 0.45)
    pallor_r = rng.uniform(0.3, 0.5)
    od_scale = rng.normal(1.0, 0.05)
    tint = np.asarray(RBC_OD_BGR) * od_scale * (1.0 + rng.normal(0.0, 0.03, 3))
    r_px = d_um / 2.0 / um_per_px
    half = int(math.ceil(r_px * elong)) + 2
    yy, xx = np.mgrid[-half : half + 1, -half : half + 1].astype(np.float32)
    ca, sa = math.cos(angle), math.sin(angle)
    u = (xx * ca + yy * sa) / (r_px * elong)
    v = (-xx * sa + yy * ca) / r_px
    rho = np.sqrt(u * u + v * v)
    edge = np.clip((1.0 - rho) * r_px + 0.5, 0.0, 1.0)  # one-pixel anti-aliased outline
    # Biconcave disc: thick rim, thin centre (the central pallor), and a slightly darker outline
    # where the membrane bends away from the optical axis.
    thickness = 1.0 - pallor * np.exp(-((rho / pallor_r) ** 2)) + 0.5 * np.exp(-(((rho - 0.95) / 0.04) ** 2))
    od = (thickness * edge)[:, :, None] * tint.astype(np.float32)[None, None, :]
    # Just outside the membrane the cell refracts light outward: a faint bright halo (T > 1).
    od -= (0.04 * np.exp(-(((rho - 1.06) / 0.05) ** 2)) * (1.0 - edge))[:, :, None]
    return np.exp(-od).astype(np.float32)


def _platelet_sprite(rng: np.random.Generator, um_per_px: float) -> np.ndarray:
    """Transmittance of one platelet: a pale lilac body with a few dark purple granules."""
    d_um = rng.uniform(1.8, 3.2)
    r_px = d_um / 2.0 / um_per_px
    half = int(math.ceil(r_px * 1.6)) + 2
    yy, xx = np.mgrid[-half : half + 1, -half : half + 1].astype(np.float32)
    body = np.zeros_like(xx)
    for _ in range(3):
        cx, cy = rng.normal(0, r_px * 0.25, 2)
        sx, sy = r_px * rng.uniform(0.6, 0.9, 2)
        body = np.maximum(body, np.exp(-(((xx - cx) / sx) ** 2 + ((yy - cy) / sy) ** 2) ** 2))
    granules = np.zeros_like(xx)
    for _ in range(rng.integers(3, 8)):
        cx, cy = rng.normal(0, r_px * 0.35, 2)
        g = max(0.12 / um_per_px, 1.0)
        granules += np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * g * g))
    density = 0.5 * body + 1.0 * np.minimum(granules, 1.0) * body
    od = density[:, :, None] * np.asarray(PLATELET_OD_BGR, np.float32)[None, None, :] * rng.uniform(0.7, 1.2)
    return np.exp(-od).astype(np.float32)

"""Data for the WBC detector: BCCD listing and split, VOC boxes, virtual-slide fields, training samples
(mosaics + augmentation) and CenterNet targets.

Everything works in a canonical scale (``WORK_UM_PER_PX``, the model's input scale). Source images are
cached once at twice that resolution (``CACHE_UM_PER_PX``) so augmentation can rescale by +-20 % from a
sharper source.
"""

from __future__ import annotations

import random
import xml.etree.ElementTree as ET
from pathlib import Path

import cv2
import numpy as np

from agent.inference.boxes import match  # noqa: F401  (re-exported: models use D.match)
from models.augment import JitterStrength, colour_jitter

WORK_UM_PER_PX = 0.44
"""Model input scale: a 12 um WBC is ~27 px; a 1920x1200 field at 0.11 um/px is 480x300."""
CACHE_UM_PER_PX = 0.22
STRIDE = 4
BCCD_UM_PER_PX = 0.055
MILAB_UM_PER_PX = 0.11
SPLIT_SEED = 20240901
HOLDOUT_FRACTION = 0.2

Box = tuple[float, float, float, float]


# ---- BCCD ----------------------------------------------------------------------------------------
def read_voc_wbc(path: Path) -> list[tuple[int, int, int, int]]:
    """WBC boxes [x, y, w, h] of a Pascal-VOC file (BCCD): training, benchmarks and tests all read them here."""
    boxes = []
    for obj in ET.parse(path).getroot().iter("object"):
        if (obj.findtext("name") or "").strip().upper() != "WBC":
            continue
        bb = obj.find("bndbox")
        x0, y0, x1, y1 = (int(float(bb.findtext(k))) for k in ("xmin", "ymin", "xmax", "ymax"))
        boxes.append((x0, y0, x1 - x0, y1 - y0))
    return boxes


def bccd_items(bccd_dir: Path) -> list[tuple[str, Path, list]]:
    """(name, image, WBC boxes) for every BCCD image with an annotation; AnnotationsCBC/ preferred."""
    items = []
    for img in sorted((bccd_dir / "JPEGImages").glob("*.jpg")):
        ann = bccd_dir / "AnnotationsCBC" / f"{img.stem}.xml"
        if not ann.exists():
            ann = bccd_dir / "Annotations" / f"{img.stem}.xml"
        if ann.exists():
            items.append((img.stem, img, read_voc_wbc(ann)))
    return items


def bccd_split(bccd_dir: Path, seed: int = SPLIT_SEED, fraction: float = HOLDOUT_FRACTION) -> dict[str, list]:
    """Fixed-seed split of BCCD into 'train' and 'holdout' (by sorted name, shuffled with ``seed``)."""
    items = bccd_items(bccd_dir)
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    n_hold = int(round(fraction * len(items)))
    hold = set(order[:n_hold])
    return {
        "train": [it for i, it in enumerate(items) if i not in hold],
        "holdout": [it for i, it in enumerate(items) if i in hold],
    }


def resize_to(image: np.ndarray, um_per_px: float, target_um_per_px: float) -> tuple[np.ndarray, float]:
    """Resample to ``target_um_per_px``; returns (image, factor new_px / old_px)."""
    f = um_per_px / target_um_per_px
    h, w = image.shape[:2]
    size = (max(1, int(round(w * f))), max(1, int(round(h * f))))
    interp = cv2.INTER_AREA if f < 1 else cv2.INTER_LINEAR
    out = cv2.resize(image, size, interpolation=interp)
    return out, size[0] / w


def load_bccd_cache(items, cache_um: float = CACHE_UM_PER_PX):
    """List of (rgb uint8 at cache_um, boxes float array N x 4 [x0,y0,x1,y1] at cache_um)."""
    out = []
    for _, path, boxes in items:
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        small, f = resize_to(bgr, BCCD_UM_PER_PX, cache_um)
        b = np.array([[x, y, x + w, y + h] for x, y, w, h in boxes], np.float32).reshape(-1, 4) * f
        out.append((cv2.cvtColor(small, cv2.COLOR_BGR2RGB), b))
    return out


# ---- virtual slide ---------------------------------------------------------------------------------
def render_slide_fields(n: int, size_px: int = 384, um_per_px: float = CACHE_UM_PER_PX, seed: int = 1000,
                        height_px: int | None = None, wbc_per_mm2: float = 200.0):
    """``n`` in-focus virtual-slide fields (rgb, boxes x0y0x1y1) of ``size_px`` x ``height_px`` (default
    square) at ``um_per_px``, from slides seeded ``seed``, ``seed + 1``, ... (never the tests' slide, seed 1)
    with ``wbc_per_mm2`` white cells (the default slide has 50: mostly empty fields)."""
    from agent.hardware.virtual_slide import SlideSettings, VirtualSlide

    rng = np.random.default_rng(seed)
    out = []
    per_slide = 50
    for k in range(n):
        if k % per_slide == 0:
            slide = VirtualSlide(SlideSettings(seed=seed + k // per_slide, wbc_per_mm2=wbc_per_mm2))
        x = float(rng.uniform(3000, 20000))
        y = float(rng.uniform(3000, 12000))
        hp = height_px or size_px
        bgr = slide.render(x, y, size_px, hp, um_per_px)
        truth = slide.truth(x, y, size_px, hp, um_per_px)
        b = np.array([[c.box[0], c.box[1], c.box[0] + c.box[2], c.box[1] + c.box[3]] for c in truth.cells],
                     np.float32).reshape(-1, 4)
        out.append((cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), b))
    return out


# ---- augmentation ------------------------------------------------------------------------------------
def _geom(img: np.ndarray, boxes: np.ndarray, scale: float, k90: int, flip: bool):
    """Rescale by ``scale`` then rotate by k90 * 90 degrees and flip horizontally; boxes follow."""
    h, w = img.shape[:2]
    nw, nh = max(1, int(round(w * scale))), max(1, int(round(h * scale)))
    img = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    b = boxes * np.array([nw / w, nh / h, nw / w, nh / h], np.float32)
    for _ in range(k90 % 4):  # rotate 90 degrees counter-clockwise: (x, y) -> (y, W - x)
        ww = img.shape[1]
        img = np.ascontiguousarray(np.rot90(img))
        b = np.stack([b[:, 1], ww - b[:, 2], b[:, 3], ww - b[:, 0]], 1) if len(b) else b
    if flip:
        ww = img.shape[1]
        img = np.ascontiguousarray(img[:, ::-1])
        b = np.stack([ww - b[:, 2], b[:, 1], ww - b[:, 0], b[:, 3]], 1) if len(b) else b
    return img, b.reshape(-1, 4).astype(np.float32)


_DETECTOR_JITTER = JitterStrength(blur_sigma=(0.3, 1.0), sharpen=0.4, noise_max=6.0, jpeg_min_quality=40)


def colour_aug(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Stain / camera / optics changes, as for the classifier but a little milder."""
    return colour_jitter(x, rng, _DETECTOR_JITTER)


def fill_colour(rgb: np.ndarray) -> np.ndarray:
    """Colour the runtime pads with: the per-channel median of the field (every 4th pixel per axis)."""
    return np.median(rgb[::4, ::4].reshape(-1, 3), axis=0).astype(np.uint8)


def bccd_mosaic(bccd, size: int, rng: np.random.Generator):
    """``size`` x ``size`` canvas (at WORK scale) of 2 x 2 cells, each holding one augmented BCCD image
    (or left empty) on the median colour, as the runtime pads a small image."""
    cell = size // 2
    scale0 = CACHE_UM_PER_PX / WORK_UM_PER_PX
    canvas = None
    boxes = []
    for gy in range(2):
        for gx in range(2):
            if rng.random() < 0.1 and canvas is not None:
                continue
            img, b = bccd[int(rng.integers(len(bccd)))]
            s = scale0 * float(np.exp(rng.uniform(np.log(0.82), np.log(1.2))))
            t, tb = _geom(img, b, s, int(rng.integers(4)), bool(rng.random() < 0.5))
            t = t[:cell, :cell]
            if canvas is None:
                canvas = np.empty((size, size, 3), np.uint8)
                canvas[:] = fill_colour(t)
            th, tw = t.shape[:2]
            ox = gx * cell + int(rng.integers(0, cell - tw + 1))
            oy = gy * cell + int(rng.integers(0, cell - th + 1))
            canvas[oy:oy + th, ox:ox + tw] = t
            if len(tb):
                tb = tb.copy()
                tb[:, [0, 2]] = np.clip(tb[:, [0, 2]], 0, tw) + ox
                tb[:, [1, 3]] = np.clip(tb[:, [1, 3]], 0, th) + oy
                boxes.append(tb)
    b = np.concatenate(boxes, 0) if boxes else np.zeros((0, 4), np.float32)
    b = b[(b[:, 2] - b[:, 0] >= 2) & (b[:, 3] - b[:, 1] >= 2)]
    return canvas, b


def field_crop(fields, size: int, rng: np.random.Generator):
    """A ``size`` x ``size`` crop (WORK scale, +-20 %) of a whole virtual-slide field."""
    img, b = fields[int(rng.integers(len(fields)))]
    s = CACHE_UM_PER_PX / WORK_UM_PER_PX * float(np.exp(rng.uniform(np.log(0.82), np.log(1.2))))
    t, tb = _geom(img, b, s, int(rng.integers(4)), bool(rng.random() < 0.5))
    th, tw = t.shape[:2]
    ox = int(rng.integers(0, max(1, tw - size + 1)))
    oy = int(rng.integers(0, max(1, th - size + 1)))
    out = np.empty((size, size, 3), np.uint8)
    out[:] = fill_colour(t)
    crop = t[oy:oy + size, ox:ox + size]
    out[:crop.shape[0], :crop.shape[1]] = crop
    if len(tb):
        tb = tb - np.array([ox, oy, ox, oy], np.float32)
        full = (tb[:, 2] - tb[:, 0]) * (tb[:, 3] - tb[:, 1])
        lim = [min(size, tw - ox), min(size, th - oy)]
        tb[:, [0, 2]] = np.clip(tb[:, [0, 2]], 0, lim[0])
        tb[:, [1, 3]] = np.clip(tb[:, [1, 3]], 0, lim[1])
        vis = (tb[:, 2] - tb[:, 0]).clip(0) * (tb[:, 3] - tb[:, 1]).clip(0)
        tb = tb[(vis > 0.25 * np.maximum(full, 1)) & (tb[:, 2] - tb[:, 0] >= 3) & (tb[:, 3] - tb[:, 1] >= 3)]
    return out, tb.reshape(-1, 4)


# ---- targets -------------------------------------------------------------------------------------------
def targets(boxes: np.ndarray, h: int, w: int, stride: int = STRIDE):
    """CenterNet targets at ``stride``: heatmap (H, W, 1) with a Gaussian per box (1 at the centre cell) and
    regression (H, W, 5): offset x, offset y of the centre from the cell (in cells, 3x3 neighbourhood),
    box width and height (in cells), weight."""
    oh, ow = h // stride, w // stride
    heat = np.zeros((oh, ow), np.float32)
    reg = np.zeros((oh, ow, 5), np.float32)
    yy, xx = np.mgrid[0:oh, 0:ow].astype(np.float32)
    for x0, y0, x1, y1 in boxes:
        cx, cy = (x0 + x1) / 2 / stride, (y0 + y1) / 2 / stride
        bw, bh = (x1 - x0) / stride, (y1 - y0) / stride
        ix, iy = int(np.clip(np.floor(cx), 0, ow - 1)), int(np.clip(np.floor(cy), 0, oh - 1))
        sigma = max(0.5, 0.12 * np.sqrt(bw * bh))
        g = np.exp(-((xx - ix) ** 2 + (yy - iy) ** 2) / (2 * sigma * sigma))
        heat = np.maximum(heat, g)
        heat[iy, ix] = 1.0
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                jx, jy = ix + dx, iy + dy
                if 0 <= jx < ow and 0 <= jy < oh:
                    wgt = 1.0 if dx == 0 and dy == 0 else 0.5
                    if reg[jy, jx, 4] >= wgt:
                        continue
                    reg[jy, jx] = (cx - (jx + 0.5), cy - (jy + 0.5), bw, bh, wgt)
    return heat[..., None], reg




def pad_to(rgb: np.ndarray, multiple: int = 16, min_h: int = 0, min_w: int = 0) -> np.ndarray:
    """Pad bottom / right with the median colour to a multiple of ``multiple`` (and at least min_h x min_w)."""
    h, w = rgb.shape[:2]
    H = max(min_h, -(-h // multiple) * multiple)
    W = max(min_w, -(-w // multiple) * multiple)
    out = np.empty((H, W, 3), np.uint8)
    out[:] = fill_colour(rgb)
    out[:h, :w] = rgb
    return out

"""PBC data set: file listing, the fixed split, the canonical crop and the cached arrays.

Canonical classifier input (also written to ``wbc_classifier_spec.json``):
a square of ``FIELD_UM`` micrometres centred on the cell, resized with ``cv2.INTER_AREA`` to
``size`` x ``size`` pixels, RGB order, uint8 0..255 (the int8 model takes ``pixel - 128``).
PBC half-scale crops are 0.12 um/px with the cell in the middle.
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import cv2
import numpy as np

CLASSES = ["basophil", "eosinophil", "erythroblast", "ig", "lymphocyte", "monocyte", "neutrophil", "platelet"]
PBC_UM_PER_PX = 0.12
FIELD_UM = 20.0  # side of the canonical square crop, in micrometres
N_SPRITES = 12  # first files per class (sorted by name) kept for virtual-slide sprites: in no split
VAL_FRACTION = 0.15
SPLIT_SEED = 20240613
CACHE_UM_PER_PX = 0.2  # training cache resolution (the augmentation resamples from it)
CACHE_FIELD_UM = 21.6  # whole width of a PBC crop (180 px * 0.12)


def subclass(path: Path) -> str:
    """File-name prefix: BNE/SNE for neutrophils, MY/MMY/PMY for ig, ..."""
    return path.name.split("_")[0]


def list_pbc(data: Path) -> dict[str, list[Path]]:
    out = {}
    for c in CLASSES:
        files = sorted((Path(data) / c).glob("*.jpg"), key=lambda p: p.name)
        if not files:
            raise FileNotFoundError(f"no images in {Path(data) / c}")
        out[c] = files
    return out


def make_split(data: Path, seed: int = SPLIT_SEED, val_fraction: float = VAL_FRACTION) -> dict[str, list]:
    """Stratified split by class and sub-class prefix, with a fixed seed.

    Returns {"train": [(path, label_idx)], "val": [...], "sprites": [...]}; "sprites" are the first
    ``N_SPRITES`` files of each class in sorted order, which are in neither train nor val.
    """
    split = {"train": [], "val": [], "sprites": []}
    rng = random.Random(seed)
    for ci, c in enumerate(CLASSES):
        files = list_pbc(data)[c]
        split["sprites"] += [(p, ci) for p in files[:N_SPRITES]]
        groups: dict[str, list[Path]] = {}
        for p in files[N_SPRITES:]:
            groups.setdefault(subclass(p), []).append(p)
        for _, group in sorted(groups.items()):
            ps = group[:]
            rng.shuffle(ps)
            n_val = int(round(len(ps) * val_fraction))
            split["val"] += [(p, ci) for p in ps[:n_val]]
            split["train"] += [(p, ci) for p in ps[n_val:]]
    for items in split.values():
        items.sort(key=lambda t: (t[1], t[0].name))
    return split


def read_rgb(path: Path) -> np.ndarray:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise OSError(f"cannot read {path}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def canonical_crop(
    image: np.ndarray,
    um_per_px: float,
    size: int,
    center: tuple[float, float] | None = None,
    field_um: float = FIELD_UM,
) -> np.ndarray:
    """The model's input, the reference that the runtime must reproduce.

    side = round(field_um / um_per_px) source pixels; the square [x0, x0 + side) x [y0, y0 + side) with
    x0 = round(cx - side / 2), y0 = round(cy - side / 2) around ``center`` = (cx, cy) (default: the image
    centre ((w - 1) / 2, (h - 1) / 2)); parts outside the image are filled by cv2.BORDER_REFLECT_101;
    then cv2.resize to size x size with INTER_AREA (INTER_LINEAR when enlarging).
    Works on any channel order: it only resamples.
    """
    h, w = image.shape[:2]
    cx, cy = ((w - 1) / 2.0, (h - 1) / 2.0) if center is None else center
    side = max(1, int(round(field_um / um_per_px)))
    x0, y0 = int(round(cx - side / 2.0)), int(round(cy - side / 2.0))
    x1, y1 = x0 + side, y0 + side
    pad = max(0, -x0, -y0, x1 - w, y1 - h)
    if pad:
        image = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_REFLECT_101)
        x0, y0, x1, y1 = x0 + pad, y0 + pad, x1 + pad, y1 + pad
    sub = image[y0:y1, x0:x1]
    interp = cv2.INTER_AREA if side >= size else cv2.INTER_LINEAR
    return cv2.resize(sub, (size, size), interpolation=interp)


def _cache_key(items: list, tag: str) -> str:
    h = hashlib.sha1(tag.encode())
    for p, ci in items:
        h.update(f"{p.name}:{ci};".encode())
    return h.hexdigest()[:10]


def load_arrays(items: list, tag: str, cache_dir: Path, size: int, field_um: float, um_per_px: float = PBC_UM_PER_PX):
    """Decode once and cache (x uint8 N x size x size x 3 RGB, y int) under cache_dir."""
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    key = _cache_key(items, f"{tag}-{size}-{field_um}")
    fx, fy = cache_dir / f"{tag}_{size}px_{key}_x.npy", cache_dir / f"{tag}_{size}px_{key}_y.npy"
    if fx.exists() and fy.exists():
        return np.load(fx), np.load(fy)
    x = np.empty((len(items), size, size, 3), np.uint8)
    for i, (p, _) in enumerate(items):
        x[i] = canonical_crop(read_rgb(p), um_per_px, size, field_um=field_um)
    y = np.array([ci for _, ci in items], np.int64)
    np.save(fx, x)
    np.save(fy, y)
    (cache_dir / f"{tag}_{size}px_{key}_files.json").write_text(json.dumps([str(p) for p, _ in items]))
    return x, y


def train_cache_size() -> int:
    return int(round(CACHE_FIELD_UM / CACHE_UM_PER_PX))  # 108 px covering the whole PBC crop

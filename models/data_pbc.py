"""PBC data set: file listing, the fixed split, the canonical crop and the cached arrays.

Canonical classifier input (also written to ``wbc_classifier_spec.json``): the runtime's cell square
(``agent/inference/cell_crop.py``: ``CROP_FACTOR`` times the stained nucleus's measured diameter, centred
on it), resized to ``size`` x ``size`` pixels, RGB order, uint8 0..255 (the int8 model takes
``pixel - 128``). Training cuts its crops with the runtime's code, so both see the same measurement errors.
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import cv2
import numpy as np

from agent.inference.cell_crop import balance_background, cut_square, locate_cell

CLASSES = ["basophil", "eosinophil", "erythroblast", "ig", "lymphocyte", "monocyte", "neutrophil", "platelet"]
N_SPRITES = 12  # first files per class (sorted by name) kept for virtual-slide sprites: in no split
VAL_FRACTION = 0.15
SPLIT_SEED = 20240613
CROP_FACTOR = 2.5  # side of the model's square, in nucleus diameters (agent/inference/cell_crop.py)
CACHE_MARGIN = 1.4  # the training cache's square is this much wider, for the augmentation's zoom and shifts


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


def read_bgr(path: Path) -> np.ndarray:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise OSError(f"cannot read {path}")
    return bgr


def canonical_crop(bgr: np.ndarray, size: int, factor: float, margin: float = 1.0,
                   um_per_px: float | None = None, balance: bool = True) -> np.ndarray:
    """The model's input (RGB) for a crop with the cell in the middle, as the runtime cuts it; ``margin`` > 1
    widens the square (the training cache keeps room for the augmentation's zoom, shift and rotation),
    ``um_per_px`` is the runtime's optional hint, ``balance=False`` leaves out the background balance."""
    sq = locate_cell(bgr, factor, um_per_px)
    square = cut_square(bgr, sq.cx, sq.cy, sq.side_px * margin, size)
    return cv2.cvtColor(balance_background(square) if balance else square, cv2.COLOR_BGR2RGB)


def _cache_key(items: list, tag: str) -> str:
    h = hashlib.sha1(tag.encode())
    for p, ci in items:
        h.update(f"{p.name}:{ci};".encode())
    return h.hexdigest()[:10]


def load_arrays(items: list, tag: str, cache_dir: Path, size: int, factor: float, margin: float = 1.0):
    """Decode once and cache (x uint8 N x size x size x 3 RGB, y int) under cache_dir."""
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    key = _cache_key(items, f"{tag}-{size}-cell{factor}-m{margin}-balanced-bgpad-pass1shrink")
    fx, fy = cache_dir / f"{tag}_{size}px_{key}_x.npy", cache_dir / f"{tag}_{size}px_{key}_y.npy"
    if fx.exists() and fy.exists():
        return np.load(fx), np.load(fy)
    x = np.empty((len(items), size, size, 3), np.uint8)
    for i, (p, _) in enumerate(items):
        x[i] = canonical_crop(read_bgr(p), size, factor, margin)
    y = np.array([ci for _, ci in items], np.int64)
    np.save(fx, x)
    np.save(fy, y)
    (cache_dir / f"{tag}_{size}px_{key}_files.json").write_text(json.dumps([str(p) for p, _ in items]))
    return x, y



"""BCCD's white cells with class labels read by eye: a second microscope and stain for the classifier.

BCCD (``../shared/datasets/bccd``) publishes WBC boxes but no WBC classes. ``data/bccd_wbc_labels.csv`` gives
each of the 301 WBC boxes of ``Annotations/`` a class read by eye by this project's developers from the
image (not by a haematologist): ``certain=yes`` where the cell is plainly one of the five main classes
(222 cells), ``no`` where the reading is a guess or the cell is cut, blurred or smudged (``unknown`` when
there was no guess at all). Only certain labels are used.

Split by image, so no cell's neighbours or field are on both sides: even image numbers train, odd ones
evaluate. The crop is what a scan cuts for a detection (``classifier_crop``) at BCCD's nominal scale, then
the runtime's cell square (``data_pbc.canonical_crop``).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models import data_pbc
from models.detector_data import BCCD_UM_PER_PX

LABELS = Path(__file__).resolve().parent / "data" / "bccd_wbc_labels.csv"


@dataclass(frozen=True)
class LabelledCell:
    image: str
    box: tuple[int, int, int, int]
    label: str
    certain: bool

    @property
    def part(self) -> str:
        return "train" if int(self.image.rsplit("_", 1)[1]) % 2 == 0 else "eval"


def read_labels(path: Path = LABELS) -> list[LabelledCell]:
    with open(path, newline="") as fh:
        return [LabelledCell(r["image"], (int(r["x"]), int(r["y"]), int(r["w"]), int(r["h"])), r["label"],
                             r["certain"] == "yes") for r in csv.DictReader(fh)]


def certain_cells(part: str, path: Path = LABELS) -> list[LabelledCell]:
    """The certain labels of one part ("train" or "eval")."""
    return [c for c in read_labels(path) if c.certain and c.part == part]


def load_arrays(cells: list[LabelledCell], bccd_dir: Path, size: int, factor: float,
                margin: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Model squares (RGB uint8, N x size x size x 3) and PBC class indices of ``cells``."""
    from agent.field_analysis import classifier_crop

    images: dict[str, np.ndarray] = {}
    x = np.empty((len(cells), size, size, 3), np.uint8)
    for i, cell in enumerate(cells):
        if cell.image not in images:
            images[cell.image] = data_pbc.read_bgr(Path(bccd_dir) / "JPEGImages" / f"{cell.image}.jpg")
        crop = classifier_crop(images[cell.image], cell.box)
        x[i] = data_pbc.canonical_crop(crop, size, factor, margin, um_per_px=BCCD_UM_PER_PX)
    return x, np.array([data_pbc.CLASSES.index(c.label) for c in cells], np.int64)

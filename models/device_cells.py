"""Labelled white cells from another microscope: to check the classifier on a device, or to adapt it to one.

A cell list is a CSV with one WBC box per row::

    image,x,y,w,h,label,certain,part
    BloodImage_00000.jpg,260,177,231,199,neutrophil,yes,train

``image`` is a file name in the images folder given beside the list, ``x, y, w, h`` the box in its pixels,
``label`` one of the classifier's classes (or ``unknown``), ``certain`` yes/no, and ``part`` train or eval.
Only certain, named cells are used. Each is cut as a scan cuts a detection (``classifier_crop``) at the
device's µm/px and then like every other crop (``data_pbc.canonical_crop``). Keep the parts apart by image
(never one field's cells on both sides), or the evaluation measures neighbours of training cells.

``data/bccd_wbc_labels.csv`` is such a list for BCCD (``../shared/datasets/bccd``, 0.055 µm/px): its 301 WBC
boxes of ``Annotations/`` with a class read by eye by this project's developers (not a haematologist):
``certain=yes`` where the cell is plainly one of the five main classes (222 cells), ``no`` where the reading is a
guess or the cell is cut, blurred or smudged (``unknown`` without a guess). Parts by image number: even train,
odd evaluate.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models import data_pbc
from models.detector_data import BCCD_UM_PER_PX

BCCD_CELLS = Path(__file__).resolve().parent / "data" / "bccd_wbc_labels.csv"
BCCD_IMAGES = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "bccd" / "JPEGImages"
__all__ = ["BCCD_CELLS", "BCCD_IMAGES", "BCCD_UM_PER_PX", "COLUMNS", "LabelledCell", "load_arrays", "read_cells", "usable_cells"]
PARTS = ("train", "eval")
COLUMNS = ("image", "x", "y", "w", "h", "label", "certain", "part")


@dataclass(frozen=True)
class LabelledCell:
    image: str
    box: tuple[int, int, int, int]
    label: str
    certain: bool
    part: str

    @property
    def usable(self) -> bool:
        return self.certain and self.label in data_pbc.CLASSES


def read_cells(path: Path = BCCD_CELLS) -> list[LabelledCell]:
    """Every row of a cell list; a malformed row raises ValueError naming its line."""
    cells = []
    with open(path, newline="") as fh:
        for line, row in enumerate(csv.DictReader(fh), start=2):
            try:
                if None in row.values() or None in row:
                    raise ValueError("wrong number of columns")
                box = tuple(int(row[k]) for k in ("x", "y", "w", "h"))
                cell = LabelledCell(row["image"], box, row["label"], row["certain"] == "yes", row["part"])
            except (KeyError, TypeError, ValueError) as exc:
                raise ValueError(f"{path}:{line}: not a cell row ({exc})") from exc
            if cell.label not in (*data_pbc.CLASSES, "unknown") or cell.part not in PARTS or min(box[2:]) <= 0:
                raise ValueError(f"{path}:{line}: label {cell.label!r}, part {cell.part!r} or box {box} is not valid")
            cells.append(cell)
    return cells


def usable_cells(part: str, path: Path = BCCD_CELLS) -> list[LabelledCell]:
    """The certain, named cells of one part ("train" or "eval")."""
    return [c for c in read_cells(path) if c.usable and c.part == part]


def load_arrays(cells: list[LabelledCell], images: Path, um_per_px: float, size: int, factor: float,
                margin: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Model squares (RGB uint8, N x size x size x 3) and class indices of ``cells``."""
    from agent.field_analysis import classifier_crop

    decoded: dict[str, np.ndarray] = {}
    x = np.empty((len(cells), size, size, 3), np.uint8)
    for i, cell in enumerate(cells):
        if cell.image not in decoded:
            decoded[cell.image] = data_pbc.read_bgr(Path(images) / cell.image)
        crop = classifier_crop(decoded[cell.image], cell.box)
        x[i] = data_pbc.canonical_crop(crop, size, factor, margin, um_per_px=um_per_px)
    return x, np.array([data_pbc.CLASSES.index(c.label) for c in cells], np.int64)

"""The same bundled PBC crop at three pixel scales, as the scale-normalisation tests use it."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

SAMPLES = sorted((Path(__file__).resolve().parents[1] / "models" / "samples").glob("*__*.jpg"))
PBC_UM_PER_PX = 0.12  # what the data set says; really ~0.17, so even the original is "wrong" for the hint


def label_of(path: Path) -> str:
    return path.name.split("__")[0]


def filled_120(crop: np.ndarray) -> np.ndarray:
    """The middle 75 px (about the cell) blown up to 120 x 120: the cell fills the crop (x1.6)."""
    h, w = crop.shape[:2]
    y0, x0 = (h - 75) // 2, (w - 75) // 2
    return cv2.resize(crop[y0:y0 + 75, x0:x0 + 75], (120, 120), interpolation=cv2.INTER_LINEAR)


def small_in_300(crop: np.ndarray) -> np.ndarray:
    """The crop shrunk x0.6 in the middle of a 300 x 300 canvas of its own background colour."""
    small = cv2.resize(crop, None, fx=0.6, fy=0.6, interpolation=cv2.INTER_AREA)
    h, w = small.shape[:2]
    grey = crop.reshape(-1, 3).astype(np.float32)
    # Background: the brightest tenth of the crop is plasma.
    bright = grey[grey.sum(axis=1) >= np.percentile(grey.sum(axis=1), 90)]
    canvas = np.empty((300, 300, 3), np.uint8)
    canvas[:] = np.median(bright, axis=0).astype(np.uint8)
    y0, x0 = (300 - h) // 2, (300 - w) // 2
    canvas[y0:y0 + h, x0:x0 + w] = small
    return canvas

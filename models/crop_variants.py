"""The same cell crop at other pixel scales and framings, as a caller of ``wbcscope classify`` may cut it:
used by the evaluation (``eval_classifier.py --robustness``) and by the scale tests."""

from __future__ import annotations

import cv2
import numpy as np

from agent.inference.cell_crop import background_colour


def filled_160(crop: np.ndarray) -> np.ndarray:
    """The middle 100 px (about the cell and a thin rim) blown up to 160 x 160: the cell fills the crop (x1.6)."""
    h, w = crop.shape[:2]
    y0, x0 = (h - 100) // 2, (w - 100) // 2
    return cv2.resize(crop[y0:y0 + 100, x0:x0 + 100], (160, 160), interpolation=cv2.INTER_LINEAR)


def small_in_300(crop: np.ndarray) -> np.ndarray:
    """The crop shrunk x0.6 in the middle of a 300 x 300 canvas of its own background colour."""
    small = cv2.resize(crop, None, fx=0.6, fy=0.6, interpolation=cv2.INTER_AREA)
    h, w = small.shape[:2]
    canvas = np.empty((300, 300, 3), np.uint8)
    canvas[:] = background_colour(crop).astype(np.uint8)
    y0, x0 = (300 - h) // 2, (300 - w) // 2
    canvas[y0:y0 + h, x0:x0 + w] = small
    return canvas

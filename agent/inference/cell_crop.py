"""The classifier's view of a cell: a square whose side is a fixed multiple of the cell's own measured size.

Why not a fixed field in micrometres: the µm/px a caller knows is often wrong or missing (the PBC training
crops themselves are ~0.17 µm/px, not the nominal 0.12; a crop from another device comes with no scale at
all). The stained nucleus is measured in the crop itself (``CellFinder``), so the same cell gives the
same model input at any pixel scale. Absolute size is not lost entirely: neighbouring red cells in the
square (7-8 µm on every device) still show how large the cell is.

The measurement is made scale-free in two passes: the first with the caller's hint (or, without one, a
guess from the crop's size), on a copy shrunk so the expected nucleus is ~24 px across (it only has to be
roughly right), the second at full resolution with the scale implied by the first nucleus, so the final size
does not depend on the hint. Training (``models/data_pbc.py``) cuts its crops with this same module.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from agent.inference.cell_finder import CellFinder, _percentiles

TYPICAL_NUCLEUS_UM = 8.5
"""Convex-hull diameter of a typical WBC nucleus by ``CellFinder`` (PBC neutrophils: ~50 px at 0.17 µm/px);
only sets the finder's smoothing and bridging for the second pass."""
FIRST_PASS_NUCLEUS_PX = 24
"""About this many pixels across the expected nucleus are enough for the first, rough pass."""
CROP_SPAN_NUCLEI = 2.6
"""Without a hint, a crop is guessed to span this many typical nuclei across its short side."""


@dataclass(frozen=True)
class CellSquare:
    cx: float
    cy: float
    side_px: float
    found: bool
    """False: no stained cell was found and the square is the crop's central square."""


def guess_um_per_px(shape: tuple[int, ...]) -> float:
    return CROP_SPAN_NUCLEI * TYPICAL_NUCLEUS_UM / max(1, min(shape[:2]))


def locate_cell(crop_bgr: np.ndarray, factor: float, um_per_px_hint: float | None = None,
                finder: CellFinder | None = None) -> CellSquare:
    """The square the classifier sees: ``factor`` nucleus diameters around the cell nearest the middle."""
    finder = finder if finder is not None else CellFinder()
    h, w = crop_bgr.shape[:2]
    hint = guess_um_per_px(crop_bgr.shape) if um_per_px_hint is None else um_per_px_hint
    # The first pass only has to size the nucleus roughly (the second sets the square), so it runs on a
    # copy shrunk to about FIRST_PASS_NUCLEUS_PX across the expected nucleus: a quarter of the pixels or less.
    shrink = int(TYPICAL_NUCLEUS_UM / hint // FIRST_PASS_NUCLEUS_PX) if hint > 0 else 1  # the finder refuses <= 0
    if shrink >= 2 and min(h, w) >= 16 * shrink:
        small = cv2.resize(crop_bgr, (w // shrink, h // shrink), interpolation=cv2.INTER_AREA)
        first = finder.find(small, hint * shrink)
    else:
        shrink, first = 1, finder.find(crop_bgr, hint)
    if first is None:
        return CellSquare((w - 1) / 2.0, (h - 1) / 2.0, float(min(h, w)), found=False)
    second = finder.find(crop_bgr, TYPICAL_NUCLEUS_UM / (first.diameter_px * shrink))
    if second is None:
        return CellSquare((first.cx + 0.5) * shrink - 0.5, (first.cy + 0.5) * shrink - 0.5,
                          factor * first.diameter_px * shrink, found=True)
    return CellSquare(second.cx, second.cy, factor * second.diameter_px, found=True)


def cut_square(image: np.ndarray, cx: float, cy: float, side_px: float, size: int) -> np.ndarray:
    """The ``side_px`` square centred on (cx, cy), resized to ``size`` x ``size`` (any channel order).

    x0 = round(cx - side/2), y0 = round(cy - side/2); parts outside the image are filled with the image's
    background colour (``background_colour``): a cell cut tightly, or near a field's edge, then sits in
    plain plasma rather than among mirrored copies of itself. INTER_AREA when shrinking, INTER_LINEAR when
    enlarging.
    """
    h, w = image.shape[:2]
    side = max(1, int(round(side_px)))
    x0, y0 = int(round(cx - side / 2.0)), int(round(cy - side / 2.0))
    pad = max(0, -x0, -y0, x0 + side - w, y0 + side - h)
    if pad > 0:
        fill = [float(v) for v in background_colour(image)]
        image = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=fill)
        x0, y0 = x0 + pad, y0 + pad
    square = image[y0:y0 + side, x0:x0 + side]
    interpolation = cv2.INTER_AREA if side >= size else cv2.INTER_LINEAR
    return cv2.resize(square, (size, size), interpolation=interpolation)


def background_colour(image: np.ndarray) -> np.ndarray:
    """Median colour of the brightest tenth of the pixels: the plasma between cells in a smear image."""
    while image.shape[0] * image.shape[1] > 20000:  # a colour estimate needs no full resolution
        image = image[::2, ::2]
    pixels = image.reshape(-1, image.shape[2])
    # Channel sums by plain adds: numpy's sum over a short last axis took most of this function's time.
    brightness = pixels[:, 0].astype(np.int16)
    for channel in range(1, pixels.shape[1]):
        brightness += pixels[:, channel]
    (bright_cut,) = _percentiles(brightness, (90.0,))
    return np.median(pixels[brightness >= bright_cut], axis=0).astype(np.float32)


REFERENCE_BACKGROUND_BGR = (204.0, 229.0, 255.0)
"""Plasma/background colour of the PBC training crops (median of each crop's brightest tenth; it varies by
only a few grey levels across the set)."""
MIN_BACKGROUND_LEVEL = 120.0
"""Below this (darkest channel of the brightest tenth) the square shows no background to balance on."""
GAIN_LIMITS = (0.6, 1.6)


def balance_background(square_bgr: np.ndarray) -> np.ndarray:
    """Per-channel gains that bring the square's background to the training set's background colour.

    Another microscope's lamp, filter and camera white balance multiply the three channels; the background
    (plasma between cells) shows that product directly, so dividing it out is the cheapest part of a
    device shift to remove. A square with no bright background is returned unchanged.
    """
    background = background_colour(square_bgr)
    if float(background.min()) < MIN_BACKGROUND_LEVEL:
        return square_bgr
    gains = np.clip(np.asarray(REFERENCE_BACKGROUND_BGR, np.float32) / background, *GAIN_LIMITS)
    return np.clip(square_bgr.astype(np.float32) * gains + 0.5, 0, 255).astype(np.uint8)

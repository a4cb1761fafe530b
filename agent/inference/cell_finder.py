"""Finds the stained white cell in a classifier crop and measures its size in pixels.

The classifier needs every cell at the size its training cells had, whatever the camera: the µm/px a
caller passes may be wrong (the PBC training crops themselves turned out to be ~0.17-0.19 µm/px, not
the nominal 0.12). A stain-based size measurement is independent of that number, so the runtime can
rescale by it and keep ``um_per_px`` only as a hint (filter sizes here) and a fallback.

Method, on the crop alone (same colour cue as ``classical.py``):

1. blueness ``B - (R + G) / 2``, lightly blurred; Otsu threshold on the crop, floored a fixed contrast
   above the crop's median so a crop with no nucleus yields nothing;
2. a dilation of ~1 µm (by the hint) joins the lobes of a segmented nucleus; the component whose
   stained area is largest, discounted by its distance from the crop centre, is the cell's nucleus
   (a crop is cut around a detection, so the cell is roughly in the middle);
3. the cell's size is the equivalent diameter of the convex hull of that nucleus's stained pixels:
   a hull spans the lobes of a neutrophil the way the cell does, and it needs no cytoplasm boundary
   (cytoplasm against touching red cells has no reliable colour edge in these stains).

Sizes are only compared with sizes measured the same way on PBC crops (see ``tflite_classifier.py``),
so what matters is that the measure scales with the image, not that it equals a biological diameter.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

# B - (R + G) / 2 as one cv2.transform row (BGR order).
_BLUENESS = np.array([[1.0, -0.5, -0.5]], dtype=np.float32)


def _percentiles(values: np.ndarray, qs: tuple[float, ...]) -> list[float]:
    """``np.percentile`` (linear interpolation): the same numbers, with one single-rank partition per
    percentile (numpy's several-rank partition and its checks took a third of the finder's time)."""
    flat = values.ravel()
    last = flat.size - 1
    out = []
    for q in qs:
        pos = last * q / 100.0
        lo = int(np.floor(pos))
        part = np.partition(flat, lo)
        below = float(part[lo])
        above = float(part[lo + 1:].min()) if lo < last else below  # the next rank: least of the rest
        out.append(below + (above - below) * (pos - lo))
    return out


@dataclass(frozen=True)
class CellFinderParams:
    blur_sigma_um: float = 0.4
    """Smooths JPEG chroma blocks and granules before thresholding."""
    min_contrast: float = 18.0
    """Lowest threshold above the reference blueness (grey levels): plasma and red cells stay out."""
    filled_reference_contrast: float = 30.0
    """The reference level is at most this far above the crop's 5th percentile of blueness."""
    bridge_um: float = 1.0
    """Dilation radius that joins the lobes of one nucleus."""
    min_nucleus_um2: float = 3.0
    """Stained area (by the hint scale) below which a blob is a speck; low, so platelets still count."""
    centre_weight_frac: float = 0.25
    """Distance from the crop centre, as a fraction of the crop's short side, that halves a blob's weight."""


@dataclass(frozen=True)
class FoundCell:
    cx: float
    cy: float
    """Centre of the nucleus's convex hull, crop pixels."""
    diameter_px: float
    """Equivalent diameter of the nucleus's convex hull, crop pixels."""
    stained_px: int


class CellFinder:
    def __init__(self, params: CellFinderParams | None = None) -> None:
        self.params = params if params is not None else CellFinderParams()

    def find(self, crop_bgr: np.ndarray, um_per_px_hint: float) -> FoundCell | None:
        """The cell nearest the middle of ``crop_bgr`` (BGR uint8), or None when no nucleus is found."""
        if crop_bgr.ndim != 3 or crop_bgr.shape[2] != 3 or crop_bgr.dtype != np.uint8:
            raise ValueError(f"expected an H x W x 3 uint8 BGR crop, got {crop_bgr.shape} {crop_bgr.dtype}")
        if not um_per_px_hint > 0:
            raise ValueError(f"um_per_px_hint must be positive, got {um_per_px_hint}")
        p = self.params
        h, w = crop_bgr.shape[:2]
        if min(h, w) < 8:
            return None
        blue = cv2.transform(crop_bgr.astype(np.float32), _BLUENESS)
        sigma_px = p.blur_sigma_um / um_per_px_hint
        if sigma_px > 0.3:
            blue = cv2.GaussianBlur(blue, (0, 0), sigma_px)
        # Reference level: the crop's median, which is plasma and red cells when they fill most of it; a crop
        # filled by the cell itself has a stained median, so the reference is capped just above the least
        # stained pixels instead.
        low, median = _percentiles(blue, (5.0, 50.0))
        reference = min(median, low + p.filled_reference_contrast)
        shifted = np.clip(blue - reference, 0, 255).astype(np.uint8)
        otsu, _ = cv2.threshold(shifted, 0, 255, cv2.THRESH_BINARY | cv2.THRESH_OTSU)
        mask = (shifted > max(float(otsu), p.min_contrast)).astype(np.uint8)
        if not mask.any():
            return None
        bridge_px = int(round(p.bridge_um / um_per_px_hint))
        bridged = mask
        if bridge_px > 0:
            kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * bridge_px + 1, 2 * bridge_px + 1))
            bridged = cv2.dilate(mask, kernel)
        n_labels, labels, _, centroids = cv2.connectedComponentsWithStats(bridged, connectivity=8)
        stained = np.bincount(labels[mask.astype(bool)], minlength=n_labels).astype(np.float64)
        stained[0] = 0.0
        min_px = p.min_nucleus_um2 / um_per_px_hint**2
        dist = np.hypot(centroids[:, 0] - (w - 1) / 2.0, centroids[:, 1] - (h - 1) / 2.0)
        weight = stained / (1.0 + (dist / (p.centre_weight_frac * min(h, w))) ** 2)
        weight[stained < min_px] = 0.0
        best = int(np.argmax(weight))
        if weight[best] <= 0.0:
            return None
        nucleus = ((labels == best) & (mask > 0)).astype(np.uint8)
        # The hull of a pixel set is the hull of its outer boundary pixels: far fewer points to hull.
        contours, _ = cv2.findContours(nucleus, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        hull = cv2.convexHull(np.concatenate(contours))
        stained_px = cv2.countNonZero(nucleus)
        area = max(float(cv2.contourArea(hull)), float(stained_px))
        moments = cv2.moments(hull)
        if moments["m00"] <= 0:  # a line of pixels: their own centroid
            moments = cv2.moments(nucleus, binaryImage=True)
        cx, cy = moments["m10"] / moments["m00"], moments["m01"] / moments["m00"]
        return FoundCell(cx=cx, cy=cy, diameter_px=float(np.sqrt(4.0 * area / np.pi)), stained_px=int(stained_px))

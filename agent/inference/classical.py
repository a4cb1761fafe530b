"""Classical (no learned weights) WBC detector for May-Grünwald-Giemsa smears.

WBCs are the only cells in a smear with a large, dark blue-purple nucleus: red cells are pink (no
blue excess) and platelets are blue-purple but only 2-3 um across. So the detector

1. resamples the field to a canonical scale (``WORK_UM_PER_PX``) so every size below is in um and
   the work is done on ~0.5 MP whatever the camera;
2. scores "blueness" ``B - (R + G) / 2`` per pixel, a chromaticity difference that is ~0 for grey
   background, negative for red cells and large for nuclei;
3. thresholds it adaptively: Otsu between the faint-blue and strongly-blue pixels of the bluest
   decile of the field, floored a fixed distance above the field's median so a field with no WBC
   does not get a threshold inside the noise;
4. bridges the 2-5 lobes of a segmented nucleus with a dilation sized in um, labels the result and
   keeps components whose stained (undilated) area is a plausible nucleus, not a platelet or a clump;
5. grows each nucleus into a cell box: the nucleus box widened by a cytoplasm margin and, for small
   round nuclei (lymphocytes), padded up to a minimum cell size, then clipped to the image.

The defaults in ``ClassicalParams`` were tuned on the even-numbered half of BCCD plus the miLab 0152
stack and checked on the odd half (``benchmarks/classical_detector.py``). Known weak spots: two WBCs
whose nuclei touch come out as one box, and cells with a wide cytoplasm (monocytes, some
eosinophils whose red granules carry no blue) get a box that is too tight.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from agent.inference.base import Detection, Detector

WORK_UM_PER_PX = 0.22
"""Scale the detector works at: a 12 um WBC is ~55 px, a 2.5 um platelet ~11 px."""

# B - (R + G) / 2 as one cv2.transform row (BGR order).
_BLUENESS = np.array([[1.0, -0.5, -0.5]], dtype=np.float32)


@dataclass(frozen=True)
class ClassicalParams:
    blur_sigma_um: float = 0.5
    """Smooths JPEG chroma blocks and granules before thresholding."""
    top_fraction: float = 0.10
    """Fraction of bluest pixels the Otsu split is computed on."""
    min_contrast: float = 18.0
    """Lowest allowed threshold above the field's median blueness (grey levels)."""
    bridge_um: float = 1.0
    """Dilation radius that joins lobes of one nucleus (gaps up to twice this)."""
    min_nucleus_um2: float = 12.0
    """Stained area below this is a platelet, a stain speck or noise (a 3 um platelet is ~7 um²)."""
    max_nucleus_um2: float = 250.0
    """Stained area above this is a clump of cells or a smudge, not one WBC nucleus."""
    cytoplasm_margin_um: float = 1.0
    """Cytoplasm rim added to each side of the nucleus box."""
    min_cell_um: float = 7.0
    """Boxes are padded (about the nucleus centre) to at least this side length."""
    max_cell_um: float = 22.0
    """No WBC box is larger than this per side; larger nucleus boxes are clumps."""


class ClassicalDetector(Detector):
    """Colour-threshold WBC detector; see the module docstring for the method."""

    name = "classical"

    def __init__(self, params: ClassicalParams | None = None) -> None:
        self.params = params if params is not None else ClassicalParams()

    def detect(self, image: np.ndarray, um_per_px: float) -> list[Detection]:
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected an H x W x 3 uint8 BGR image, got {image.shape} {image.dtype}")
        if not um_per_px > 0:
            raise ValueError(f"um_per_px must be positive, got {um_per_px}")
        p = self.params
        img_h, img_w = image.shape[:2]
        # Only ever shrink: a coarser camera is used at its own scale.
        shrink = min(1.0, um_per_px / WORK_UM_PER_PX)
        work_um_per_px = um_per_px / shrink
        if shrink < 1.0:
            size = (max(1, round(img_w * shrink)), max(1, round(img_h * shrink)))
            small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        else:
            small = image
        blueness = self._blueness(small, p.blur_sigma_um / work_um_per_px)
        threshold, median = self._threshold(blueness)
        mask = (blueness > threshold).astype(np.uint8)

        bridge_px = round(p.bridge_um / work_um_per_px)
        bridged = mask
        if bridge_px > 0:
            kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * bridge_px + 1, 2 * bridge_px + 1))
            bridged = cv2.dilate(mask, kernel)
        n_labels, labels, stats, _ = cv2.connectedComponentsWithStats(bridged, connectivity=8)
        if n_labels <= 1:
            return []
        # Stained area per bridged component, counting only truly stained pixels (the dilation would
        # inflate a platelet's area several-fold).
        stained_px = np.bincount(labels[mask.astype(bool)], minlength=n_labels)
        px_area_um2 = work_um_per_px**2
        stained_um2 = stained_px * px_area_um2
        keep = np.flatnonzero((stained_um2 >= p.min_nucleus_um2) & (stained_um2 <= p.max_nucleus_um2))
        keep = keep[keep > 0]
        if keep.size == 0:
            return []
        strength = np.bincount(labels.ravel(), weights=(blueness - median).ravel(), minlength=n_labels)

        to_full = 1.0 / shrink
        detections = []
        for label in keep:
            # Tight box of the stained pixels, not of the dilated blob (which also spills past the
            # image border unevenly).
            x, y, w, h = stats[label, :4]
            window = (labels[y : y + h, x : x + w] == label) & (mask[y : y + h, x : x + w] > 0)
            rows = np.flatnonzero(window.any(axis=1))
            cols = np.flatnonzero(window.any(axis=0))
            box_um = np.array(
                [x + cols[0], y + rows[0], x + cols[-1] + 1, y + rows[-1] + 1], dtype=np.float64
            ) * work_um_per_px
            cell = self._cell_box_um(box_um)
            if cell is None:
                continue
            bx0, by0, bx1, by1 = (cell / work_um_per_px) * to_full
            bx0, by0 = max(0, int(round(bx0))), max(0, int(round(by0)))
            bx1, by1 = min(img_w, int(round(bx1))), min(img_h, int(round(by1)))
            if bx1 - bx0 < 2 or by1 - by0 < 2:
                continue
            mean_contrast = strength[label] / max(1, stats[label, cv2.CC_STAT_AREA])
            score = self._score(mean_contrast, threshold - median, stained_um2[label])
            detections.append(Detection(box=(bx0, by0, bx1 - bx0, by1 - by0), score=score))
        detections.sort(key=lambda d: d.score, reverse=True)
        return detections

    @staticmethod
    def _blueness(small: np.ndarray, sigma_px: float) -> np.ndarray:
        blue = cv2.transform(small.astype(np.float32), _BLUENESS)
        if sigma_px > 0.3:
            blue = cv2.GaussianBlur(blue, (0, 0), sigma_px)
        return blue

    def _threshold(self, blueness: np.ndarray) -> tuple[float, float]:
        p = self.params
        flat = blueness.ravel()
        n_top = max(2, int(flat.size * p.top_fraction))
        median = float(np.partition(flat, flat.size // 2)[flat.size // 2])
        top = np.partition(flat, flat.size - n_top)[flat.size - n_top :]
        # Otsu needs 8-bit input; an offset keeps the relevant range (median .. median+255) intact.
        top8 = np.clip(top - median, 0, 255).astype(np.uint8).reshape(-1, 1)
        otsu, _ = cv2.threshold(top8, 0, 255, cv2.THRESH_BINARY | cv2.THRESH_OTSU)
        return median + max(float(otsu), p.min_contrast), median

    def _cell_box_um(self, box_um: np.ndarray) -> np.ndarray | None:
        p = self.params
        x0, y0, x1, y1 = box_um
        if max(x1 - x0, y1 - y0) > p.max_cell_um:
            return None
        m = p.cytoplasm_margin_um
        x0, y0, x1, y1 = x0 - m, y0 - m, x1 + m, y1 + m
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        half_w = max(x1 - x0, p.min_cell_um) / 2
        half_h = max(y1 - y0, p.min_cell_um) / 2
        return np.array([cx - half_w, cy - half_h, cx + half_w, cy + half_h])

    def _score(self, mean_contrast: float, threshold_contrast: float, area_um2: float) -> float:
        # Mean of how far the blob stands above the threshold and how nucleus-sized it is, both in
        # [0, 1]: a barely-over-threshold or near-platelet-sized blob scores low.
        p = self.params
        colour = min(1.0, max(0.0, mean_contrast / max(1e-6, 2.0 * threshold_contrast)))
        size = min(1.0, area_um2 / (3.0 * p.min_nucleus_um2))
        return float(np.clip(0.5 * colour + 0.5 * size, 0.0, 1.0))

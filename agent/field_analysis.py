"""From one field's z-stack to its cells: focus per plane, detection on the sharpest plane, per-cell focus
and classification. Used alike by a live scan and by ``analyze`` of a directory on disk."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from agent import focus
from agent.inference.base import UNCLASSIFIED_WBC, Classification, Classifier, Detector
from agent.results.record import CellRecord


@dataclass(frozen=True)
class Plane:
    stack_index: int
    image: np.ndarray
    """BGR uint8."""
    z_um: float | None = None


@dataclass(frozen=True)
class FieldAnalysis:
    focus_values: list[float]
    best_plane: int
    """Position in the given plane list (not the stack index) of the sharpest plane."""
    cells: list[CellRecord]
    timings_s: dict[str, float]


PLATELET_MAX_UM = 6.0
"""A detection longer than this (µm) is WBC-sized: the classifier's ``platelet`` answer for it is implausible
(platelets are 1.5-3 µm, large ones up to ~6; the smallest lymphocytes ~7), so the cell is flagged for review
whatever the confidence. Crops of other devices' WBCs do get called platelet (BCCD: 32 of 301 boxes,
``models/classifier.md``)."""


LOW_CONFIDENCE = "low_confidence"
PLATELET_SIZE = "platelet_size"


def review_reasons(result: Classification, box: tuple[int, int, int, int], um_per_px: float,
                   threshold: float) -> tuple[str, ...]:
    """Why a person should look at this cell (empty: no need): the classifier was unsure (``LOW_CONFIDENCE``),
    and/or it named a WBC-sized cell a platelet (``PLATELET_SIZE``). An unclassified WBC (no classifier
    configured) has no answer to doubt."""
    if result.prediction == UNCLASSIFIED_WBC:
        return ()
    reasons = []
    if result.confidence < threshold:
        reasons.append(LOW_CONFIDENCE)
    if result.label == "platelet" and max(box[2], box[3]) * um_per_px > PLATELET_MAX_UM:
        reasons.append(PLATELET_SIZE)
    return tuple(reasons)


# Context around a cell when cropping it for the classifier: the classifier re-finds the cell and cuts
# 2.5 nucleus diameters around it, which must fit in the crop without mirrored borders.
_CLASSIFY_MARGIN = 1.0


class FieldAnalyzer:
    def __init__(self, detector: Detector, classifier: Classifier, *, um_per_px: float, measure: str,
                 review_threshold: float = 0.0) -> None:
        self.detector = detector
        self.classifier = classifier
        self.review_threshold = review_threshold
        """Cells classified with a confidence below this are flagged for review (inference.review_threshold);
        so are WBC-sized cells called platelet (``review_reasons``)."""
        self.um_per_px = um_per_px
        self.measure = measure

    def analyze(self, planes: list[Plane]) -> FieldAnalysis:
        if not planes:
            raise ValueError("a field needs at least one plane")
        t0 = time.perf_counter()
        values = [focus.focus_measure(p.image, self.measure) for p in planes]
        best = int(np.argmax(values))
        t1 = time.perf_counter()
        detections = self.detector.detect(planes[best].image, self.um_per_px)
        t2 = time.perf_counter()
        cells = []
        for det in detections:
            sharpest = self._sharpest_plane(planes, det.box)
            crop = classifier_crop(planes[sharpest].image, det.box)
            result = self.classifier.classify(crop, self.um_per_px)
            reasons = review_reasons(result, det.box, self.um_per_px, self.review_threshold)
            cells.append(
                CellRecord(
                    location=tuple(int(v) for v in det.box),
                    prediction=result.prediction,
                    label=result.label,
                    confidence=round(float(result.confidence), 4),
                    detection_score=round(float(det.score), 4),
                    focus=planes[sharpest].stack_index,
                    review=bool(reasons),
                    review_reasons=reasons,
                )
            )
        t3 = time.perf_counter()
        timings = {"focus": t1 - t0, "detect": t2 - t1, "cells": t3 - t2}
        return FieldAnalysis(values, best, cells, {k: round(v, 4) for k, v in timings.items()})

    def _sharpest_plane(self, planes: list[Plane], box: tuple[int, int, int, int]) -> int:
        scores = [focus.focus_measure(p.image, self.measure, roi=box) for p in planes]
        return int(np.argmax(scores))


def classifier_crop(image: np.ndarray, box: tuple[int, int, int, int], margin: float = _CLASSIFY_MARGIN) -> np.ndarray:
    """The part of a field the classifier gets for a detection: the box with ``margin`` box sizes around it."""
    x, y, w, h = box
    mx, my = int(w * margin), int(h * margin)
    height, width = image.shape[:2]
    x0, y0 = max(0, x - mx), max(0, y - my)
    x1, y1 = min(width, x + w + mx), min(height, y + h + my)
    return image[y0:y1, x0:x1]

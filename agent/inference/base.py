"""Interfaces of the detection and classification steps, and the prediction codes.

The prediction codes are part of the published output format (README, "Prediction codes") and never
change meaning.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass

import numpy as np

PREDICTION_CODES: dict[str, int] = {
    "rbc": 0,
    "platelet": 1,
    "neutrophil": 2,
    "lymphocyte": 3,
    "monocyte": 4,
    "eosinophil": 5,
    "basophil": 6,
    "ig": 7,
    "erythroblast": 8,
    "wbc": 9,  # a WBC that no classifier has named
}
CODE_NAMES: dict[int, str] = {code: name for name, code in PREDICTION_CODES.items()}
UNCLASSIFIED_WBC = PREDICTION_CODES["wbc"]


@dataclass(frozen=True)
class Detection:
    box: tuple[int, int, int, int]
    """[x, y, w, h] in full-resolution pixels of the image given to the detector."""
    score: float


@dataclass(frozen=True)
class Classification:
    label: str
    """A key of PREDICTION_CODES."""
    confidence: float

    @property
    def prediction(self) -> int:
        return PREDICTION_CODES[self.label]


class Detector(abc.ABC):
    """Finds WBCs in a whole field."""

    name: str = "detector"

    @abc.abstractmethod
    def detect(self, image: np.ndarray, um_per_px: float) -> list[Detection]:
        """``image`` is BGR uint8; ``um_per_px`` is its scale."""


class Classifier(abc.ABC):
    """Names the cell in the middle of a crop."""

    name: str = "classifier"

    @abc.abstractmethod
    def classify(self, crop: np.ndarray, um_per_px: float | None) -> Classification:
        """``crop`` is BGR uint8 with the cell roughly centred; ``um_per_px`` its scale, None if unknown."""


class NoClassifier(Classifier):
    """Used when no classifier is configured: every WBC is reported as code 9, never a guessed class."""

    name = "none"

    def classify(self, crop: np.ndarray, um_per_px: float | None) -> Classification:
        return Classification(label="wbc", confidence=0.0)

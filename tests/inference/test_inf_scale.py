"""Scale normalisation in TfliteClassifier: the same bundled PBC validation crop at three pixel scales
(as given, x1.6 filling a 120 px crop, x0.6 small in a 300 px crop), always with the data set's nominal
0.12 µm/px as the hint, so the hint is wrong for two of the three."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from agent.inference.cell_finder import CellFinder
from agent.inference.tflite_classifier import TfliteClassifier
from tests.inference.scale_variants import PBC_UM_PER_PX, SAMPLES, filled_120, label_of, small_in_300

# Measured (benchmarks/classifier_scale.py, models/classifier.md): these four keep their label at all
# three scales; basophil, eosinophil, ig and monocyte still change at x0.6 or x1.6.
STABLE = {"erythroblast", "lymphocyte", "neutrophil", "platelet"}


@pytest.fixture(scope="module")
def classifier():
    return TfliteClassifier(normalise_scale=True)


def _params():
    return [pytest.param(p, id=label_of(p), marks=() if label_of(p) in STABLE else pytest.mark.xfail(
        reason="scale normalisation does not yet hold this class at x0.6 / x1.6", strict=False)) for p in SAMPLES]


@pytest.mark.parametrize("path", _params())
def test_same_cell_at_three_scales_gets_the_same_right_label(classifier, path):
    crop = cv2.imread(str(path), cv2.IMREAD_COLOR)
    labels = [classifier.classify(v, PBC_UM_PER_PX).label for v in (crop, filled_120(crop), small_in_300(crop))]
    assert labels == [label_of(path)] * 3


def test_cell_finder_size_follows_the_pixel_scale():
    crop = cv2.imread(str(next(p for p in SAMPLES if label_of(p) == "neutrophil")), cv2.IMREAD_COLOR)
    finder = CellFinder()
    base = finder.find(crop, PBC_UM_PER_PX)
    big = finder.find(cv2.resize(crop, None, fx=1.6, fy=1.6, interpolation=cv2.INTER_LINEAR), PBC_UM_PER_PX)
    assert base is not None and big is not None
    assert big.diameter_px / base.diameter_px == pytest.approx(1.6, rel=0.15)
    h, w = crop.shape[:2]
    assert abs(base.cx - w / 2) < 0.15 * w and abs(base.cy - h / 2) < 0.15 * h


def test_no_stained_cell_falls_back_to_the_hint(classifier):
    plain = np.full((150, 150, 3), (246, 244, 248), np.uint8)  # plasma only
    assert classifier.find_cell(plain, 0.11) is None
    p = classifier.probabilities(plain, 0.11)
    assert p.shape == (8,) and abs(float(p.sum()) - 1.0) < 0.05


def test_probabilities_sum_to_one_and_spec_mode_is_kept(classifier):
    crop = cv2.imread(str(SAMPLES[0]), cv2.IMREAD_COLOR)
    assert float(classifier.probabilities(crop, PBC_UM_PER_PX).sum()) == pytest.approx(1.0, abs=1e-3)
    spec_only = TfliteClassifier(normalise_scale=False)
    assert spec_only.classify(crop, PBC_UM_PER_PX).label == label_of(SAMPLES[0])

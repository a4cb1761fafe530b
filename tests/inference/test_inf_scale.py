"""Scale invariance of the classifier runtime: the same bundled PBC validation crop at three pixel scales
(as given, x1.6 filling a 160 px crop, x0.6 small in a 300 px crop), without a scale and with the data
set's nominal 0.12 µm/px (right for none of the three: PBC crops are really ~0.17)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from agent.inference.tflite_classifier import TfliteClassifier
from models.crop_variants import filled_160, small_in_300
from tests.inference.scale_variants import PBC_UM_PER_PX, SAMPLES, label_of


@pytest.fixture(scope="module")
def classifier():
    return TfliteClassifier()


@pytest.mark.parametrize("hint", [None, PBC_UM_PER_PX], ids=["no-scale", "hint-0.12"])
@pytest.mark.parametrize("path", SAMPLES, ids=[label_of(p) for p in SAMPLES])
def test_same_cell_at_three_scales_gets_the_same_right_label(classifier, path, hint):
    crop = cv2.imread(str(path), cv2.IMREAD_COLOR)
    labels = [classifier.classify(v, hint).label for v in (crop, filled_160(crop), small_in_300(crop))]
    assert labels == [label_of(path)] * 3


def test_the_square_follows_the_cell_not_the_pixel_scale(classifier):
    crop = cv2.imread(str(next(p for p in SAMPLES if label_of(p) == "neutrophil")), cv2.IMREAD_COLOR)
    base = classifier.locate(crop)
    big = classifier.locate(cv2.resize(crop, None, fx=1.6, fy=1.6, interpolation=cv2.INTER_LINEAR))
    assert base.found and big.found
    assert big.side_px / base.side_px == pytest.approx(1.6, rel=0.1)
    h, w = crop.shape[:2]
    assert abs(base.cx - w / 2) < 0.15 * w and abs(base.cy - h / 2) < 0.15 * h
    # The hint only seeds the first measuring pass: a 2x wrong one moves the square by little.
    for hint in (0.06, 0.12, 0.3):
        assert classifier.locate(crop, hint).side_px == pytest.approx(base.side_px, rel=0.1)


def test_no_stained_cell_gives_the_central_square(classifier):
    plain = np.full((150, 120, 3), (246, 244, 248), np.uint8)  # plasma only
    square = classifier.locate(plain, 0.11)
    assert not square.found and square.side_px == 120
    p = classifier.probabilities(plain, 0.11)
    assert p.shape == (8,) and abs(float(p.sum()) - 1.0) < 0.05


def test_bad_input_is_refused_with_a_clear_error(classifier):
    with pytest.raises(ValueError, match="uint8 BGR"):
        classifier.classify(np.zeros((50, 50), np.uint8))
    for hint in (-1.0, 0.0):
        with pytest.raises(ValueError, match="positive"):
            classifier.classify(np.zeros((50, 50, 3), np.uint8), hint)

"""Training inputs that need no TensorFlow: BCCD's eye-read labels and the optical-density re-staining."""

from pathlib import Path

import numpy as np
import pytest

from models import data_bccd, data_pbc
from models.augment import JitterStrength, colour_jitter, restain
from models.detector_data import read_voc_wbc

BCCD = Path(__file__).resolve().parents[2].parent / "shared" / "datasets" / "bccd"
MAIN_CLASSES = {"neutrophil", "eosinophil", "lymphocyte", "monocyte", "basophil"}


def test_bccd_labels_are_known_classes_and_certain_only_where_named():
    cells = data_bccd.read_labels()
    assert len(cells) == 301
    assert {c.label for c in cells} <= MAIN_CLASSES | {"unknown"}
    assert all(c.label in MAIN_CLASSES for c in cells if c.certain)
    assert all(c.label in data_pbc.CLASSES for c in cells if c.certain)
    assert all(w > 0 and h > 0 for c in cells for _, _, w, h in [c.box])


def test_bccd_split_is_by_image_and_covers_every_certain_cell():
    train, evaluate = data_bccd.certain_cells("train"), data_bccd.certain_cells("eval")
    assert {c.image for c in train}.isdisjoint({c.image for c in evaluate})
    assert len(train) + len(evaluate) == sum(c.certain for c in data_bccd.read_labels())
    assert len(train) > 50 and len(evaluate) > 50
    # each half has more than neutrophils, or it would say nothing about the other classes
    assert len({c.label for c in evaluate}) >= 4


@pytest.mark.skipif(not BCCD.is_dir(), reason="../shared/datasets/bccd not present")
def test_bccd_labels_point_at_annotated_wbc_boxes():
    for cell in data_bccd.read_labels():
        assert cell.box in read_voc_wbc(BCCD / "Annotations" / f"{cell.image}.xml"), cell


def _stained_square() -> np.ndarray:
    x = np.full((64, 64, 3), (235, 225, 215), np.uint8)  # plain background
    x[20:44, 20:44] = (110, 60, 150)  # a purple "nucleus"
    return x


def test_restain_with_unit_factors_changes_nothing_visible():
    x = _stained_square()
    assert np.abs(restain(x, (1.0, 1.0, 1.0)).astype(int) - x).max() <= 1


def test_restain_darkens_the_stain_and_leaves_the_background():
    x = _stained_square()
    y = restain(x, (1.5, 1.5, 1.5))
    assert np.array_equal(y[0, 0], x[0, 0])
    assert (y[32, 32].astype(int) < x[32, 32]).all()
    paler = restain(x, (0.5, 0.5, 0.5))
    assert (paler[32, 32].astype(int) > x[32, 32]).all()


def test_stain_density_off_keeps_the_jitter_stream_unchanged():
    x = _stained_square()
    a = colour_jitter(x, np.random.default_rng(7))
    b = colour_jitter(x, np.random.default_rng(7), JitterStrength(stain_density_p=0.0))
    assert np.array_equal(a, b)
    c = colour_jitter(x, np.random.default_rng(7), JitterStrength(stain_density_p=1.0))
    assert not np.array_equal(a, c)

"""The shipped int8 WBC classifier: loads with ai_edge_litert, int8 in/out, documented shapes, and names a few
bundled PBC validation crops (never used for training) correctly.

The preprocessing here is written from ``models/wbc_classifier_spec.json`` alone, as the runtime must do it.
Sample crops: PBC, Acevedo et al., Data in Brief 30 (2020) 105474, doi:10.17632/snkd93bnjr.1, CC BY 4.0.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "models" / "wbc_classifier_int8.tflite"
LABELS = ROOT / "models" / "wbc_classifier_labels.txt"
SPEC = ROOT / "models" / "wbc_classifier_spec.json"
SAMPLES = sorted((Path(__file__).parent / "samples").glob("*__*.jpg"))
PBC = ROOT.parent / "shared" / "datasets" / "pbc"

from ai_edge_litert.interpreter import Interpreter  # a runtime dependency: its absence is a failure

from agent.inference.base import PREDICTION_CODES  # noqa: E402
from agent.inference.tflite_classifier import TfliteClassifier  # noqa: E402


@pytest.fixture(scope="module")
def spec():
    return json.loads(SPEC.read_text())


@pytest.fixture(scope="module")
def interp():
    it = Interpreter(model_path=str(MODEL), num_threads=1)
    it.allocate_tensors()
    return it


def test_files_exist_and_small():
    assert MODEL.exists() and LABELS.exists() and SPEC.exists()
    assert MODEL.stat().st_size < 1_000_000


def test_labels_match_spec(spec):
    labels = LABELS.read_text().split()
    assert labels == spec["classes"]
    assert sorted(labels) == sorted(
        ["basophil", "eosinophil", "erythroblast", "ig", "lymphocyte", "monocyte", "neutrophil", "platelet"]
    )


def test_int8_io_and_shapes(interp, spec):
    i, o = interp.get_input_details()[0], interp.get_output_details()[0]
    size = spec["input"]["size_px"]
    assert i["dtype"] == np.int8 and o["dtype"] == np.int8
    assert list(i["shape"]) == [1, size, size, 3] == spec["input"]["shape"]
    assert list(o["shape"]) == [1, len(spec["classes"])] == spec["output"]["shape"]
    assert i["quantization"] == pytest.approx((spec["input"]["scale"], spec["input"]["zero_point"]))
    assert i["quantization"] == pytest.approx((1.0, -128))
    assert o["quantization"] == pytest.approx((spec["output"]["scale"], spec["output"]["zero_point"]))


def test_samples_bundled():
    classes = {p.name.split("__")[0] for p in SAMPLES}
    assert len(SAMPLES) >= 8 and len(classes) == 8


@pytest.fixture(scope="module")
def classifier():
    return TfliteClassifier(ROOT / "models")


@pytest.mark.parametrize("path", SAMPLES, ids=[p.name for p in SAMPLES])
def test_runtime_classifies_validation_samples(classifier, path):
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    probs = classifier.probabilities(bgr)
    assert abs(float(probs.sum()) - 1.0) < 0.05
    result = classifier.classify(bgr)
    assert result.label == path.name.split("__")[0]
    assert result.prediction == PREDICTION_CODES[result.label]
    assert 0.0 < result.confidence <= 1.0


BCCD_SAMPLES = sorted((ROOT / "tests" / "models" / "samples_bccd").glob("*__*.jpg"))


def test_bccd_samples_bundled():
    assert len(BCCD_SAMPLES) == 8
    assert {p.name.split("__")[0] for p in BCCD_SAMPLES} == {"neutrophil", "eosinophil", "lymphocyte", "monocyte"}


@pytest.mark.parametrize("path", BCCD_SAMPLES, ids=[p.name for p in BCCD_SAMPLES])
def test_runtime_classifies_another_microscopes_cells(classifier, path):
    """Cells of another microscope and stain, from the part of BCCD the model was not trained on, cut as a scan
    cuts them, without a µm/px: the PBC-only model called pink-cytoplasm neutrophils like these eosinophil."""
    result = classifier.classify(cv2.imread(str(path), cv2.IMREAD_COLOR))
    assert result.label == path.name.split("__")[0]


def test_runtime_input_follows_the_spec(classifier, spec):
    size = spec["input"]["size_px"]
    crop = np.zeros((300, 200, 3), np.uint8)
    crop[:, :, 2] = 255  # pure red in BGR
    square = classifier.locate(crop, 0.5)
    assert not square.found and square.side_px == 200  # nothing stained: the central square
    tensor = classifier.input_tensor(crop, square)
    assert tensor.shape == (1, size, size, 3) and tensor.dtype == np.int8
    assert (tensor[0, :, :, 0] == 127).all() and (tensor[0, :, :, 2] == -128).all()  # RGB, uint8 - 128


def test_runtime_crop_is_the_training_crop(classifier, spec):
    """The model sees at run time exactly what training and the validation numbers fed it."""
    sys.path.insert(0, str(ROOT))
    try:
        from models import data_pbc
    finally:
        sys.path.remove(str(ROOT))
    assert spec["input"]["crop_factor"] == data_pbc.CROP_FACTOR
    for path in SAMPLES:
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        trained = data_pbc.canonical_crop(bgr, spec["input"]["size_px"], data_pbc.CROP_FACTOR)
        runtime = classifier.input_tensor(bgr, classifier.locate(bgr))[0].astype(np.int16) + 128
        assert np.array_equal(runtime.astype(np.uint8), trained)


def test_shipped_model_is_found_by_the_installed_package():
    found = TfliteClassifier()
    assert [p.name for p in found.model_files] == [MODEL.name, LABELS.name]
    assert all(p.is_file() for p in found.model_files)


@pytest.mark.skipif(not PBC.exists(), reason="PBC data set not beside the project")
def test_samples_are_from_validation_split():
    sys.path.insert(0, str(ROOT))
    try:
        from models import data_pbc
    finally:
        sys.path.remove(str(ROOT))
    split = data_pbc.make_split(PBC)
    val = {(p.name, data_pbc.CLASSES[c]) for p, c in split["val"]}
    for s in SAMPLES:
        label, name = s.name.split("__", 1)
        assert (name, label) in val

"""The shipped int8 WBC detector: loads with ai_edge_litert, int8 in/out with the spec's shapes, and finds the
WBCs of a few bundled BCCD images from the detector's held-back split (never used for training), and, when
the development data sets are present, exactly the two published cells of miLab 0152.

Sample images: BCCD Dataset (github.com/Shenggan/BCCD_Dataset), MIT; boxes from the CBC re-annotation
(github.com/MahmudulAlam/Complete-Blood-Cell-Count-Dataset), MIT. See detector_samples/README.md.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "models" / "wbc_detector_int8.tflite"
SPEC = ROOT / "models" / "wbc_detector_spec.json"
SAMPLES = sorted((Path(__file__).parent / "detector_samples").glob("*.jpg"))
MILAB_0152 = ROOT.parent / "shared" / "datasets" / "milab_stacks" / "0152"
BCCD_UM_PER_PX = 0.055
MILAB_UM_PER_PX = 0.11

from ai_edge_litert.interpreter import (
    Interpreter,  # a runtime dependency: its absence is a failure
)

from agent.inference.boxes import iou
from agent.inference.tflite_detector import TfliteDetector
from models.detector_data import read_voc_wbc

pytestmark = pytest.mark.skipif(not MODEL.exists(), reason="no detector model shipped in models/")


@pytest.fixture(scope="module")
def spec():
    return json.loads(SPEC.read_text())


@pytest.fixture(scope="module")
def detector():
    return TfliteDetector(num_threads=1)


def all_matched(pred, truth) -> bool:
    """Every truth box has its own prediction at IoU >= 0.5 and there is no other prediction."""
    if len(pred) != len(truth):
        return False
    free = list(pred)
    for t in sorted(truth, key=lambda t: -max(iou(p, t) for p in free) if free else 0):
        best = max(free, key=lambda p: iou(p, t), default=None)
        if best is None or iou(best, t) < 0.5:
            return False
        free.remove(best)
    return True


def test_files_exist_and_small(spec):
    assert SPEC.exists()
    assert spec["model"] == MODEL.name
    assert MODEL.stat().st_size < 1_000_000
    labels = MODEL.parent / spec["labels"]
    assert labels.read_text().split() == spec["classes"] == ["wbc"]


def test_int8_io_and_shapes(spec):
    it = Interpreter(model_path=str(MODEL), num_threads=1)
    it.allocate_tensors()
    inp = it.get_input_details()
    assert len(inp) == 1
    i = inp[0]
    h, w = spec["input"]["height_px"], spec["input"]["width_px"]
    assert i["dtype"] == np.int8
    assert list(i["shape"]) == [1, h, w, 3] == spec["input"]["shape"]
    assert i["quantization"] == (1.0, -128)
    outs = {int(o["shape"][-1]): o for o in it.get_output_details()}
    assert sorted(outs) == [1, 4]
    stride = spec["decode"]["stride"]
    for channels, key in ((1, "heat"), (4, "box")):
        o = outs[channels]
        assert o["dtype"] == np.int8
        assert list(o["shape"]) == [1, h // stride, w // stride, channels] == spec["outputs"][key]["shape"]
        assert o["quantization"][0] == pytest.approx(spec["outputs"][key]["scale"])
        assert o["quantization"][1] == spec["outputs"][key]["zero_point"]
    assert 0.2 <= spec["input"]["um_per_px"] <= 0.6


def test_samples_are_held_back(spec):
    assert len(SAMPLES) >= 2
    held_back = set(spec["holdout_names"])
    for path in SAMPLES:
        assert path.stem in held_back, f"{path.name} was used for training"


@pytest.mark.parametrize("path", SAMPLES, ids=[p.stem for p in SAMPLES])
def test_detects_bundled_bccd_samples(detector, path):
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    truth = read_voc_wbc(path.with_suffix(".xml"))
    found = detector.detect(image, BCCD_UM_PER_PX)
    assert all_matched([d.box for d in found], truth), (truth, found)
    assert all(0.0 < d.score <= 1.0 for d in found)


def test_empty_field_gives_no_box(detector):
    plasma = np.full((1200, 1920, 3), (246, 244, 248), np.uint8)
    assert detector.detect(plasma, MILAB_UM_PER_PX) == []


def test_large_field_is_tiled(detector, spec):
    """A field larger than the model input (6 x 6 copies of a bundled sample: 3840x2880 px at 0.055 um/px,
    960x720 at the model's scale, several tiles) gives each cell once, none twice at the tile seams."""
    path = SAMPLES[0]
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    truth = read_voc_wbc(path.with_suffix(".xml"))
    h, w = image.shape[:2]
    big = np.tile(image, (6, 6, 1))
    assert big.shape[0] * BCCD_UM_PER_PX / spec["input"]["um_per_px"] > spec["input"]["height_px"]
    shifted = [(x + i * w, y + j * h, bw, bh) for x, y, bw, bh in truth for i in range(6) for j in range(6)]
    boxes = [d.box for d in detector.detect(big, BCCD_UM_PER_PX)]
    assert all(iou(a, b) < 0.3 for k, a in enumerate(boxes) for b in boxes[k + 1:]), "duplicate boxes"
    matched = sum(1 for t in shifted if any(iou(p, t) >= 0.5 for p in boxes))
    assert matched >= 0.9 * len(shifted)
    assert len(boxes) <= 1.1 * len(shifted)


@pytest.mark.skipif(not MILAB_0152.exists(), reason="../shared/datasets/milab_stacks/0152 not present")
def test_milab_0152_two_cells_and_nothing_else(detector):
    truth = [tuple(c["location"]) for c in json.loads((MILAB_0152 / "cells.json").read_text())["cells"]]
    for plane in (4, 5, 6):
        path = next(MILAB_0152.glob(f"0152_*_{plane:03d}_*.jpg"))
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        found = detector.detect(image, MILAB_UM_PER_PX)
        assert all_matched([d.box for d in found], truth), (plane, truth, found)

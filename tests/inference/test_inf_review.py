"""inference.review_threshold: a cell classified with low confidence is flagged, and old fields.jsonl lines
without the flag still load."""

from __future__ import annotations

import json

import numpy as np

from agent.config import InferenceSettings
from agent.field_analysis import FieldAnalyzer, Plane
from agent.inference.base import Classification, Classifier, Detection, Detector, NoClassifier
from agent.results.record import CellRecord, FieldRecord, PlaneRecord


class _TwoCells(Detector):
    def detect(self, image, um_per_px):
        return [Detection((10, 10, 20, 20), 0.9), Detection((50, 50, 20, 20), 0.8)]


class _ConfidenceByPosition(Classifier):
    """Sure of the first cell, unsure of the second."""

    def __init__(self):
        self.calls = 0

    def classify(self, crop, um_per_px):
        self.calls += 1
        return Classification("neutrophil", 0.95 if self.calls == 1 else 0.4)


def _planes():
    rng = np.random.default_rng(0)
    return [Plane(i, rng.integers(0, 255, (100, 100, 3), dtype=np.uint8)) for i in range(2)]


def test_default_threshold_is_documented_range():
    assert 0.0 <= InferenceSettings().review_threshold <= 1.0


def test_low_confidence_cell_is_flagged():
    analyzer = FieldAnalyzer(_TwoCells(), _ConfidenceByPosition(), um_per_px=0.11, measure="laplacian_variance",
                             review_threshold=0.6)
    cells = analyzer.analyze(_planes()).cells
    assert [c.review for c in cells] == [False, True]
    assert [c.review_reasons for c in cells] == [(), ("low_confidence",)]


def test_zero_threshold_and_unclassified_cells_are_never_flagged():
    never = FieldAnalyzer(_TwoCells(), _ConfidenceByPosition(), um_per_px=0.11, measure="laplacian_variance",
                          review_threshold=0.0)
    assert not any(c.review for c in never.analyze(_planes()).cells)
    unclassified = FieldAnalyzer(_TwoCells(), NoClassifier(), um_per_px=0.11, measure="laplacian_variance",
                                 review_threshold=0.9)
    assert not any(c.review for c in unclassified.analyze(_planes()).cells)


def test_old_jsonl_lines_without_review_still_load():
    record = FieldRecord(1, 0, 0, [PlaneRecord(0, 1.0, 1, "a.jpg", True)], 0,
                         [CellRecord((1, 2, 3, 4), 2, "neutrophil", 0.4, 0.9, 0, review=True,
                                     review_reasons=("low_confidence",))], "laplacian_variance")
    line = json.loads(json.dumps(record.jsonl_record()))  # as a reader of fields.jsonl gets it
    assert line["cells"][0]["review"] is True
    assert line["cells"][0]["review_reasons"] == ["low_confidence"]
    assert FieldRecord.from_jsonl(line).cells[0] == record.cells[0]
    del line["cells"][0]["review"], line["cells"][0]["review_reasons"]
    old = FieldRecord.from_jsonl(line).cells[0]
    assert old.review is False and old.review_reasons == ()


class _SizedCells(Detector):
    """A platelet-sized box (20 px = 2.2 µm at 0.11 µm/px) and a WBC-sized one (100 px = 11 µm)."""

    def detect(self, image, um_per_px):
        return [Detection((5, 5, 20, 20), 0.9), Detection((120, 120, 100, 100), 0.9)]


class _SurePlatelet(Classifier):
    def classify(self, crop, um_per_px):
        return Classification("platelet", 0.99)


def _wide_planes():
    rng = np.random.default_rng(1)
    return [Plane(0, rng.integers(0, 255, (300, 300, 3), dtype=np.uint8))]


def test_wbc_sized_cell_called_platelet_is_flagged_however_sure():
    for threshold in (0.0, 0.6):
        analyzer = FieldAnalyzer(_SizedCells(), _SurePlatelet(), um_per_px=0.11, measure="laplacian_variance",
                                 review_threshold=threshold)
        cells = analyzer.analyze(_wide_planes()).cells
        assert [c.label for c in cells] == ["platelet", "platelet"]  # the answer stands; only the flag differs
        assert [c.review for c in cells] == [False, True]
        assert [c.review_reasons for c in cells] == [(), ("platelet_size",)]


def test_unsure_platelet_of_wbc_size_gives_both_reasons():
    class _UnsurePlatelet(Classifier):
        def classify(self, crop, um_per_px):
            return Classification("platelet", 0.3)

    analyzer = FieldAnalyzer(_SizedCells(), _UnsurePlatelet(), um_per_px=0.11, measure="laplacian_variance",
                             review_threshold=0.6)
    reasons = [c.review_reasons for c in analyzer.analyze(_wide_planes()).cells]
    assert reasons == [("low_confidence",), ("low_confidence", "platelet_size")]


def test_platelet_size_check_uses_the_scale():
    # The same 100 px box at 0.05 µm/px is 5 µm: a platelet can be that large, so it is not flagged.
    analyzer = FieldAnalyzer(_SizedCells(), _SurePlatelet(), um_per_px=0.05, measure="laplacian_variance",
                             review_threshold=0.6)
    assert not any(c.review for c in analyzer.analyze(_wide_planes()).cells)

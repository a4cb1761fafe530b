"""``analyze`` on the real miLab stack 0152: both published WBCs, nothing else, and a sensible best plane."""

from __future__ import annotations

import json
import shutil

import jsonschema
import pytest

from agent.inference.boxes import iou
from agent.results.names import parse_name
from agent.results.schema import consistency_errors, load_schema
from tests.conftest import MILAB_0152, needs_0152, run_cli

pytestmark = needs_0152


def published_boxes():
    return [c["location"] for c in json.loads((MILAB_0152 / "cells.json").read_text())["cells"]]


def stack_subset(tmp_path, planes):
    source = tmp_path / "in"
    source.mkdir()
    for path in MILAB_0152.glob("*.jpg"):
        if parse_name(path.name).stack_index in planes:
            shutil.copy(path, source / path.name)
    return source


@pytest.mark.parametrize("planes", [range(10), range(2, 10), range(0, 7), range(4, 10)],
                         ids=["all", "2-9", "0-6", "4-9"])
def test_analyze_finds_both_cells_and_a_best_plane_near_the_device_peak(tmp_path, planes):
    source = stack_subset(tmp_path, set(planes))
    out = tmp_path / "out"
    result = run_cli("analyze", str(source), "--out", str(out))
    assert result.returncode == 0, result.stderr
    doc = json.loads((out / "analyze_result.json").read_text())
    jsonschema.validate(doc, load_schema())
    assert consistency_errors(doc) == []
    assert list(doc) == ["151"]
    entry = doc["151"]
    names = [parse_name(p.name) for p in source.glob("*.jpg")]
    device_peak = max(names, key=lambda n: n.focus_measure).stack_index
    assert abs(parse_name(entry["img_name"]).stack_index - device_peak) <= 1
    boxes = [c["location"] for c in entry["cell_prediction"].values()]
    truth = published_boxes()
    assert len(boxes) == len(truth), boxes
    for t in truth:
        assert max(iou(b, t) for b in boxes) >= 0.5, (t, boxes)
    assert (out / "fields.jsonl").is_file()
    assert sorted(p.name for p in source.iterdir()) == sorted(n.filename() for n in names)  # input untouched


def test_undecodable_and_foreign_files_are_reported_and_ignored(tmp_path):
    source = stack_subset(tmp_path, set(range(3, 8)))
    (source / "0152_22800_54359_009_15111.jpg").write_bytes(b"truncated")
    (source / "readme.txt").write_text("ignored")
    out = tmp_path / "out"
    result = run_cli("analyze", str(source), "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "0152_22800_54359_009_15111.jpg" in result.stderr
    record = json.loads((out / "fields.jsonl").read_text().splitlines()[0])
    assert [p["stack_index"] for p in record["planes"]] == [3, 4, 5, 6, 7]

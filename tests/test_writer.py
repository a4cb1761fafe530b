import json
import os

import jsonschema
import numpy as np
import pytest

from agent.errors import DeviceBusyError, OutputError
from agent.results.record import CellRecord, FieldRecord, PlaneRecord
from agent.results.schema import consistency_errors, load_schema
from agent.results.writer import FIELDS_FILE, RESULT_FILE, ResultWriter


def record(number: int, cells: int = 1) -> FieldRecord:
    planes = [PlaneRecord(i, 1.0 + i, 10 + i, f"{number:04d}_100_200_{i:03d}_{10 + i}.jpg", True) for i in range(3)]
    return FieldRecord(
        image_number=number, x_um=100, y_um=200, planes=planes, best_plane=2,
        cells=[CellRecord((10 * k, 20, 30, 40), 9, "wbc", 0.0, 0.8, 1) for k in range(cells)],
        focus_measure="test",
    )


def test_fields_accumulate_into_a_valid_document(tmp_path):
    with ResultWriter(tmp_path, fsync=False) as writer:
        writer.add_field(record(1))
        writer.add_field(record(2, cells=0))
    doc = json.loads((tmp_path / RESULT_FILE).read_text())
    jsonschema.validate(doc, load_schema())
    assert consistency_errors(doc) == []
    assert doc["0"]["img_name"] == "0001_100_200_002_12.jpg"
    assert doc["0"]["cell_prediction"]["0"] == {"prediction": 9, "location": [0, 20, 30, 40], "focus": 1}
    assert doc["1"]["cell_prediction"] == {}


def test_torn_last_line_is_dropped_on_reload(tmp_path):
    with ResultWriter(tmp_path, fsync=False) as writer:
        writer.add_field(record(1))
        writer.add_field(record(2))
    with open(tmp_path / FIELDS_FILE, "ab") as handle:
        handle.write(b'{"image_number": 3, "x_u')  # a kill in the middle of an append
    with ResultWriter(tmp_path, fsync=False) as writer:
        records = writer.load_records()
    assert [r.image_number for r in records] == [1, 2]
    assert (tmp_path / FIELDS_FILE).read_bytes().endswith(b"}\n")


def test_records_survive_the_jsonl_round_trip(tmp_path):
    original = record(4, cells=2)
    with ResultWriter(tmp_path, fsync=False) as writer:
        writer.add_field(original)
        assert writer.load_records() == [original]


def test_partial_images_of_unfinished_fields_are_removed(tmp_path):
    for name in ("0001_1_1_000_5.jpg", "0002_1_1_000_5.jpg", "0002_1_1_001_5.jpg.tmp", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    with ResultWriter(tmp_path, fsync=False) as writer:
        writer.remove_partial_images({1})
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == [
        "0001_1_1_000_5.jpg", "notes.txt"]


def test_second_writer_on_the_same_directory_is_refused(tmp_path):
    with ResultWriter(tmp_path, fsync=False):
        with pytest.raises(DeviceBusyError, match="in use"):
            ResultWriter(tmp_path, fsync=False).open()


def test_unwritable_output_is_an_output_error(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(OutputError, match="cannot write"):
        ResultWriter(blocker / "sub", fsync=False).open()


def test_failed_write_leaves_the_previous_document_intact(tmp_path, monkeypatch):
    with ResultWriter(tmp_path, fsync=False) as writer:
        writer.add_field(record(1))
        before = (tmp_path / RESULT_FILE).read_bytes()

        def full_disk(*_args, **_kwargs):
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(os, "replace", full_disk)
        with pytest.raises(OutputError, match="disk full"):
            writer.write_plane("0002_1_1_000_1.jpg", np.zeros((8, 8, 3), np.uint8), 90)
        with pytest.raises(OutputError, match="disk full"):
            writer.add_field(record(2))
    assert (tmp_path / RESULT_FILE).read_bytes() == before
    assert not list(tmp_path.glob("*.tmp"))

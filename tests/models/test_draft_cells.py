"""A finished scan's cells become a cell list that, once a person confirms it, the training tools read."""

import json

import cv2
import numpy as np

from agent.results.names import format_name
from agent.results.record import CellRecord, FieldRecord, PlaneRecord
from agent.results.writer import ResultWriter
from models import data_pbc, device_cells, draft_cells


def _field(out, image_number, cells, kept=(True, True), failed=""):
    planes = []
    for stack_index in range(2):
        name = format_name(image_number, 1000 * image_number, 0, stack_index, 100 + stack_index)
        if kept[stack_index] and not failed:
            frame = np.full((300, 400, 3), 215, np.uint8)
            cv2.circle(frame, (200, 150), 30, (140, 60, 90), -1)
            cv2.imwrite(str(out / name), frame)
        planes.append(PlaneRecord(stack_index, 100.0 + stack_index, 100 + stack_index, name, kept[stack_index]))
    return FieldRecord(image_number, 1000 * image_number, 0, [] if failed else planes, 1, cells,
                       "laplacian_variance", failed=failed)


def _cell(label, focus, box=(160, 110, 80, 80)):
    return CellRecord(box, 1, label, 0.9, 0.8, focus)


def _scan(tmp_path):
    out = tmp_path / "scan"
    with ResultWriter(out, fsync=False) as writer:
        writer.add_field(_field(out, 1, [_cell("lymphocyte", 0), _cell("neutrophil", 1, (10, 20, 60, 50))]))
        writer.add_field(_field(out, 2, [_cell("monocyte", 1)]))
        writer.add_field(_field(out, 3, [], failed="camera stopped answering"))
        writer.add_field(_field(out, 4, [_cell("eosinophil", 0)], kept=(False, False)))
    (out / "manifest.json").write_text(json.dumps({"um_per_px": 0.11}))
    return out


def test_a_scan_drafts_unconfirmed_rows_in_each_cells_sharpest_kept_plane_parted_by_field(tmp_path):
    scan = _scan(tmp_path)
    cells, missing = draft_cells.draft(scan)
    assert [(c.image[:4], c.image.split("_")[3], c.box, c.label, c.part) for c in cells] == [
        ("0001", "000", (160, 110, 80, 80), "lymphocyte", "eval"),
        ("0001", "001", (10, 20, 60, 50), "neutrophil", "eval"),
        ("0002", "001", (160, 110, 80, 80), "monocyte", "train"),
    ]
    assert not any(c.certain for c in cells)
    assert missing == 1  # field 4 kept no JPEG


def test_the_written_list_reads_back_and_once_confirmed_gives_model_squares(tmp_path, capsys):
    scan = _scan(tmp_path)
    listed = tmp_path / "cells.csv"
    assert draft_cells.main([str(scan), "--out", str(listed)]) == 0
    assert "um_per_px: 0.11" in capsys.readouterr().err
    rows = device_cells.read_cells(listed)
    assert len(rows) == 3 and not any(c.usable for c in rows)

    listed.write_text(listed.read_text().replace(",no,", ",yes,"))
    usable = device_cells.usable_cells("eval", listed)
    x, y = device_cells.load_arrays(usable, scan, 0.11, 96, 2.5)
    assert x.shape == (2, 96, 96, 3) and x.dtype == np.uint8
    assert [data_pbc.CLASSES[i] for i in y] == ["lymphocyte", "neutrophil"]


def test_a_directory_without_fields_names_the_scans_inside_it(tmp_path, capsys):
    _scan(tmp_path)
    assert draft_cells.main([str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "not a finished scan's directory" in err and "scans inside it: scan" in err

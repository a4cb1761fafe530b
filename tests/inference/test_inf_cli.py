"""``wbcscope classify`` / ``detect``: JSON shape, per-file error entries, exit status."""

from __future__ import annotations

import json

import cv2

from tests.conftest import run_cli
from tests.inference.scale_variants import SAMPLES, label_of


def _bad_files(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0" + b"\x00garbage" * 20)
    return [text, corrupt, tmp_path / "missing.jpg"]


def test_classify_json_shape_and_error_entries(tmp_path):
    bad = _bad_files(tmp_path)
    result = run_cli("classify", str(SAMPLES[0]), *map(str, bad), "--um-per-px", "0.12", "--json")
    assert result.returncode == 0, result.stderr
    entries = json.loads(result.stdout)
    assert [e["path"] for e in entries] == [str(SAMPLES[0]), *map(str, bad)]
    good = entries[0]
    assert set(good) == {"path", "label", "prediction", "confidence"}
    assert good["label"] == label_of(SAMPLES[0])
    assert isinstance(good["prediction"], int) and 0.0 < good["confidence"] <= 1.0
    for entry in entries[1:]:
        assert set(entry) == {"path", "error"} and entry["error"]


def test_detect_json_shape(tmp_path):
    result = run_cli("detect", str(SAMPLES[0]), str(_bad_files(tmp_path)[0]), "--um-per-px", "0.12", "--json")
    assert result.returncode == 0, result.stderr
    good, bad = json.loads(result.stdout)
    assert set(good) == {"path", "cells"} and set(bad) == {"path", "error"}
    assert len(good["cells"]) >= 1
    for cell in good["cells"]:
        assert set(cell) == {"location", "score"}
        assert len(cell["location"]) == 4 and all(isinstance(v, int) for v in cell["location"])


def test_nothing_processed_is_an_error_and_plain_table_works(tmp_path):
    bad = _bad_files(tmp_path)
    result = run_cli("classify", *map(str, bad), "--json")
    assert result.returncode != 0
    assert all("error" in e for e in json.loads(result.stdout))
    table = run_cli("classify", str(SAMPLES[0]), "--um-per-px", "0.12")
    assert table.returncode == 0, table.stderr
    assert label_of(SAMPLES[0]) in table.stdout and "confidence" in table.stdout.splitlines()[0]


def test_grayscale_and_too_small_images_get_error_entries_not_confident_answers(tmp_path):
    crop = cv2.imread(str(SAMPLES[0]))
    gray, tiny, small = tmp_path / "gray.jpg", tmp_path / "tiny.png", tmp_path / "small.png"
    cv2.imwrite(str(gray), cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY))
    cv2.imwrite(str(tiny), crop[:15, :40])
    cv2.imwrite(str(small), cv2.resize(crop, (16, 16), interpolation=cv2.INTER_AREA))  # the smallest accepted
    result = run_cli("classify", str(gray), str(tiny), str(small), "--json")
    assert result.returncode == 0, result.stderr
    gray_entry, tiny_entry, small_entry = json.loads(result.stdout)
    assert "grayscale" in gray_entry["error"] and "40x15 px is too small" in tiny_entry["error"]
    assert set(small_entry) == {"path", "label", "prediction", "confidence"}
    detected = run_cli("detect", str(gray), "--json")
    assert detected.returncode != 0 and "grayscale" in json.loads(detected.stdout)[0]["error"]

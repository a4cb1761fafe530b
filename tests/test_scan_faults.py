"""A scan that cannot write stops with a clear error and leaves what it wrote intact; the WBC target
stops a scan early."""

from __future__ import annotations

import errno
import json

import jsonschema
import pytest

from agent.config import load_settings
from agent.errors import OutputError
from agent.results.schema import consistency_errors, load_schema
from agent.results.writer import ResultWriter
from agent.session import ScanSession


def zero_delay(**overrides):
    return load_settings(overrides={"simulation.realtime": False, "output.fsync": False, **overrides})


def test_disk_full_mid_scan_stops_with_output_error_and_keeps_earlier_fields(tmp_path, monkeypatch):
    real_write = ResultWriter.write_plane
    written = []

    def write_plane(self, filename, image, quality):
        if len(written) >= 25:  # two full fields and part of the third
            raise OutputError(f"disk full while writing {self.directory / filename}")
        written.append(filename)
        real_write(self, filename, image, quality)

    monkeypatch.setattr(ResultWriter, "write_plane", write_plane)
    test_dir = tmp_path / "full"
    with pytest.raises(OutputError, match="disk full"):
        ScanSession(zero_delay(**{"scan.fields": 5}), test_dir).run()
    doc = json.loads((test_dir / "analyze_result.json").read_text())
    jsonschema.validate(doc, load_schema())
    assert consistency_errors(doc) == []
    assert sorted(doc) == ["0", "1"]
    manifest = json.loads((test_dir / "manifest.json").read_text())
    assert manifest["status"] == "failed"


def test_real_enospc_from_the_os_is_reported_as_disk_full(tmp_path, monkeypatch):
    import os

    real_replace = os.replace
    calls = []

    def replace(src, dst):
        calls.append(dst)
        if len(calls) > 12:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OutputError, match="disk full"):
        ScanSession(zero_delay(**{"scan.fields": 3}), tmp_path / "t").run()


def test_wbc_target_stops_the_scan_early(tmp_path):
    summary = ScanSession(zero_delay(**{"scan.fields": 12, "scan.wbc_target": 2}), tmp_path / "t").run()
    assert summary.wbc >= 2
    assert summary.fields < 12
    assert summary.stopped_early and summary.stop_reason == "WBC target reached"
    manifest = json.loads((tmp_path / "t" / "manifest.json").read_text())
    assert manifest["status"] == "complete"

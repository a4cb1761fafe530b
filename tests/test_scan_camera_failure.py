"""A camera that stops delivering frames mid-scan is reopened once; a field it still cannot image is
marked failed (no images, no miLab entry) and the scan goes on; a camera that stays dead stops the
scan with a typed error. Never a hang."""

from __future__ import annotations

import json

import jsonschema
import pytest

from agent.assembly import build_analyzer, open_microscope
from agent.config import load_settings
from agent.errors import ScanAborted
from agent.hardware.camera import CameraTimeoutError
from agent.results.schema import load_schema
from agent.results.writer import ResultWriter
from agent.scan import ScanRunner
from agent.session import plan_for


def settings(fields: int):
    return load_settings(overrides={"simulation.realtime": False, "output.fsync": False, "scan.fields": fields})


def scan_with_dead_camera(tmp_path, fields: int, dead_after_frames: int, failing_captures: int | None):
    """The virtual camera stops delivering after some frames; with ``failing_captures`` it comes back
    after that many failed captures (a reopen and a retry fail: 2 per field)."""
    s = settings(fields)
    with ResultWriter(tmp_path, fsync=False) as writer, open_microscope(s) as scope:
        virtual = scope.camera.inner  # ResilientCamera wraps the adapter
        real_capture = virtual.capture
        state = {"frames": 0, "failures": 0}

        def capture(timeout_s=2.0, *, not_before_s=None):
            state["frames"] += 1
            dead = state["frames"] > dead_after_frames and (
                failing_captures is None or state["failures"] < failing_captures)
            if dead:
                state["failures"] += 1
                raise CameraTimeoutError("no frame within the timeout (test: sensor stopped)")
            return real_capture(timeout_s, not_before_s=not_before_s)

        virtual.capture = capture
        runner = ScanRunner(s, scope.stage, scope.camera, build_analyzer(s), writer)
        return runner.run(plan_for(s), []), scope.camera.reopen_count


def test_a_field_the_camera_cannot_image_is_marked_and_the_scan_goes_on(tmp_path):
    summary, reopens = scan_with_dead_camera(tmp_path, fields=4, dead_after_frames=30, failing_captures=2)
    assert reopens >= 1
    assert summary.fields == 4 and len(summary.failed_fields) == 1
    records = [json.loads(line) for line in (tmp_path / "fields.jsonl").read_text().splitlines()]
    failed = [r for r in records if r["failed"]]
    assert len(failed) == 1 and "camera" in failed[0]["failed"] and failed[0]["planes"] == []
    doc = json.loads((tmp_path / "analyze_result.json").read_text())
    jsonschema.validate(doc, load_schema())
    assert str(failed[0]["image_number"] - 1) not in doc
    assert len(doc) == 3


def test_a_camera_that_stays_dead_stops_the_scan(tmp_path):
    with pytest.raises(ScanAborted, match="camera failed on 3 fields in a row"):
        scan_with_dead_camera(tmp_path, fields=6, dead_after_frames=30, failing_captures=None)


def test_a_camera_that_recovers_on_reopen_loses_no_field(tmp_path):
    summary, reopens = scan_with_dead_camera(tmp_path, fields=3, dead_after_frames=20, failing_captures=1)
    assert reopens == 1
    assert summary.fields == 3 and summary.failed_fields == []
    assert len(json.loads((tmp_path / "analyze_result.json").read_text())) == 3

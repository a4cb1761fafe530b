"""A controller reset mid-scan (banner: position lost) stops the scan, or homes and carries on, as
``stage.on_position_loss`` says; it never keeps moving on stale coordinates."""

from __future__ import annotations

import json

import jsonschema
import pytest

from agent.assembly import build_analyzer, open_microscope
from agent.config import load_settings
from agent.errors import ScanAborted, WbcscopeError
from agent.results.schema import load_schema
from agent.results.writer import ResultWriter
from agent.scan import ScanRunner
from agent.session import plan_for


def settings(**overrides):
    return load_settings(overrides={"simulation.realtime": False, "output.fsync": False,
                                    "scan.fields": 5, **overrides})


def run_with_reset_after(s, tmp_path, fields_before_reset: int):
    with ResultWriter(tmp_path, fsync=False) as writer, open_microscope(s) as scope:
        def reset_controller(record):
            if record.image_number == fields_before_reset:
                scope.emulator.faults.reset()

        runner = ScanRunner(s, scope.stage, scope.camera, build_analyzer(s), writer, on_record=reset_controller)
        return runner.run(plan_for(s), [])


def test_reset_mid_scan_stops_the_scan_by_default(tmp_path):
    with pytest.raises(ScanAborted, match="position lost"):
        run_with_reset_after(settings(), tmp_path, fields_before_reset=2)
    doc = json.loads((tmp_path / "analyze_result.json").read_text())
    jsonschema.validate(doc, load_schema())
    assert 2 <= len(doc) < 5


def test_rehome_policy_homes_and_finishes_the_scan(tmp_path):
    s = settings(**{"simulation.stage_homing": True, "stage.home_on_connect": True,
                    "stage.on_position_loss": "rehome"})
    summary = run_with_reset_after(s, tmp_path, fields_before_reset=2)
    assert summary.fields == 5
    records = [json.loads(line) for line in (tmp_path / "fields.jsonl").read_text().splitlines()]
    assert [r["image_number"] for r in records] == [1, 2, 3, 4, 5]


def test_board_that_needs_homing_is_refused_unless_allowed(tmp_path):
    with pytest.raises(WbcscopeError, match="needs homing"):
        with open_microscope(settings(**{"simulation.stage_homing": True})):
            pass

"""Calibration on the zero-delay virtual microscope with a known scale, rotation, mirror and backlash."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest

from agent.assembly import open_microscope
from agent.calibration import (CALIBRATION_FILE, Bench, Calibration, FlatField, calibrate, decompose,
                               measure_shift_px)
from agent.config import load_settings
from agent.hardware.virtual_slide import VirtualSlide

UM_PER_PX = 0.11


def _settings(**sim):
    overrides = {"simulation.realtime": False, "camera.width_px": 480, "camera.height_px": 360}
    overrides.update({f"simulation.{k}": v for k, v in sim.items()})
    return load_settings(None, overrides)


def _calibrate(settings, tmp_path: Path | None, **kw) -> Calibration:
    with open_microscope(settings) as scope:
        scope.stage.move_to(5000.0, 5000.0, scope.slide.focus_z_um(5000.0, 5000.0))
        return calibrate(Bench(scope.stage, scope.camera, overshoot_um=30.0), centre_um=(5000.0, 5000.0),
                         guess_um_per_px=0.1, out_dir=tmp_path, **kw)


@pytest.mark.parametrize("rotation_deg, flip, backlash_um", [(3.5, True, (4.0, 2.5)), (-12.0, False, (0.0, 6.0))])
def test_recovers_scale_rotation_flip_and_backlash(rotation_deg, flip, backlash_um, tmp_path: Path) -> None:
    settings = _settings(camera_rotation_deg=rotation_deg, camera_flip=flip, xy_backlash_um=list(backlash_um))
    cal = _calibrate(settings, tmp_path, flat_field=False)
    assert cal.um_per_px == pytest.approx(UM_PER_PX, rel=0.01)
    assert abs(cal.rotation_deg - rotation_deg) < 0.2
    assert cal.flipped is flip
    assert cal.backlash_um[0] == pytest.approx(backlash_um[0], abs=1.0)
    assert cal.backlash_um[1] == pytest.approx(backlash_um[1], abs=1.0)
    saved = json.loads((tmp_path / CALIBRATION_FILE).read_text())
    assert saved["date_utc"] and saved["residual_um"] < 0.1 and saved["flat_field_file"] is None
    assert Calibration.load(tmp_path / CALIBRATION_FILE) == cal
    words = cal.describe()
    assert "µm per pixel" in words and ("mirrored left-right" in words) is flip


def test_flat_field_from_a_median_of_fields_evens_the_illumination(tmp_path: Path) -> None:
    cal = _calibrate(_settings(), tmp_path, flat_fields=9)
    assert "median of 9 fields" in cal.flat_field_method
    flat = FlatField.for_config(tmp_path)
    assert flat is not None
    ref = flat.reference.mean(axis=2)
    h, w = ref.shape
    # The reference must follow the optics' illumination falloff (6 % at the corners), not the cells.
    from agent.hardware.optics import Optics

    vignette = Optics()._vignette(w, h)
    assert np.corrcoef(ref.ravel(), vignette.ravel())[0, 1] > 0.85
    even = flat.apply(np.full((360, 480, 3), 200, np.uint8)).astype(float)
    assert even[:36, :48].mean() > even[155:190, 240:290].mean()  # corners are lifted


def test_flat_field_from_a_blank_area() -> None:
    with open_microscope(_settings()) as scope:
        bench = Bench(scope.stage, scope.camera, overshoot_um=30.0)
        from agent.calibration import record_flat_field

        flat, method = record_flat_field(bench, blank_um=(5000.0, 5000.0), centre_um=(5000.0, 5000.0),
                                         field_um=50.0, frames=3)
    assert "blank area" in method and flat.reference.shape[2] == 3


def test_shift_measurement_is_sub_pixel() -> None:
    slide = VirtualSlide()
    a = slide.render(5000.0, 5000.0, 480, 360, UM_PER_PX)
    b = slide.render(5000.0 + 37 * UM_PER_PX, 5000.0 - 11 * UM_PER_PX, 480, 360, UM_PER_PX)
    dx, dy, response = measure_shift_px(a, b)
    assert dx == pytest.approx(-37, abs=0.1) and dy == pytest.approx(11, abs=0.1) and response > 0.3


def test_decompose_round_trip() -> None:
    t = np.radians(20.0)
    p = 0.2 * np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]]) @ np.diag([-1.0, 1.0])
    s, deg, flipped = decompose(p)
    assert s == pytest.approx(0.2) and deg == pytest.approx(20.0) and flipped


def test_calibrate_command(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from agent import calibrate_cli

    config = tmp_path / "scope.toml"
    config.write_text("[camera]\nwidth_px = 320\nheight_px = 240\n[simulation]\nrealtime = false\n")
    parser = argparse.ArgumentParser()
    calibrate_cli.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["calibrate", "--config", str(config), "--no-flat-field", "--overshoot-um", "20"])
    assert calibrate_cli.run(args) == 0
    out = capsys.readouterr().out
    assert "µm per pixel" in out and (tmp_path / CALIBRATION_FILE).exists()
    # The config now points at the calibration, and loading it uses the measured scale.
    assert 'calibration = "calibration.json"' in config.read_text()
    assert "width_px = 320" in config.read_text()
    measured = json.loads((tmp_path / CALIBRATION_FILE).read_text())["um_per_px"]
    assert load_settings(config).camera.um_per_px == pytest.approx(measured)

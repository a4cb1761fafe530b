"""The scan's focuser: on the zero-delay virtual microscope against the slide's truth, and on fakes."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from agent.acquisition.autofocus import build_focuser
from agent.assembly import measure_name, open_microscope
from agent.config import Settings
from agent.hardware.camera import Frame
from agent.session import plan_for


class FakeStage:
    def __init__(self) -> None:
        self.x_um = self.y_um = 0.0
        self.z_um = 500.0

    def move_to(self, x_um=None, y_um=None, z_um=None, *, wait=True, timeout_s=30.0) -> None:
        self.x_um = self.x_um if x_um is None else x_um
        self.y_um = self.y_um if y_um is None else y_um
        self.z_um = self.z_um if z_um is None else z_um


class FakeCamera:
    """A random texture blurred by the distance to ``focus_z_um(x, y)``; flat grey if that is None."""

    def __init__(self, stage: FakeStage, focus_z_um) -> None:
        self.stage = stage
        self.focus_z_um = focus_z_um
        self.texture = np.random.default_rng(5).integers(60, 200, (96, 128, 3)).astype(np.uint8)
        self.frames = 0

    def capture(self, timeout_s: float = 2.0) -> Frame:
        self.frames += 1
        z0 = self.focus_z_um(self.stage.x_um, self.stage.y_um)
        if z0 is None:
            return Frame(np.full_like(self.texture, 128), 0.0)
        sigma_px = 0.4 + 1.2 * abs(self.stage.z_um - z0)
        return Frame(cv2.GaussianBlur(self.texture, (0, 0), sigma_px), 0.0)


def fake_settings() -> Settings:
    s = Settings()
    s.focus.downsample = 1  # the fake frames are already small
    return s


def test_flat_curve_marks_the_field_with_a_reason():
    stage = FakeStage()
    camera = FakeCamera(stage, lambda x, y: None)
    focuser = build_focuser(fake_settings(), stage, camera, "laplacian_variance")
    result = focuser.focus_field(1000.0, 1000.0)
    assert not result.success
    assert "flat" in result.reason
    assert result.frames == camera.frames == len(result.curve)
    assert result.frames <= 5  # flagged after one widening, no second search
    assert result.as_dict()["success"] is False
    # A failed field never enters the map: the next field is searched cold again.
    assert focuser.predict(1200.0, 1000.0) is None


def test_remembered_fields_make_the_next_field_warm():
    tilt = lambda x, y: 500.0 + 0.001 * x
    stage = FakeStage()
    camera = FakeCamera(stage, tilt)
    focuser = build_focuser(fake_settings(), stage, camera, "laplacian_variance")
    for x in (1000.0, 1200.0, 1400.0):
        focuser.remember(x, 1000.0, tilt(x, 1000.0))
    stage.move_to(x_um=1600.0, y_um=1000.0)
    result = focuser.focus_field(1600.0, 1000.0)
    assert result.success
    assert result.frames == 3
    assert abs(result.z_um - tilt(1600.0, 1000.0)) <= 0.5


def test_focus_far_from_the_start_is_still_found():
    stage = FakeStage()
    camera = FakeCamera(stage, lambda x, y: 507.0)
    result = build_focuser(fake_settings(), stage, camera, "laplacian_variance").focus_field(0.0, 0.0)
    assert result.success, result.reason
    assert abs(result.z_um - 507.0) <= 0.5


@pytest.fixture(scope="module")
def virtual_run():
    settings = Settings()
    settings.simulation.realtime = False
    settings.scan.fields = 5
    results = []
    with open_microscope(settings) as scope:
        focuser = build_focuser(settings, scope.stage, scope.camera, measure_name(settings))
        for f in plan_for(settings):
            scope.stage.move_to(x_um=f.x_um, y_um=f.y_um, timeout_s=60)
            result = focuser.focus_field(f.x_um, f.y_um)
            results.append((result, scope.slide.focus_z_um(f.x_um, f.y_um)))
    return results


def test_virtual_microscope_cold_field_is_found_in_six_frames(virtual_run):
    result, truth = virtual_run[0]
    assert result.success, result.reason
    assert result.frames <= 6
    assert abs(result.z_um - truth) <= 0.5


def test_virtual_microscope_warm_fields_take_three_frames(virtual_run):
    for result, truth in virtual_run[1:]:
        assert result.success, result.reason
        assert result.frames <= 3
        assert abs(result.z_um - truth) <= 0.5
        assert len(result.curve) == result.frames

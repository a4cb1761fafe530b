"""Blank glass (no cells) is flagged after a short widening, on the real virtual camera and optics."""

from __future__ import annotations

import numpy as np

from agent.acquisition.autofocus import FLAT_REASON, build_focuser
from agent.assembly import build_slide, build_virtual_camera, measure_name
from agent.config import Settings
from agent.hardware.virtual_slide import PLASMA_BGR, VirtualSlide


class BlankSlide(VirtualSlide):
    """The virtual slide with the smear wiped off: lit plasma/glass only (its slow stain waves stay)."""

    def render(self, x_um: float, y_um: float, width_px: int, height_px: int, um_per_px: float) -> np.ndarray:
        ox, oy = self._origin_px(x_um, y_um, width_px, height_px, um_per_px)
        light = self._plasma_light(ox, oy, width_px, height_px, um_per_px)
        return np.clip(light[:, :, None] * np.asarray(PLASMA_BGR, np.float32), 0, 255).astype(np.uint8)


class Stage:
    def __init__(self) -> None:
        self.x_um, self.y_um, self.z_um = 10000.0, 10000.0, 500.0

    def move_to(self, x_um=None, y_um=None, z_um=None, *, wait=True, timeout_s=30.0) -> None:
        self.x_um = self.x_um if x_um is None else x_um
        self.y_um = self.y_um if y_um is None else y_um
        self.z_um = self.z_um if z_um is None else z_um


def test_blank_glass_is_flagged_in_a_few_frames():
    settings = Settings()
    settings.simulation.realtime = False
    stage = Stage()
    slide = BlankSlide(build_slide(settings).settings)
    camera = build_virtual_camera(settings, slide, lambda: (stage.x_um, stage.y_um, stage.z_um))
    camera.open()
    try:
        focuser = build_focuser(settings, stage, camera, measure_name(settings))
        cold = focuser.focus_field(stage.x_um, stage.y_um)
        assert not cold.success
        assert FLAT_REASON in cold.reason
        assert cold.frames <= 5  # the bracket, one widening on both sides, and no second search
        # With a prediction (a field next to focused ones) it is flagged as quickly.
        for dx in (-600.0, -400.0, -200.0):
            focuser.remember(stage.x_um + dx, stage.y_um, slide.focus_z_um(stage.x_um + dx, stage.y_um))
        warm = focuser.focus_field(stage.x_um, stage.y_um)
        assert not warm.success and FLAT_REASON in warm.reason
        assert warm.frames <= 5
    finally:
        camera.close()

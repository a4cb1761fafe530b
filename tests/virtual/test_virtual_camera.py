"""The virtual camera: the Camera port over slide + optics, with and without real-time pacing."""

from __future__ import annotations

import time

import numpy as np
import pytest

from agent.errors import CameraError
from agent.hardware.optics import Optics
from agent.hardware.virtual_camera import VirtualCamera
from agent.hardware.virtual_slide import VirtualSlide


class Stage:
    def __init__(self, x_um: float, y_um: float, z_um: float) -> None:
        self.pos = (x_um, y_um, z_um)

    def __call__(self) -> tuple[float, float, float]:
        return self.pos


@pytest.fixture(scope="module")
def slide() -> VirtualSlide:
    return VirtualSlide()


def make(slide: VirtualSlide, stage: Stage, **kw) -> VirtualCamera:
    kw.setdefault("width_px", 320)
    kw.setdefault("height_px", 200)
    return VirtualCamera(slide, Optics(), stage, **kw)


def test_capture_before_open_raises(slide: VirtualSlide) -> None:
    cam = make(slide, Stage(5000.0, 5000.0, 500.0), realtime=False)
    with pytest.raises(CameraError):
        cam.capture()
    cam.open()
    cam.close()
    cam.close()  # safe twice
    with pytest.raises(CameraError):
        cam.capture()


def test_not_realtime_never_sleeps(slide: VirtualSlide, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_sleep(_s: float) -> None:
        raise AssertionError("slept")

    monkeypatch.setattr(time, "sleep", no_sleep)
    stage = Stage(5000.0, 5000.0, 0.0)
    stage.pos = (5000.0, 5000.0, slide.focus_z_um(5000.0, 5000.0) + 1.0)
    with make(slide, stage, realtime=False, frame_rate_hz=1.0, exposure_s=0.5) as cam:
        assert cam.resolution_px == (320, 200)
        a, b = cam.capture(), cam.capture()
    assert a.image.shape == (200, 320, 3) and a.image.dtype == np.uint8
    assert not np.array_equal(a.image, b.image)  # same field, fresh noise
    assert np.abs(a.image.astype(int) - b.image.astype(int)).mean() < 5
    assert b.timestamp_s >= a.timestamp_s
    assert a.metadata["dz_um"] == pytest.approx(1.0)
    assert a.metadata["x_um"] == 5000.0 and a.metadata["exposure_s"] == 0.5


def test_frames_follow_the_stage(slide: VirtualSlide) -> None:
    stage = Stage(5000.0, 5000.0, slide.focus_z_um(5000.0, 5000.0))
    with make(slide, stage, realtime=False) as cam:
        sharp = cam.capture().image
        stage.pos = (5000.0, 5000.0, stage.pos[2] + 6.0)
        blurred = cam.capture().image
        stage.pos = (5100.0, 5000.0, stage.pos[2] - 6.0)
        moved = cam.capture().image
    assert blurred.astype(float).std() < sharp.astype(float).std()
    assert np.abs(moved.astype(int) - sharp.astype(int)).mean() > 10


def test_realtime_waits_for_a_fresh_frame(slide: VirtualSlide) -> None:
    stage = Stage(5000.0, 5000.0, 500.0)
    with make(slide, stage, realtime=True, frame_rate_hz=100.0, exposure_s=0.004) as cam:
        for _ in range(3):
            called = time.monotonic()
            frame = cam.capture(timeout_s=1.0)
            returned = time.monotonic()
            assert frame.timestamp_s >= called
            assert frame.timestamp_s - called <= 0.01 + 1e-3
            assert returned >= frame.timestamp_s + 0.004


def test_realtime_timeout(slide: VirtualSlide) -> None:
    with make(slide, Stage(5000.0, 5000.0, 500.0), realtime=True, frame_rate_hz=1.0, exposure_s=0.5) as cam:
        cam.capture(timeout_s=2.0)  # lands just after a frame boundary
        with pytest.raises(CameraError):
            cam.capture(timeout_s=0.01)


def test_bad_settings_rejected(slide: VirtualSlide) -> None:
    with pytest.raises(ValueError):
        make(slide, Stage(0.0, 0.0, 0.0), frame_rate_hz=30.0, exposure_s=0.1)

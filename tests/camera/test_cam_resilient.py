"""Frames you can trust: stale frames discarded, typed timeouts, a dead pipeline reopened."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from agent.errors import CameraError
from agent.hardware.camera import Camera, CameraTimeoutError, Frame
from agent.hardware.optics import Optics
from agent.hardware.resilient_camera import ResilientCamera
from agent.hardware.virtual_camera import VirtualCamera
from agent.hardware.virtual_slide import VirtualSlide


class StallingCamera(Camera):
    """Delivers ``frames_per_open`` frames after each open, then its capture blocks (a dead pipeline).

    ``blocks_forever`` makes the stall ignore the timeout, as a read stuck in a driver would.
    """

    def __init__(self, frames_per_open: list[int], *, blocks_forever: bool = False) -> None:
        self.plan = list(frames_per_open)
        self.blocks_forever = blocks_forever
        self.left = 0
        self.opens = 0
        self.closes = 0
        self.exposures: list[float] = []
        self._released = threading.Event()

    @property
    def resolution_px(self) -> tuple[int, int]:
        return (8, 8)

    def open(self) -> None:
        self.opens += 1
        self._released = threading.Event()  # a fresh pipeline; a stuck read holds the old one
        self.left = self.plan.pop(0) if self.plan else 0

    def close(self) -> None:
        self.closes += 1
        self._released.set()

    def set_exposure(self, exposure_us: float) -> None:
        self.exposures.append(exposure_us)

    def capture(self, timeout_s: float = 2.0, *, not_before_s: float | None = None) -> Frame:
        if self.left <= 0:
            if self.blocks_forever:
                released = self._released
                released.wait()  # only closing the camera lets go of it
                raise CameraError("pipeline torn down")
            time.sleep(timeout_s)
            raise CameraTimeoutError(f"no frame within {timeout_s} s")
        self.left -= 1
        return Frame(np.zeros((8, 8, 3), np.uint8), time.monotonic(), {"n": self.left})


def test_a_stalled_camera_is_reopened_once_and_recovers() -> None:
    inner = StallingCamera([2, 5])
    cam = ResilientCamera(inner)
    cam.open()
    cam.set_exposure(4000.0)
    for _ in range(4):
        cam.capture(timeout_s=0.05)
    assert inner.opens == 2 and cam.reopen_count == 1
    assert inner.exposures == [4000.0, 4000.0]  # the setting came back after the reopen
    cam.close()


def test_a_dead_camera_raises_the_typed_error_after_one_reopen() -> None:
    inner = StallingCamera([1, 0])
    cam = ResilientCamera(inner)
    cam.open()
    cam.capture(timeout_s=0.05)
    with pytest.raises(CameraTimeoutError, match="after reopening"):
        cam.capture(timeout_s=0.05)
    assert inner.opens == 2


def test_an_adapter_stuck_in_a_driver_call_does_not_hang_the_caller() -> None:
    inner = StallingCamera([0, 1], blocks_forever=True)
    cam = ResilientCamera(inner, grace_s=0.05)
    cam.open()
    frame = cam.capture(timeout_s=0.05)  # stuck, presumed dead, reopened, then delivers
    assert frame.image.shape == (8, 8, 3) and inner.closes >= 1
    with pytest.raises(CameraTimeoutError):
        cam.capture(timeout_s=0.05)
    cam.close()


@pytest.fixture(scope="module")
def slide() -> VirtualSlide:
    return VirtualSlide()


def test_virtual_camera_honours_not_before(slide: VirtualSlide) -> None:
    pos = lambda: (5000.0, 5000.0, 500.0)  # noqa: E731
    with VirtualCamera(slide, Optics(), pos, width_px=128, height_px=96, realtime=True,
                       frame_rate_hz=100.0, exposure_s=0.002) as cam:
        later = time.monotonic() + 0.03
        frame = cam.capture(timeout_s=1.0, not_before_s=later)
        assert frame.timestamp_s >= later
        with pytest.raises(CameraTimeoutError):
            cam.capture(timeout_s=0.01, not_before_s=time.monotonic() + 0.5)
    with VirtualCamera(slide, Optics(), pos, width_px=128, height_px=96, realtime=False) as cam:
        later = time.monotonic() + 10.0
        assert cam.capture(not_before_s=later).timestamp_s >= later  # zero-delay: stamped, never sleeps


def test_virtual_camera_controls(slide: VirtualSlide) -> None:
    cam = VirtualCamera(slide, Optics(), lambda: (5000.0, 5000.0, 500.0), width_px=64, height_px=64,
                        realtime=False)
    cam.set_exposure(5000.0)
    cam.set_gain(2.0)
    locked = cam.lock_auto()
    assert locked.exposure_us == pytest.approx(5000.0) and locked.analogue_gain == 2.0
    with pytest.raises(CameraError):
        cam.set_exposure(1e6)  # longer than the frame period

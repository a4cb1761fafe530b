"""The picamera2 adapter against a stand-in ``picamera2`` module that records what is asked of it."""

from __future__ import annotations

import sys
import time
import types

import numpy as np
import pytest

from agent.errors import CameraError, DeviceBusyError
from agent.hardware.camera import CameraTimeoutError
from agent.hardware.picamera2_camera import Picamera2Camera


class FakeRequest:
    def __init__(self, cam: "FakePicamera2", ts_ns: int) -> None:
        self.cam, self.ts_ns, self.released = cam, ts_ns, False

    def make_array(self, stream: str) -> np.ndarray:
        if stream == "main":
            w, h = self.cam.config["main"]["size"]
            return np.full((h, w, 3), (10, 20, 30), np.uint8)
        w, h = self.cam.config["lores"]["size"]
        return np.full((h * 3 // 2, w), 128, np.uint8)

    def get_metadata(self) -> dict:
        return {**self.cam.metadata, "SensorTimestamp": self.ts_ns}

    def release(self) -> None:
        self.released = True


class FakePicamera2:
    instances: list["FakePicamera2"] = []
    busy = False

    def __init__(self, camera_num: int = 0, tuning: dict | None = None) -> None:
        if FakePicamera2.busy:
            raise RuntimeError("Failed to acquire camera: Device or resource busy")
        self.camera_num, self.tuning = camera_num, tuning
        self.calls: list = []
        self.controls: dict = {}
        self.requests: list[FakeRequest] = []
        self.camera_properties = {"PixelArraySize": (4056, 3040)}
        self.metadata = {"ExposureTime": 8000, "AnalogueGain": 2.0, "ColourGains": (1.8, 1.5)}
        self.stale_frames = 0  # frames exposed before the capture was asked for
        self.stalled = False
        FakePicamera2.instances.append(self)

    @staticmethod
    def load_tuning_file(name: str, dir: str | None = None) -> dict:
        return {"file": name, "dir": dir}

    def create_still_configuration(self, main=None, lores=None, buffer_count=None, controls=None) -> dict:
        self.calls.append(("create_still_configuration", main, lores))
        return {"main": dict(main), "lores": dict(lores), "controls": dict(controls or {})}

    def configure(self, config: dict) -> None:
        self.config = config
        self.controls.update(config["controls"])
        if "ExposureTime" in config["controls"]:
            self.metadata["ExposureTime"] = config["controls"]["ExposureTime"]
        self.calls.append("configure")

    def start(self) -> None:
        self.calls.append("start")

    def stop(self) -> None:
        self.calls.append("stop")

    def close(self) -> None:
        self.calls.append("close")

    def set_controls(self, controls: dict) -> None:
        self.calls.append(("set_controls", dict(controls)))
        self.controls.update(controls)
        if "ExposureTime" in controls:
            self.metadata["ExposureTime"] = controls["ExposureTime"]

    def capture_request(self, wait=None, flush=None):
        self.calls.append(("capture_request", flush))
        if self.stale_frames:
            self.stale_frames -= 1
            ts = time.monotonic_ns() - 1_000_000_000
        else:
            ts = time.monotonic_ns()
        return ("request", ts)

    def capture_metadata(self, wait=None):
        return ("metadata", time.monotonic_ns())

    def wait(self, job, timeout=None):
        if self.stalled:
            raise TimeoutError()
        kind, ts = job
        if kind == "metadata":
            return dict(self.metadata)
        request = FakeRequest(self, ts)
        self.requests.append(request)
        return request


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch):
    module = types.ModuleType("picamera2")
    module.Picamera2 = FakePicamera2
    FakePicamera2.instances = []
    FakePicamera2.busy = False
    monkeypatch.setitem(sys.modules, "picamera2", module)
    return FakePicamera2


def test_constructing_imports_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "picamera2", None)  # importing it would fail
    cam = Picamera2Camera()
    with pytest.raises(CameraError, match="python3-picamera2"):
        cam.open()
    cam.close()


def test_fixed_controls_are_locked_from_the_start(fake) -> None:
    cam = Picamera2Camera(exposure_us=5000, analogue_gain=1.5, colour_gains=(2.0, 1.4), tuning_file="/opt/t/scope.json")
    cam.open()
    pc = fake.instances[0]
    assert pc.tuning == {"file": "scope.json", "dir": "/opt/t"}
    create = pc.calls[0]
    assert create[0] == "create_still_configuration"
    assert create[1] == {"size": (4056, 3040), "format": "RGB888"}  # full resolution, OpenCV byte order
    assert create[2]["format"] == "YUV420" and create[2]["size"] == (640, 480)
    assert pc.calls[1:3] == ["configure", "start"]
    assert pc.controls == {"AeEnable": False, "AwbEnable": False, "ExposureTime": 5000, "AnalogueGain": 1.5,
                           "ColourGains": (2.0, 1.4)}
    assert cam.resolution_px == (4056, 3040)
    frame = cam.capture(timeout_s=1.0)
    assert frame.image.shape == (3040, 4056, 3) and tuple(frame.image[0, 0]) == (10, 20, 30)
    assert frame.metadata["exposure_us"] == 5000
    assert all(r.released for r in pc.requests)
    assert cam.controls().auto_exposure is False and cam.controls().colour_gains == (2.0, 1.4)
    preview = cam.capture_preview()
    assert preview.shape == (480, 640, 3)
    cam.close()
    cam.close()  # safe twice
    assert pc.calls[-2:] == ["stop", "close"]


def test_auto_exposure_settles_then_locks_what_it_found(fake) -> None:
    cam = Picamera2Camera(size_px=(1920, 1080), auto_exposure=True, settle_frames=3)
    cam.open()
    pc = fake.instances[0]
    assert pc.config["controls"] == {"AeEnable": True, "AwbEnable": True}
    locks = [c[1] for c in pc.calls if isinstance(c, tuple) and c[0] == "set_controls"]
    assert locks[-1] == {"AeEnable": False, "AwbEnable": False, "ExposureTime": 8000, "AnalogueGain": 2.0,
                         "ColourGains": (1.8, 1.5)}
    cam.unlock_auto()
    assert pc.controls["AeEnable"] is True and pc.controls["AwbEnable"] is True
    cam.set_exposure(12000)
    assert pc.controls["ExposureTime"] == 12000 and pc.controls["AeEnable"] is False
    cam.close()


def test_frames_exposed_before_not_before_are_discarded(fake) -> None:
    cam = Picamera2Camera(colour_gains=(1.0, 1.0))
    cam.open()
    pc = fake.instances[0]
    pc.stale_frames = 2
    settled = time.monotonic()
    frame = cam.capture(timeout_s=1.0, not_before_s=settled)
    assert frame.timestamp_s >= settled
    captures = [c for c in pc.calls if isinstance(c, tuple) and c[0] == "capture_request"]
    assert len(captures) == 3 and captures[0][1] == int(settled * 1e9)
    assert all(r.released for r in pc.requests)  # discarded frames go back to libcamera too
    cam.close()


def test_errors_are_typed(fake) -> None:
    cam = Picamera2Camera(colour_gains=(1.0, 1.0))
    with pytest.raises(CameraError):
        cam.capture()
    cam.open()
    fake.instances[0].stalled = True
    with pytest.raises(CameraTimeoutError):
        cam.capture(timeout_s=0.05)
    cam.close()
    fake.busy = True
    with pytest.raises(DeviceBusyError, match="device busy"):
        Picamera2Camera().open()

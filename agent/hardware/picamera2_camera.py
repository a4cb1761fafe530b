"""Camera adapter for Raspberry Pi cameras through picamera2 (libcamera).

picamera2 comes from Raspberry Pi OS's packages (``python3-picamera2``), not from PyPI, so it is
imported only inside ``open``: the rest of the agent, and every machine without it, never needs it.

One still configuration is used for the whole session: the main stream at the sensor's full
resolution (or ``size_px``) in OpenCV's channel order, plus a small "lores" stream for the live
preview. Exposure, gain and white balance are locked while the camera is open, so every field of a
scan is exposed alike: either to the configured values straight away, or (``auto_exposure=True``)
to whatever auto-exposure and auto white balance settle on during the first frames.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from agent.errors import CameraError, DeviceBusyError
from agent.hardware.camera import Camera, CameraControls, CameraTimeoutError, Frame

log = logging.getLogger(__name__)

# picamera2's "RGB888" is libcamera's little-endian naming: the bytes in memory are B, G, R, which is
# exactly OpenCV's order, so frames need no conversion.
MAIN_FORMAT = "RGB888"
PREVIEW_FORMAT = "YUV420"  # the Pi's ISP only produces YUV on the lores stream
_CONTROL_WAIT_FRAMES = 10  # frames to wait for newly set controls to show up in the metadata


class Picamera2Camera(Camera):
    def __init__(
        self,
        *,
        camera_num: int = 0,
        size_px: tuple[int, int] | None = None,
        preview_size_px: tuple[int, int] = (640, 480),
        exposure_us: float = 10000.0,
        analogue_gain: float = 1.0,
        colour_gains: tuple[float, float] | None = None,
        auto_exposure: bool = False,
        tuning_file: str | None = None,
        settle_frames: int = 15,
        buffer_count: int = 2,
        start_timeout_s: float = 5.0,
    ) -> None:
        self._camera_num = camera_num
        self._size_px = size_px
        self._preview_size_px = preview_size_px
        self._exposure_us = exposure_us
        self._gain = analogue_gain
        self._colour_gains = colour_gains
        self._auto = auto_exposure
        self._tuning_file = tuning_file
        self._settle_frames = settle_frames
        self._buffer_count = buffer_count
        self._start_timeout_s = start_timeout_s
        self._cam: Any = None
        self._size = size_px or (0, 0)
        self._locked: dict[str, Any] = {}
        self._index = 0

    @property
    def resolution_px(self) -> tuple[int, int]:
        return self._size

    # ---- lifecycle ------------------------------------------------------------------------------
    def open(self) -> None:
        if self._cam is not None:
            return
        try:
            from picamera2 import Picamera2
        except ImportError:
            raise CameraError("picamera2 is not importable: `sudo apt install python3-picamera2` and use a venv "
                              "made with --system-site-packages (see docs/cameras.md)") from None
        tuning = self._load_tuning(Picamera2) if self._tuning_file else None
        try:
            cam = Picamera2(camera_num=self._camera_num, tuning=tuning)
        except (RuntimeError, IndexError, OSError) as exc:
            if "busy" in str(exc).lower():
                raise DeviceBusyError(f"device busy: camera {self._camera_num} is held by another process") from None
            raise CameraError(f"cannot open Raspberry Pi camera {self._camera_num}: {exc}") from None
        self._cam = cam
        try:
            self._configure_and_start()
        except (RuntimeError, OSError, ValueError, KeyError) as exc:
            self.close()
            raise CameraError(f"cannot start Raspberry Pi camera {self._camera_num}: {exc}") from None

    def _load_tuning(self, picamera2_class: Any) -> dict:
        path = Path(self._tuning_file or "")
        try:
            if path.parent != Path("."):
                return picamera2_class.load_tuning_file(path.name, dir=str(path.parent))
            return picamera2_class.load_tuning_file(path.name)
        except (RuntimeError, OSError, ValueError) as exc:
            raise CameraError(f"camera.tuning_file {self._tuning_file!r}: {exc}") from None

    def _configure_and_start(self) -> None:
        cam = self._cam
        size = tuple(self._size_px) if self._size_px else tuple(cam.camera_properties["PixelArraySize"])
        controls = self._fixed_controls() if not self._auto else {"AeEnable": True, "AwbEnable": True}
        config = cam.create_still_configuration(
            main={"size": size, "format": MAIN_FORMAT},
            lores={"size": tuple(self._preview_size_px), "format": PREVIEW_FORMAT},
            buffer_count=self._buffer_count, controls=controls,
        )
        cam.configure(config)
        cam.start()
        self._size = (int(size[0]), int(size[1]))
        if self._auto or self._colour_gains is None:
            # Let the control loops converge on the slide before freezing them.
            for _ in range(self._settle_frames):
                self._metadata_of_next_frame(self._start_timeout_s)
            self.lock_auto()
        else:
            self._locked = controls

    def _fixed_controls(self) -> dict[str, Any]:
        controls: dict[str, Any] = {"AeEnable": False, "ExposureTime": int(round(self._exposure_us)),
                                    "AnalogueGain": float(self._gain)}
        if self._colour_gains is not None:
            controls.update({"AwbEnable": False, "ColourGains": tuple(float(g) for g in self._colour_gains)})
        else:
            controls["AwbEnable"] = True  # measured during the settle frames, then locked
        return controls

    def close(self) -> None:
        cam, self._cam = self._cam, None
        if cam is None:
            return
        for step in (cam.stop, cam.close):
            try:
                step()
            except (RuntimeError, OSError) as exc:
                # A camera that died mid-scan may refuse to stop; closing must still release it.
                log.warning("picamera2 %s failed: %s", step.__name__, exc)

    def start(self) -> None:
        self._call("start")

    def stop(self) -> None:
        self._call("stop")

    # ---- frames ---------------------------------------------------------------------------------
    def capture(self, timeout_s: float = 2.0, *, not_before_s: float | None = None) -> Frame:
        called_s = time.monotonic()
        earliest_s = called_s if not_before_s is None else not_before_s
        deadline_s = called_s + timeout_s
        while True:
            image, metadata = self._next_request(deadline_s - time.monotonic(), "main", earliest_s)
            start_s = _exposure_start_s(metadata)
            if start_s >= earliest_s:
                break
        self._index += 1
        info = {"frame_index": self._index, "source": f"picamera2:{self._camera_num}",
                "exposure_us": metadata.get("ExposureTime"), "analogue_gain": metadata.get("AnalogueGain"),
                "colour_gains": metadata.get("ColourGains"), "lux": metadata.get("Lux")}
        return Frame(image=image, timestamp_s=start_s, metadata=info)

    def capture_preview(self, timeout_s: float = 2.0) -> np.ndarray:
        """The next frame of the small preview stream, BGR."""
        yuv, _ = self._next_request(timeout_s, "lores", None)
        return cv2.cvtColor(yuv, cv2.COLOR_YUV2BGR_I420)

    def _next_request(self, timeout_s: float, stream: str, earliest_s: float | None) -> tuple[np.ndarray, dict]:
        cam = self._require_open()
        if timeout_s <= 0:
            raise CameraTimeoutError(f"Raspberry Pi camera {self._camera_num}: no frame in time")
        # flush: picamera2 skips requests whose SensorTimestamp (monotonic ns) is earlier.
        flush = int(earliest_s * 1e9) if earliest_s is not None else None
        try:
            job = cam.capture_request(wait=False, flush=flush)
            request = cam.wait(job, timeout=timeout_s)
        except TimeoutError:
            raise CameraTimeoutError(
                f"Raspberry Pi camera {self._camera_num}: no frame within {timeout_s:.3f} s") from None
        except (RuntimeError, OSError) as exc:
            raise CameraError(f"Raspberry Pi camera {self._camera_num}: {exc}") from None
        try:
            image = request.make_array(stream)
            metadata = dict(request.get_metadata())
        except (RuntimeError, OSError, ValueError) as exc:
            raise CameraError(f"Raspberry Pi camera {self._camera_num}: bad frame: {exc}") from None
        finally:
            request.release()  # buffers go back to libcamera, or the pipeline starves
        return image, metadata

    def _metadata_of_next_frame(self, timeout_s: float) -> dict:
        cam = self._require_open()
        try:
            return dict(cam.wait(cam.capture_metadata(wait=False), timeout=timeout_s))
        except TimeoutError:
            raise CameraTimeoutError(
                f"Raspberry Pi camera {self._camera_num}: no frame within {timeout_s:.3f} s") from None
        except (RuntimeError, OSError) as exc:
            raise CameraError(f"Raspberry Pi camera {self._camera_num}: {exc}") from None

    # ---- controls -------------------------------------------------------------------------------
    def controls(self) -> CameraControls:
        c = self._locked
        gains = c.get("ColourGains")
        return CameraControls(
            exposure_us=c.get("ExposureTime"), analogue_gain=c.get("AnalogueGain"),
            colour_gains=tuple(gains) if gains is not None else None,
            auto_exposure=bool(c.get("AeEnable", True)), auto_white_balance=bool(c.get("AwbEnable", True)),
        )

    def set_exposure(self, exposure_us: float) -> None:
        self._set({"AeEnable": False, "ExposureTime": int(round(exposure_us))})

    def set_gain(self, analogue_gain: float) -> None:
        self._set({"AeEnable": False, "AnalogueGain": float(analogue_gain)})

    def lock_auto(self) -> CameraControls:
        """Freeze exposure, gain and colour gains at what the last frame used."""
        md = self._metadata_of_next_frame(self._start_timeout_s)
        locked = {"AeEnable": False, "AwbEnable": False,
                  "ExposureTime": int(md.get("ExposureTime", round(self._exposure_us))),
                  "AnalogueGain": float(md.get("AnalogueGain", self._gain))}
        gains = md.get("ColourGains", self._colour_gains)
        if gains is not None:
            locked["ColourGains"] = (float(gains[0]), float(gains[1]))
        self._set(locked)
        return self.controls()

    def unlock_auto(self) -> None:
        self._set({"AeEnable": True, "AwbEnable": True})

    def _set(self, controls: dict[str, Any]) -> None:
        cam = self._require_open()
        try:
            cam.set_controls(controls)
        except (RuntimeError, OSError, ValueError, KeyError) as exc:
            raise CameraError(f"Raspberry Pi camera {self._camera_num}: cannot set {controls}: {exc}") from None
        self._locked = {**self._locked, **controls}
        if "ExposureTime" in controls:
            self._wait_for_exposure(controls["ExposureTime"])

    def _wait_for_exposure(self, exposure_us: int) -> None:
        # Controls take effect a few frames later; frames before that would be exposed differently.
        for _ in range(_CONTROL_WAIT_FRAMES):
            got = self._metadata_of_next_frame(self._start_timeout_s).get("ExposureTime")
            if got is None or abs(got - exposure_us) <= max(0.02 * exposure_us, 50):
                return
        log.warning("camera exposure did not reach %d us within %d frames", exposure_us, _CONTROL_WAIT_FRAMES)

    def _call(self, name: str) -> None:
        try:
            getattr(self._require_open(), name)()
        except (RuntimeError, OSError) as exc:
            raise CameraError(f"Raspberry Pi camera {self._camera_num}: {name} failed: {exc}") from None

    def _require_open(self) -> Any:
        if self._cam is None:
            raise CameraError(f"Raspberry Pi camera {self._camera_num} is not open")
        return self._cam


def _exposure_start_s(metadata: dict) -> float:
    """Start of the exposure in time.monotonic() seconds.

    SensorTimestamp is the frame's start-of-frame in the kernel's monotonic clock (ns), as picamera2's
    own ``flush`` assumes; frames without it are stamped now (conservatively late).
    """
    ts_ns = metadata.get("SensorTimestamp")
    return ts_ns / 1e9 if ts_ns is not None else time.monotonic()

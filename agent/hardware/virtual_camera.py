"""A camera adapter that images the virtual slide through the optics model.

It stands in for the real camera when no hardware is attached: the stage (real or simulated) reports
where it is, and each capture shows the slide at that point, blurred by the current defocus and with
fresh sensor noise. In realtime mode it behaves like a free-running rolling sensor: a frame starts
every 1 / frame_rate_hz seconds and ``capture`` returns the first one whose exposure began after the
call; with ``realtime=False`` it never sleeps, for fast tests and simulations.

For calibration tests the camera can be mounted imperfectly: ``rotation_deg`` and ``flip`` turn and
mirror the image relative to the stage axes, and ``backlash_um`` gives each XY axis lost motion on a
reversal. The convention (shared with agent.calibration): a feature ``p`` pixels from the image
centre is brought to the centre by the stage move ``um_per_px * R(rotation) @ F @ p`` µm, where R
rotates by +rotation_deg in pixel coordinates (x right, y down) and F mirrors x when ``flip``.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from typing import Callable

import cv2
import numpy as np

from agent.errors import CameraError
from agent.hardware.camera import Camera, CameraControls, CameraTimeoutError, Frame
from agent.hardware.optics import Optics
from agent.hardware.virtual_slide import VirtualSlide

_RENDER_CACHE_SIZE = 4  # autofocus and z-stacks take many frames at one (x, y)


class VirtualCamera(Camera):
    def __init__(
        self,
        slide: VirtualSlide,
        optics: Optics,
        position_um: Callable[[], tuple[float, float, float]],
        *,
        width_px: int = 1920,
        height_px: int = 1200,
        um_per_px: float = 0.11,
        frame_rate_hz: float = 30.0,
        exposure_s: float = 0.010,
        realtime: bool = True,
        seed: int = 0,
        rotation_deg: float = 0.0,
        flip: bool = False,
        backlash_um: tuple[float, float] = (0.0, 0.0),
    ) -> None:
        if width_px <= 0 or height_px <= 0 or um_per_px <= 0:
            raise ValueError("frame size and scale must be positive")
        if frame_rate_hz <= 0 or not 0 < exposure_s <= 1.0 / frame_rate_hz:
            raise ValueError("need frame_rate_hz > 0 and 0 < exposure_s <= 1 / frame_rate_hz")
        self._slide = slide
        self._optics = optics
        self._position_um = position_um
        self._size = (int(width_px), int(height_px))
        self._um_per_px = float(um_per_px)
        self._period_s = 1.0 / frame_rate_hz
        self._exposure_s = float(exposure_s)
        self._realtime = realtime
        self._seed = seed
        self._rng = np.random.default_rng(seed)
        self._renders: OrderedDict[tuple[int, ...], np.ndarray] = OrderedDict()
        self._epoch_s: float | None = None
        self._frame_index = 0
        self._rotation_deg = float(rotation_deg)
        self._flip = bool(flip)
        if len(backlash_um) != 2 or min(backlash_um) < 0:
            raise ValueError("backlash_um must be two non-negative numbers (x, y)")
        self._backlash_um = (float(backlash_um[0]), float(backlash_um[1]))
        self._carriage_um: list[float] | None = None  # where the slide really is, given the backlash
        self._analogue_gain = 1.0

    @property
    def resolution_px(self) -> tuple[int, int]:
        return self._size

    @property
    def um_per_px(self) -> float:
        return self._um_per_px

    def open(self) -> None:
        if self._epoch_s is None:
            self._epoch_s = time.monotonic()
            self._frame_index = 0
            self._rng = np.random.default_rng(self._seed)

    def close(self) -> None:
        self._epoch_s = None
        self._renders.clear()

    def controls(self) -> CameraControls:
        return CameraControls(exposure_us=self._exposure_s * 1e6, analogue_gain=self._analogue_gain,
                              auto_exposure=False, auto_white_balance=False)

    def set_exposure(self, exposure_us: float) -> None:
        if not 0 < exposure_us * 1e-6 <= self._period_s:
            raise CameraError(f"exposure {exposure_us} us is outside (0, frame period]")
        self._exposure_s = exposure_us * 1e-6

    def set_gain(self, analogue_gain: float) -> None:
        # Recorded only: the simulated sensor's noise model is fixed at unity gain.
        if analogue_gain < 1.0:
            raise CameraError(f"analogue gain {analogue_gain} is below 1")
        self._analogue_gain = float(analogue_gain)

    def capture(self, timeout_s: float = 2.0, *, not_before_s: float | None = None) -> Frame:
        if self._epoch_s is None:
            raise CameraError("virtual camera is not open")
        called_s = time.monotonic()
        earliest_s = called_s if not_before_s is None else not_before_s
        if self._realtime:
            start_s = self._next_frame_start(earliest_s)
            if start_s + self._exposure_s - called_s > timeout_s:
                time.sleep(max(timeout_s, 0.0))
                raise CameraTimeoutError(
                    f"no frame within {timeout_s:.3f} s (frame period {self._period_s:.3f} s)")
            _sleep_until(start_s)
        else:
            # Zero-delay mode has no clock to wait on: the frame is stamped as if it waited.
            start_s = max(called_s, earliest_s)
        x_um, y_um, z_um = self._position_um()
        # The stage is read at the start of the exposure: a sensor integrates whatever it sees during
        # the exposure, and the callers that matter (autofocus) wait for the stage to settle first.
        slide_x_um, slide_y_um = self._through_backlash(x_um, y_um)
        if self._rotation_deg == 0.0 and not self._flip:
            in_focus = self._in_focus(slide_x_um, slide_y_um)
        else:
            in_focus = self._in_focus_mounted(slide_x_um, slide_y_um)
        dz_um = z_um - self._slide.focus_z_um(x_um, y_um)
        image = self._optics.image(in_focus, dz_um, self._um_per_px, self._rng)
        if self._realtime:
            _sleep_until(start_s + self._exposure_s)
        self._frame_index += 1
        metadata = {
            "x_um": float(x_um),
            "y_um": float(y_um),
            "z_um": float(z_um),
            "dz_um": float(dz_um),
            "exposure_s": self._exposure_s,
            "um_per_px": self._um_per_px,
            "frame_index": self._frame_index,
            "analogue_gain": self._analogue_gain,
            "slide_x_um": float(slide_x_um),
            "slide_y_um": float(slide_y_um),
            "source": "virtual",
        }
        return Frame(image=image, timestamp_s=start_s, metadata=metadata)

    def _next_frame_start(self, now_s: float) -> float:
        assert self._epoch_s is not None
        n = math.ceil((now_s - self._epoch_s) / self._period_s)
        return self._epoch_s + n * self._period_s

    def _through_backlash(self, x_um: float, y_um: float) -> tuple[float, float]:
        """Where the slide is when the leadscrews say (x_um, y_um): lost motion on reversals.

        Each axis's carriage lags ``backlash`` behind a move in +direction and follows a move in
        -direction exactly, so its position stays within [commanded - backlash, commanded]. The camera
        sees the stage only when it captures: a reversal counts only if a frame was taken at its
        turning point.
        """
        if self._backlash_um == (0.0, 0.0):
            return x_um, y_um
        if self._carriage_um is None:
            self._carriage_um = [x_um, y_um]
        for i, (cmd, play) in enumerate(zip((x_um, y_um), self._backlash_um)):
            self._carriage_um[i] = min(max(self._carriage_um[i], cmd - play), cmd)
        return self._carriage_um[0], self._carriage_um[1]

    def _in_focus_mounted(self, x_um: float, y_um: float) -> np.ndarray:
        """The in-focus field as a rotated and/or mirrored sensor sees it, with sub-pixel motion.

        Cubic interpolation: linear interpolation's phase error would pull sub-pixel shifts towards
        whole pixels, which a calibration test would then measure.
        """
        w, h = self._size
        side = int(math.ceil(math.hypot(w, h))) + 4
        side += side % 2  # even, so the canvas centre falls where the slide puts the field centre
        kx, ky = round(x_um / self._um_per_px), round(y_um / self._um_per_px)
        key = (kx, ky, -side)
        canvas = self._renders.get(key)
        if canvas is None:
            canvas = self._slide.render(kx * self._um_per_px, ky * self._um_per_px, side, side, self._um_per_px)
            self._renders[key] = canvas
            if len(self._renders) > _RENDER_CACHE_SIZE:
                self._renders.popitem(last=False)
        else:
            self._renders.move_to_end(key)
        theta = math.radians(self._rotation_deg)
        c, s = math.cos(theta), math.sin(theta)
        fx = -1.0 if self._flip else 1.0
        a = np.array([[c * fx, -s], [s * fx, c]])  # R @ F: sensor pixel offset -> slide pixel offset
        residual = np.array([x_um / self._um_per_px - kx, y_um / self._um_per_px - ky])
        t = np.array([side / 2, side / 2]) + residual - a @ np.array([w / 2, h / 2])
        m = np.hstack([a, t[:, None]]).astype(np.float64)
        return cv2.warpAffine(canvas, m, (w, h), flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP,
                              borderMode=cv2.BORDER_REFLECT)

    def _in_focus(self, x_um: float, y_um: float) -> np.ndarray:
        # Key on the pixel grid: positions that differ by less than a pixel render the same field.
        key = (round(x_um / self._um_per_px), round(y_um / self._um_per_px))
        img = self._renders.get(key)
        if img is None:
            w, h = self._size
            img = self._slide.render(x_um, y_um, w, h, self._um_per_px)
            self._renders[key] = img
            if len(self._renders) > _RENDER_CACHE_SIZE:
                self._renders.popitem(last=False)
        else:
            self._renders.move_to_end(key)
        return img


def _sleep_until(deadline_s: float) -> None:
    remaining = deadline_s - time.monotonic()
    if remaining > 0:
        time.sleep(remaining)

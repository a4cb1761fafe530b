"""A camera adapter that images the virtual slide through the optics model.

It stands in for the real camera when no hardware is attached: the stage (real or simulated) reports
where it is, and each capture shows the slide at that point, blurred by the current defocus and with
fresh sensor noise. In realtime mode it behaves like a free-running rolling sensor: a frame starts
every 1 / frame_rate_hz seconds and ``capture`` returns the first one whose exposure began after the
call; with ``realtime=False`` it never sleeps, for fast tests and simulations.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from typing import Callable

import numpy as np

from agent.errors import CameraError
from agent.hardware.camera import Camera, Frame
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
        self._renders: OrderedDict[tuple[int, int], np.ndarray] = OrderedDict()
        self._epoch_s: float | None = None
        self._frame_index = 0

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

    def capture(self, timeout_s: float = 2.0) -> Frame:
        if self._epoch_s is None:
            raise CameraError("virtual camera is not open")
        called_s = time.monotonic()
        if self._realtime:
            start_s = self._next_frame_start(called_s)
            if start_s + self._exposure_s - called_s > timeout_s:
                time.sleep(max(timeout_s, 0.0))
                raise CameraError(f"no frame within {timeout_s:.3f} s (frame period {self._period_s:.3f} s)")
            _sleep_until(start_s)
        else:
            start_s = called_s
        x_um, y_um, z_um = self._position_um()
        # The stage is read at the start of the exposure: a sensor integrates whatever it sees during
        # the exposure, and the callers that matter (autofocus) wait for the stage to settle first.
        in_focus = self._in_focus(x_um, y_um)
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
            "source": "virtual",
        }
        return Frame(image=image, timestamp_s=start_s, metadata=metadata)

    def _next_frame_start(self, now_s: float) -> float:
        assert self._epoch_s is not None
        n = math.ceil((now_s - self._epoch_s) / self._period_s)
        return self._epoch_s + n * self._period_s

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

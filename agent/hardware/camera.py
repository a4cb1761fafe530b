"""The camera port: what the pipeline needs from any camera.

Frames are colour images in OpenCV's channel order (BGR, uint8, H x W x 3) so every stage downstream
(focus, detection, JPEG writing) uses them without conversion.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from agent.errors import CameraError


@dataclass(frozen=True)
class Frame:
    image: np.ndarray
    """H x W x 3 uint8, BGR."""
    timestamp_s: float
    """time.monotonic() at the start of the exposure."""
    metadata: dict[str, Any] = field(default_factory=dict)


class CameraTimeoutError(CameraError):
    """No acceptable frame arrived within the capture timeout (the pipeline may be dead)."""


@dataclass(frozen=True)
class CameraControls:
    """Sensor settings in force, as far as the adapter knows them (None: unknown or not adjustable)."""

    exposure_us: float | None = None
    analogue_gain: float | None = None
    colour_gains: tuple[float, float] | None = None
    """(red, blue) white-balance gains."""
    auto_exposure: bool | None = None
    auto_white_balance: bool | None = None


class Camera(abc.ABC):
    """A camera adapter. Opening touches hardware; constructing it never does.

    ``open`` acquires the device and starts streaming. The control methods below have defaults so
    that a source with nothing to adjust (a video file, the simulation) needs no code for them;
    ``lock_auto`` is what a scan calls once before the first field so every field is exposed and
    white-balanced alike.
    """

    @property
    @abc.abstractmethod
    def resolution_px(self) -> tuple[int, int]:
        """(width, height) of captured frames."""

    @abc.abstractmethod
    def open(self) -> None:
        """Acquire the device. Raises DeviceBusyError / CameraError."""

    @abc.abstractmethod
    def capture(self, timeout_s: float = 2.0, *, not_before_s: float | None = None) -> Frame:
        """Return the next frame exposed entirely after this call began.

        ``not_before_s`` (time.monotonic()) moves that point later or earlier: frames whose exposure
        started before it are discarded, e.g. ones exposed while the stage was still settling.
        Raises CameraTimeoutError when no such frame arrives within ``timeout_s``.
        """

    @abc.abstractmethod
    def close(self) -> None:
        """Release the device. Safe to call twice."""

    def start(self) -> None:
        """Resume streaming after ``stop`` (``open`` already starts). Default: nothing to do."""

    def stop(self) -> None:
        """Pause streaming but keep the device. Default: nothing to do."""

    def controls(self) -> CameraControls:
        """The settings in force now."""
        return CameraControls()

    def set_exposure(self, exposure_us: float) -> None:
        """Fix the exposure time (turns auto-exposure off)."""
        raise CameraError(f"{type(self).__name__} cannot set the exposure")

    def set_gain(self, analogue_gain: float) -> None:
        """Fix the analogue gain (turns auto-exposure off)."""
        raise CameraError(f"{type(self).__name__} cannot set the gain")

    def lock_auto(self) -> CameraControls:
        """Freeze auto-exposure and auto white balance at their current values; return them."""
        return self.controls()

    def unlock_auto(self) -> None:
        """Let auto-exposure and auto white balance run again."""

    def __enter__(self) -> "Camera":
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class CameraWrapper(Camera):
    """Passes everything to an inner camera; subclasses change what they need (recovery, correction)."""

    def __init__(self, inner: Camera) -> None:
        self.inner = inner

    @property
    def resolution_px(self) -> tuple[int, int]:
        return self.inner.resolution_px

    def open(self) -> None:
        self.inner.open()

    def capture(self, timeout_s: float = 2.0, *, not_before_s: float | None = None) -> Frame:
        return self.inner.capture(timeout_s, not_before_s=not_before_s)

    def close(self) -> None:
        self.inner.close()

    def start(self) -> None:
        self.inner.start()

    def stop(self) -> None:
        self.inner.stop()

    def controls(self) -> CameraControls:
        return self.inner.controls()

    def set_exposure(self, exposure_us: float) -> None:
        self.inner.set_exposure(exposure_us)

    def set_gain(self, analogue_gain: float) -> None:
        self.inner.set_gain(analogue_gain)

    def lock_auto(self) -> CameraControls:
        return self.inner.lock_auto()

    def unlock_auto(self) -> None:
        self.inner.unlock_auto()

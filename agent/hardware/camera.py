"""The camera port: what the pipeline needs from any camera.

Frames are colour images in OpenCV's channel order (BGR, uint8, H x W x 3) so every stage downstream
(focus, detection, JPEG writing) uses them without conversion.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Frame:
    image: np.ndarray
    """H x W x 3 uint8, BGR."""
    timestamp_s: float
    """time.monotonic() at the start of the exposure."""
    metadata: dict[str, Any] = field(default_factory=dict)


class Camera(abc.ABC):
    """A camera adapter. Opening touches hardware; constructing it never does."""

    @property
    @abc.abstractmethod
    def resolution_px(self) -> tuple[int, int]:
        """(width, height) of captured frames."""

    @abc.abstractmethod
    def open(self) -> None:
        """Acquire the device. Raises DeviceBusyError / CameraError."""

    @abc.abstractmethod
    def capture(self, timeout_s: float = 2.0) -> Frame:
        """Return the next frame exposed entirely after this call began."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release the device. Safe to call twice."""

    def __enter__(self) -> "Camera":
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

"""Applies the bench calibration's flat-field to every frame, so focus scores, detection and the saved
planes all see evenly lit images."""

from __future__ import annotations

from dataclasses import replace

from agent.calibration import FlatField
from agent.hardware.camera import Camera, CameraWrapper, Frame


class FlatFieldCamera(CameraWrapper):
    def __init__(self, inner: Camera, flat: FlatField) -> None:
        super().__init__(inner)
        self.flat = flat

    def capture(self, timeout_s: float = 2.0, *, not_before_s: float | None = None) -> Frame:
        frame = self.inner.capture(timeout_s, not_before_s=not_before_s)
        return replace(frame, image=self.flat.apply(frame.image), metadata={**frame.metadata, "flat_field": True})

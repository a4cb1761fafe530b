"""A camera wrapper that survives a dead pipeline: reopen once, then report a typed error.

Cameras on a Pi die in a few ways that a reboot used to fix: libcamera stops completing requests, a
UVC camera drops off the USB bus for a moment, a driver read blocks for ever. ``ResilientCamera``
wraps any adapter and, when a capture fails or times out, closes and reopens it once and tries the
capture again; a second failure is raised (CameraTimeoutError when no frame came, CameraError
otherwise) so the scan can mark the field failed and move on. The capture runs in a helper thread
with a hard deadline, so even an adapter whose read blocks inside a driver cannot hang the scan.
Controls set through the wrapper are applied again after a reopen.
"""

from __future__ import annotations

import logging
import threading
import time

from agent.errors import CameraError
from agent.hardware.camera import Camera, CameraControls, CameraTimeoutError, CameraWrapper, Frame

log = logging.getLogger(__name__)


class ResilientCamera(CameraWrapper):
    def __init__(self, inner: Camera, *, reopen_attempts: int = 1, grace_s: float = 1.0) -> None:
        """``grace_s``: how long past its own timeout an adapter may take before it is presumed stuck."""
        super().__init__(inner)
        self._reopen_attempts = reopen_attempts
        self._grace_s = grace_s
        self._replay: dict[str, float] = {}  # set_exposure / set_gain values to restore after a reopen
        self.reopen_count = 0
        """How many times the inner camera was reopened (for the field log)."""

    def set_exposure(self, exposure_us: float) -> None:
        self.inner.set_exposure(exposure_us)
        self._replay["set_exposure"] = exposure_us

    def set_gain(self, analogue_gain: float) -> None:
        self.inner.set_gain(analogue_gain)
        self._replay["set_gain"] = analogue_gain

    def lock_auto(self) -> CameraControls:
        locked = self.inner.lock_auto()
        # After a reopen the same values must come back, not whatever auto-exposure finds then.
        if locked.exposure_us is not None:
            self._replay["set_exposure"] = locked.exposure_us
        if locked.analogue_gain is not None:
            self._replay["set_gain"] = locked.analogue_gain
        return locked

    def unlock_auto(self) -> None:
        self.inner.unlock_auto()
        self._replay.clear()

    def capture(self, timeout_s: float = 2.0, *, not_before_s: float | None = None) -> Frame:
        failures = 0
        while True:
            try:
                return self._capture_with_deadline(timeout_s, not_before_s)
            except CameraError as exc:
                failures += 1
                if failures > self._reopen_attempts:
                    raise type(exc)(f"{exc} (after reopening the camera {failures - 1} time(s))") from exc
                log.warning("camera failed (%s); reopening it", exc)
                self._reopen()

    def _capture_with_deadline(self, timeout_s: float, not_before_s: float | None) -> Frame:
        result: list[Frame] = []
        error: list[CameraError] = []

        def run() -> None:
            try:
                result.append(self.inner.capture(timeout_s, not_before_s=not_before_s))
            except CameraError as exc:
                error.append(exc)

        # Daemon: if the adapter is stuck in a driver call the thread is abandoned, not waited for.
        worker = threading.Thread(target=run, name="camera-capture", daemon=True)
        worker.start()
        wait_s = timeout_s + self._grace_s
        if not_before_s is not None:
            wait_s += max(not_before_s - time.monotonic(), 0.0)
        worker.join(wait_s)
        if worker.is_alive():
            raise CameraTimeoutError(f"camera did not return within {wait_s:.3f} s (stuck adapter)")
        if error:
            raise error[0]
        if not result:
            # The worker died of something that is not a CameraError: a bug, reported as such.
            raise RuntimeError("camera capture thread ended without a frame or a CameraError")
        return result[0]

    def _reopen(self) -> None:
        self.reopen_count += 1
        self.inner.close()
        self.inner.open()
        for method, value in self._replay.items():
            getattr(self.inner, method)(value)

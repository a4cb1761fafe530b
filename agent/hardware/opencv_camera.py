"""Camera adapters over OpenCV: live UVC/V4L2 devices, video files and folders of images.

``open_cv_source(device, ...)`` picks one from the ``camera.device`` string:

- ``"0"`` (a device index) or ``"/dev/video0"`` (a V4L2 node): ``OpenCVCamera``, a live device. It is
  locked exclusively (``fcntl.flock``) so a second process gets "device busy", and a reader thread
  drains the driver's queue continuously: the frame ``capture`` returns is therefore at most one
  frame period old, and ones exposed before ``not_before_s`` are skipped by timestamp.
- a video file (.avi, .mp4, ...): ``VideoFileCamera``, one frame per capture, in order.
- a folder: ``ImageFolderCamera``, its images in name order, one per capture.

The two replay sources ignore the stage: they are for running the pipeline on recorded material and
for tests. They loop at the end when ``loop`` is true, else they raise CameraTimeoutError (no frame
will come), which is what a dead camera looks like to the caller too.
"""

from __future__ import annotations

import fcntl
import logging
import os
import stat
import threading
import time
from pathlib import Path

import cv2
import numpy as np

from agent.errors import CameraError, DeviceBusyError
from agent.hardware.camera import Camera, CameraControls, CameraTimeoutError, Frame

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
_V4L2_EXPOSURE_UNIT_US = 100.0  # V4L2's exposure_time_absolute counts 100 us steps
_V4L2_MANUAL_EXPOSURE = 1  # V4L2_EXPOSURE_MANUAL, as OpenCV's V4L2 backend passes it through
_V4L2_AUTO_EXPOSURE = 3  # V4L2_EXPOSURE_APERTURE_PRIORITY, the UVC default
_READER_RETRY_S = 0.05  # pause between failed grabs, so a dead device does not spin a core


def open_cv_source(device: str, *, width_px: int = 0, height_px: int = 0, frame_rate_hz: float = 0.0,
                   exposure_us: float | None = None, fourcc: str = "", loop: bool = True) -> Camera:
    """The adapter for ``device`` (see the module docstring). Touches nothing yet."""
    if device.isdigit():
        return OpenCVCamera(int(device), width_px=width_px, height_px=height_px, frame_rate_hz=frame_rate_hz,
                            exposure_us=exposure_us, fourcc=fourcc)
    path = Path(device)
    if path.is_dir():
        return ImageFolderCamera(path, loop=loop)
    if device.startswith("/dev/") or "://" in device:
        return OpenCVCamera(device, width_px=width_px, height_px=height_px, frame_rate_hz=frame_rate_hz,
                            exposure_us=exposure_us, fourcc=fourcc)
    return VideoFileCamera(path, loop=loop)


class DeviceLock:
    """An exclusive, non-blocking ``flock`` on a device node, held from ``acquire`` to ``release``."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> None:
        if self._fd is not None:
            return
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)
        except OSError as exc:
            raise CameraError(f"cannot open {self.path}: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise DeviceBusyError(f"device busy: {self.path} is in use by another wbcscope process") from None
        self._fd = fd

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing the descriptor drops the lock


def _device_node(source: int | str) -> str | None:
    """The /dev node to lock for a source, if it is a local character device."""
    path = f"/dev/video{source}" if isinstance(source, int) else source
    try:
        return path if stat.S_ISCHR(os.stat(path).st_mode) else None
    except OSError:
        return None


class OpenCVCamera(Camera):
    """A live camera through cv2.VideoCapture (V4L2 on Linux), read continuously by one thread."""

    def __init__(self, source: int | str, *, width_px: int = 0, height_px: int = 0, frame_rate_hz: float = 0.0,
                 exposure_us: float | None = None, fourcc: str = "") -> None:
        self._source = source
        self._want = (width_px, height_px, frame_rate_hz, exposure_us, fourcc)
        self._cap: cv2.VideoCapture | None = None
        self._lock: DeviceLock | None = None
        self._size = (width_px, height_px)
        self._period_s = 1.0 / frame_rate_hz if frame_rate_hz > 0 else 1.0 / 30.0
        self._cond = threading.Condition()
        self._latest: tuple[np.ndarray, float, int] | None = None
        self._stop = threading.Event()
        self._paused = threading.Event()
        self._thread: threading.Thread | None = None
        self._read_error: str | None = None

    @property
    def resolution_px(self) -> tuple[int, int]:
        return self._size

    def open(self) -> None:
        if self._cap is not None:
            return
        node = _device_node(self._source)
        if node is not None:
            self._lock = DeviceLock(node)
            self._lock.acquire()
        api = cv2.CAP_V4L2 if node is not None else cv2.CAP_ANY
        cap = cv2.VideoCapture(self._source, api)
        if not cap.isOpened():
            cap.release()
            self._release_lock()
            raise CameraError(f"cannot open camera {self._source!r} (is it plugged in, and are you in group video?)")
        width_px, height_px, rate_hz, exposure_us, fourcc = self._want
        if fourcc:
            cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*fourcc))
        if width_px and height_px:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, width_px)
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, height_px)
        if rate_hz:
            cap.set(cv2.CAP_PROP_FPS, rate_hz)
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # not every backend honours it; the reader thread copes
        self._cap = cap
        if exposure_us is not None:
            self.set_exposure(exposure_us)
        self._size = (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
        fps = cap.get(cv2.CAP_PROP_FPS)
        if fps and fps > 0:
            self._period_s = 1.0 / fps
        self._start_reader()

    def _start_reader(self) -> None:
        self._stop.clear()
        self._latest = None
        self._thread = threading.Thread(target=self._read_loop, name="opencv-camera-reader", daemon=True)
        self._thread.start()

    def _read_loop(self) -> None:
        cap, index = self._cap, 0
        while not self._stop.is_set() and cap is not None:
            if self._paused.is_set():
                self._stop.wait(_READER_RETRY_S)
                continue
            ok = cap.grab()
            done_s = time.monotonic()
            image = cap.retrieve()[1] if ok else None
            if image is None or image.ndim != 3:
                self._read_error = "the device delivered no frame"
                self._stop.wait(_READER_RETRY_S)
                continue
            index += 1
            # V4L2 buffers carry their own timestamps but OpenCV hides them: estimate the start of the
            # exposure as one frame period before the frame was handed over.
            with self._cond:
                self._latest = (image, done_s - self._period_s, index)
                self._read_error = None
                self._cond.notify_all()

    def capture(self, timeout_s: float = 2.0, *, not_before_s: float | None = None) -> Frame:
        if self._cap is None:
            raise CameraError(f"camera {self._source!r} is not open")
        called_s = time.monotonic()
        earliest_s = called_s if not_before_s is None else not_before_s
        deadline_s = called_s + timeout_s
        with self._cond:
            while self._latest is None or self._latest[1] < earliest_s:
                remaining_s = deadline_s - time.monotonic()
                if remaining_s <= 0:
                    why = f": {self._read_error}" if self._read_error else ""
                    raise CameraTimeoutError(f"camera {self._source!r}: no frame within {timeout_s:.3f} s{why}")
                self._cond.wait(remaining_s)
            image, start_s, index = self._latest
        return Frame(image=image, timestamp_s=start_s,
                     metadata={"frame_index": index, "source": f"opencv:{self._source}", "estimated_timestamp": True})

    def stop(self) -> None:
        self._paused.set()

    def start(self) -> None:
        self._paused.clear()

    def controls(self) -> CameraControls:
        if self._cap is None:
            return CameraControls()
        exposure = self._cap.get(cv2.CAP_PROP_EXPOSURE)
        gain = self._cap.get(cv2.CAP_PROP_GAIN)
        return CameraControls(
            exposure_us=exposure * _V4L2_EXPOSURE_UNIT_US if exposure > 0 else None,
            analogue_gain=gain if gain > 0 else None,
            auto_exposure=self._cap.get(cv2.CAP_PROP_AUTO_EXPOSURE) != _V4L2_MANUAL_EXPOSURE,
            auto_white_balance=bool(self._cap.get(cv2.CAP_PROP_AUTO_WB)),
        )

    def set_exposure(self, exposure_us: float) -> None:
        cap = self._require_open()
        cap.set(cv2.CAP_PROP_AUTO_EXPOSURE, _V4L2_MANUAL_EXPOSURE)
        if not cap.set(cv2.CAP_PROP_EXPOSURE, exposure_us / _V4L2_EXPOSURE_UNIT_US):
            raise CameraError(f"camera {self._source!r} refused exposure {exposure_us} us")

    def set_gain(self, analogue_gain: float) -> None:
        # UVC gain has device-specific units; the value is passed through unchanged.
        if not self._require_open().set(cv2.CAP_PROP_GAIN, analogue_gain):
            raise CameraError(f"camera {self._source!r} refused gain {analogue_gain}")

    def lock_auto(self) -> CameraControls:
        cap = self._require_open()
        current = self.controls()
        cap.set(cv2.CAP_PROP_AUTO_EXPOSURE, _V4L2_MANUAL_EXPOSURE)
        if current.exposure_us is not None:
            cap.set(cv2.CAP_PROP_EXPOSURE, current.exposure_us / _V4L2_EXPOSURE_UNIT_US)
        temperature = cap.get(cv2.CAP_PROP_WB_TEMPERATURE)
        cap.set(cv2.CAP_PROP_AUTO_WB, 0)
        if temperature > 0:
            cap.set(cv2.CAP_PROP_WB_TEMPERATURE, temperature)
        return self.controls()

    def unlock_auto(self) -> None:
        cap = self._require_open()
        cap.set(cv2.CAP_PROP_AUTO_EXPOSURE, _V4L2_AUTO_EXPOSURE)
        cap.set(cv2.CAP_PROP_AUTO_WB, 1)

    def _require_open(self) -> cv2.VideoCapture:
        if self._cap is None:
            raise CameraError(f"camera {self._source!r} is not open")
        return self._cap

    def close(self) -> None:
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            # A grab stuck in a dead driver cannot be interrupted; the thread is a daemon and holds
            # only the old capture object, so a reopen still gets a fresh one.
            thread.join(timeout=max(2 * self._period_s, 1.0))
        cap, self._cap = self._cap, None
        if cap is not None:
            cap.release()
        self._release_lock()

    def _release_lock(self) -> None:
        lock, self._lock = self._lock, None
        if lock is not None:
            lock.release()


class _ReplayCamera(Camera):
    """Shared behaviour of recorded sources: one frame per capture, read in the caller's thread."""

    def __init__(self, name: str, loop: bool) -> None:
        self._name = name
        self._loop = loop
        self._open = False
        self._size = (0, 0)
        self._index = 0

    @property
    def resolution_px(self) -> tuple[int, int]:
        return self._size

    def _next_image(self) -> np.ndarray | None:
        raise NotImplementedError

    def _rewind(self) -> None:
        raise NotImplementedError

    def capture(self, timeout_s: float = 2.0, *, not_before_s: float | None = None) -> Frame:
        if not self._open:
            raise CameraError(f"{self._name} is not open")
        called_s = time.monotonic()
        if not_before_s is not None and not_before_s > called_s:
            # A recorded frame is "exposed" when it is read: wait for the requested moment.
            if not_before_s - called_s > timeout_s:
                raise CameraTimeoutError(f"{self._name}: not_before_s is beyond the {timeout_s:.3f} s timeout")
            time.sleep(not_before_s - called_s)
        start_s = time.monotonic()
        image = self._next_image()
        if image is None and self._loop and self._index > 0:
            self._rewind()
            image = self._next_image()
        if image is None:
            raise CameraTimeoutError(f"{self._name}: no more frames")
        self._index += 1
        return Frame(image=image, timestamp_s=start_s, metadata={"frame_index": self._index, "source": self._name})


class VideoFileCamera(_ReplayCamera):
    """Frames of a video file, in order."""

    def __init__(self, path: Path | str, *, loop: bool = True) -> None:
        super().__init__(f"video file {path}", loop)
        self._path = Path(path)
        self._cap: cv2.VideoCapture | None = None

    def open(self) -> None:
        if self._cap is not None:
            return
        if not self._path.is_file():
            raise CameraError(f"video file not found: {self._path}")
        cap = cv2.VideoCapture(str(self._path))
        if not cap.isOpened():
            cap.release()
            raise CameraError(f"cannot decode video file {self._path}")
        self._cap, self._open, self._index = cap, True, 0
        self._size = (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))

    def _next_image(self) -> np.ndarray | None:
        assert self._cap is not None
        ok, image = self._cap.read()
        return image if ok and image is not None and image.ndim == 3 else None

    def _rewind(self) -> None:
        assert self._cap is not None
        if not self._cap.set(cv2.CAP_PROP_POS_FRAMES, 0):
            # Some containers cannot seek: reopening is the portable way back to the start.
            self._cap.release()
            self._cap = cv2.VideoCapture(str(self._path))

    def close(self) -> None:
        self._open = False
        cap, self._cap = self._cap, None
        if cap is not None:
            cap.release()


class ImageFolderCamera(_ReplayCamera):
    """Images of a folder in name order (PNG, JPEG, TIFF, BMP); undecodable files are skipped."""

    def __init__(self, folder: Path | str, *, loop: bool = True) -> None:
        super().__init__(f"image folder {folder}", loop)
        self._folder = Path(folder)
        self._files: list[Path] = []
        self._pos = 0

    def open(self) -> None:
        if self._open:
            return
        try:
            files = sorted(p for p in self._folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        except OSError as exc:
            raise CameraError(f"cannot list {self._folder}: {exc.strerror}") from None
        if not files:
            raise CameraError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {self._folder}")
        self._files, self._pos, self._index, self._open = files, 0, 0, True
        first = self._peek_size()
        if first is None:
            self._open = False
            raise CameraError(f"no decodable image in {self._folder}")
        self._size = first

    def _peek_size(self) -> tuple[int, int] | None:
        for path in self._files:
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if image is not None:
                return (image.shape[1], image.shape[0])
        return None

    def _next_image(self) -> np.ndarray | None:
        while self._pos < len(self._files):
            path = self._files[self._pos]
            self._pos += 1
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if image is not None:
                return image
            log.warning("skipping undecodable image %s", path)
        return None

    def _rewind(self) -> None:
        self._pos = 0

    def close(self) -> None:
        self._open = False
        self._files = []

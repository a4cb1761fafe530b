"""OpenCV adapters against real files written here: an MJPG .avi, image folders, a locked device node."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from agent.assembly import build_camera
from agent.config import load_settings
from agent.errors import CameraError, DeviceBusyError
from agent.hardware.camera import CameraTimeoutError
from agent.hardware.opencv_camera import (DeviceLock, ImageFolderCamera, OpenCVCamera, VideoFileCamera,
                                          open_cv_source)


def _pattern(i: int, w: int = 160, h: int = 120) -> np.ndarray:
    img = np.zeros((h, w, 3), np.uint8)
    img[:, :] = (40 * i % 256, 100, 200)
    cv2.putText(img, str(i), (40, 80), cv2.FONT_HERSHEY_SIMPLEX, 2, (255, 255, 255), 3)
    return img


@pytest.fixture
def video(tmp_path: Path) -> Path:
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (160, 120))
    assert writer.isOpened()
    for i in range(5):
        writer.write(_pattern(i))
    writer.release()
    return path


def test_video_file_frames_in_order_and_loop(video: Path) -> None:
    cam = open_cv_source(str(video), loop=True)
    assert isinstance(cam, VideoFileCamera)
    with cam:
        assert cam.resolution_px == (160, 120)
        frames = [cam.capture(timeout_s=1.0) for _ in range(7)]
    assert all(f.image.shape == (120, 160, 3) and f.image.dtype == np.uint8 for f in frames)
    # MJPG is lossy: compare with the written pattern loosely; frame 5 is frame 0 again (loop).
    assert np.abs(frames[1].image.astype(int) - _pattern(1).astype(int)).mean() < 8
    assert np.abs(frames[5].image.astype(int) - frames[0].image.astype(int)).mean() < 1
    assert [f.metadata["frame_index"] for f in frames] == list(range(1, 8))
    assert frames[-1].timestamp_s >= frames[0].timestamp_s


def test_video_file_without_loop_ends_with_a_typed_error(video: Path) -> None:
    with VideoFileCamera(video, loop=False) as cam:
        for _ in range(5):
            cam.capture()
        with pytest.raises(CameraTimeoutError):
            cam.capture()


def test_missing_or_broken_video_is_a_camera_error(tmp_path: Path) -> None:
    with pytest.raises(CameraError, match="not found"):
        VideoFileCamera(tmp_path / "nope.avi").open()
    junk = tmp_path / "junk.avi"
    junk.write_bytes(b"not a video")
    cam = VideoFileCamera(junk)
    with pytest.raises(CameraError):
        cam.open()
        cam.capture()
    cam.close()
    cam.close()


def test_image_folder_in_name_order_skipping_undecodable(tmp_path: Path) -> None:
    for i in (2, 0, 1):
        cv2.imwrite(str(tmp_path / f"f{i:02d}.png"), _pattern(i))
    (tmp_path / "f01b.jpg").write_bytes(b"broken")
    (tmp_path / "notes.txt").write_text("ignored")
    cam = open_cv_source(str(tmp_path), loop=False)
    assert isinstance(cam, ImageFolderCamera)
    with cam:
        images = [cam.capture().image for _ in range(3)]
        with pytest.raises(CameraTimeoutError):
            cam.capture()
    for i, img in enumerate(images):
        assert np.array_equal(img, _pattern(i))  # PNG is lossless


def test_empty_folder_is_a_camera_error(tmp_path: Path) -> None:
    with pytest.raises(CameraError, match="no images"):
        ImageFolderCamera(tmp_path).open()


def test_device_lock_says_device_busy(tmp_path: Path) -> None:
    node = tmp_path / "video9"
    node.write_bytes(b"")
    first, second = DeviceLock(str(node)), DeviceLock(str(node))
    first.acquire()
    with pytest.raises(DeviceBusyError, match="device busy"):
        second.acquire()
    first.release()
    first.release()  # safe twice
    second.acquire()
    second.release()


def test_live_sources_are_chosen_for_indices_and_dev_paths() -> None:
    assert isinstance(open_cv_source("0"), OpenCVCamera)
    assert isinstance(open_cv_source("/dev/video7"), OpenCVCamera)


def test_absent_live_device_fails_with_a_camera_error() -> None:
    cam = OpenCVCamera("/dev/video-does-not-exist")
    with pytest.raises(CameraError):
        cam.open()
    cam.close()
    cam.close()


def test_settings_pick_the_adapter(tmp_path: Path) -> None:
    cv2.imwrite(str(tmp_path / "a.png"), _pattern(0))
    cam = build_camera(load_settings(None, {"camera.backend": "opencv", "camera.device": str(tmp_path)}))
    assert isinstance(cam, ImageFolderCamera)
    from agent.hardware.picamera2_camera import Picamera2Camera

    assert isinstance(build_camera(load_settings(None, {"camera.backend": "picamera2"})), Picamera2Camera)

"""Where the agent is put together: the one place that picks real or simulated adapters from settings."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from agent import focus
from agent.calibration import FlatField
from agent.config import Settings
from agent.errors import ConfigError, DeviceBusyError, WbcscopeError
from agent.field_analysis import FieldAnalyzer
from agent.hardware.camera import Camera
from agent.hardware.flat_field_camera import FlatFieldCamera
from agent.hardware.resilient_camera import ResilientCamera
from agent.inference.base import Detector
from firmware_interface.errors import StageBusyError
from firmware_interface.stage import FirmwareInfo, Stage


@dataclass
class Microscope:
    stage: Stage
    camera: Camera
    firmware: FirmwareInfo
    slide: object | None = None
    """The virtual slide when the camera is simulated (it knows the truth), else None."""
    emulator: object | None = None
    """The emulated controller when ``stage.port = 'emulator'`` (tests inject faults through it)."""


def measure_name(settings: Settings) -> str:
    name = settings.focus.measure or focus.DEFAULT_MEASURE
    if name not in focus.MEASURES:
        raise WbcscopeError(f"focus.measure: unknown measure {name!r} (known: {', '.join(focus.MEASURES)})")
    return name


def build_detector(settings: Settings) -> Detector:
    if settings.inference.detector == "tflite":
        from agent.inference.tflite_detector import TfliteDetector

        return TfliteDetector(num_threads=settings.inference.threads)
    from agent.inference.classical import ClassicalDetector

    return ClassicalDetector()


def build_analyzer(settings: Settings) -> FieldAnalyzer:
    from agent.inference.base import NoClassifier

    detector = build_detector(settings)
    if settings.inference.classifier == "tflite":
        from agent.inference.tflite_classifier import TfliteClassifier

        classifier = TfliteClassifier(num_threads=settings.inference.threads,
                                      views=settings.inference.classifier_views,
                                      more_views_below=settings.inference.classifier_more_views_below)
    else:
        classifier = NoClassifier()
    return FieldAnalyzer(detector, classifier, um_per_px=settings.camera.um_per_px, measure=measure_name(settings),
                         review_threshold=settings.inference.review_threshold)


@contextlib.contextmanager
def open_microscope(settings: Settings) -> Iterator[Microscope]:
    """Connect stage and camera (and start the firmware emulator when configured); close all on exit."""
    with contextlib.ExitStack() as stack:
        emulator = None
        port = settings.stage.port
        if port == "emulator":
            emulator, port = _start_emulator(settings, stack)
        stage = _build_stage(settings, port)
        stack.callback(stage.close)
        try:
            firmware = stage.connect()
        except StageBusyError as exc:
            raise DeviceBusyError(f"device busy: {exc}") from None
        if stage.needs_homing:
            if not settings.stage.home_on_connect:
                raise WbcscopeError(
                    f"stage on {port} needs homing: run 'wbcscope stage home --port {port}' "
                    "or set stage.home_on_connect = true")
            stage.home(timeout_s=settings.stage.move_timeout_s)
        if emulator is not None:
            position_um = emulator.physical_position_um
        else:
            def position_um() -> tuple[float, float, float]:
                pos = stage.position()
                return (pos.x_um, pos.y_um, pos.z_um)
        camera, slide = _build_camera(settings, position_um)
        camera = ResilientCamera(camera)
        if settings.camera.calibration:
            flat = FlatField.from_calibration(Path(settings.camera.calibration))
            if flat is not None:
                camera = FlatFieldCamera(camera, flat)
        stack.callback(camera.close)
        camera.open()
        camera.lock_auto()  # every field of a scan exposed and white-balanced alike
        yield Microscope(stage=stage, camera=camera, firmware=firmware, slide=slide, emulator=emulator)


def _start_emulator(settings: Settings, stack: contextlib.ExitStack):
    from firmware_interface.emulator import start_emulator
    from firmware_interface.emulator.motion import MotionTimings

    sim = settings.simulation
    timings = MotionTimings(
        xy_speed_mm_s=sim.xy_speed_mm_s, xy_accel_mm_s2=sim.xy_accel_mm_s2,
        xy_settle_s=sim.xy_settle_ms / 1000.0, z_speed_mm_s=sim.z_speed_mm_s,
        z_settle_s=sim.z_settle_ms / 1000.0, realtime=sim.realtime,
    )
    travel_mm = tuple(t / 1000.0 for t in settings.stage.travel_um)
    emulator, server, path = start_emulator(
        settings.stage.dialect, timings=timings, travel_mm=travel_mm,
        steps_per_um=tuple(settings.stage.steps_per_um), homing_enabled=sim.stage_homing,
    )
    stack.callback(server.stop)
    return emulator, path


def _build_stage(settings: Settings, port: str) -> Stage:
    from firmware_interface.factory import build_stage_from_settings

    return build_stage_from_settings(settings.stage, port)


def build_slide(settings: Settings):
    """The virtual slide these settings describe (deterministic from its seed): tests score against it."""
    from agent.hardware.virtual_slide import SlideSettings, VirtualSlide

    sim = settings.simulation
    return VirtualSlide(SlideSettings(
        seed=sim.seed, z_focus_um=sim.slide_z_um, tilt_x_um_per_mm=sim.tilt_x_um_per_mm,
        tilt_y_um_per_mm=sim.tilt_y_um_per_mm, curvature_um=sim.curvature_um,
        curvature_span_mm=sim.curvature_span_mm,
    ))


def _build_camera(settings: Settings, position_um) -> tuple[Camera, object | None]:
    """The camera adapter ``camera.backend`` names; the virtual slide too when it is simulated."""
    if settings.camera.backend == "virtual":
        slide = build_slide(settings)
        return build_virtual_camera(settings, slide, position_um), slide
    return build_camera(settings), None


def build_virtual_camera(settings: Settings, slide, position_um) -> Camera:
    from agent.hardware.optics import Optics, OpticsSettings
    from agent.hardware.virtual_camera import VirtualCamera

    sim, cam = settings.simulation, settings.camera
    if min(sim.xy_backlash_um) < 0:
        raise ConfigError(f"simulation.xy_backlash_um must not be negative, got {sim.xy_backlash_um}")
    return VirtualCamera(
        slide, Optics(OpticsSettings()), position_um, width_px=cam.width_px, height_px=cam.height_px,
        um_per_px=cam.um_per_px, frame_rate_hz=cam.frame_rate_hz, exposure_s=cam.exposure_ms / 1000.0,
        realtime=sim.realtime, seed=sim.seed, rotation_deg=sim.camera_rotation_deg, flip=sim.camera_flip,
        backlash_um=(sim.xy_backlash_um[0], sim.xy_backlash_um[1]),
    )


def build_camera(settings: Settings) -> Camera:
    """A real camera adapter (opencv or picamera2) from ``[camera]``; nothing is opened here."""

    cam = settings.camera
    if cam.colour_gains and len(cam.colour_gains) != 2:
        raise ConfigError(f"camera.colour_gains must be [] or [red, blue], got {cam.colour_gains}")
    gains = (cam.colour_gains[0], cam.colour_gains[1]) if cam.colour_gains else None
    if cam.backend == "opencv":
        from agent.hardware.opencv_camera import open_cv_source

        if not cam.device:
            raise ConfigError("camera.device must name a device index, /dev/video path, video file or folder")
        return open_cv_source(
            cam.device, width_px=cam.width_px, height_px=cam.height_px, frame_rate_hz=cam.frame_rate_hz,
            exposure_us=None if cam.auto_exposure else cam.exposure_ms * 1000.0, fourcc=cam.fourcc,
            loop=cam.replay_loop,
        )
    if cam.backend == "picamera2":
        from agent.hardware.picamera2_camera import Picamera2Camera

        try:
            camera_num = int(cam.device or "0")
        except ValueError:
            raise ConfigError(f"camera.device must be a camera number for picamera2, got {cam.device!r}") from None
        return Picamera2Camera(
            camera_num=camera_num, size_px=None if cam.full_resolution else (cam.width_px, cam.height_px),
            exposure_us=cam.exposure_ms * 1000.0, analogue_gain=cam.analogue_gain, colour_gains=gains,
            auto_exposure=cam.auto_exposure, tuning_file=cam.tuning_file or None,
        )
    raise ConfigError(f"camera.backend: no adapter for {cam.backend!r}")

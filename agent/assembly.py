"""Where the agent is put together: the one place that picks real or simulated adapters from settings."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator

from agent.config import Settings
from agent.errors import DeviceBusyError, WbcscopeError
from agent.field_analysis import FieldAnalyzer
from agent.hardware.camera import Camera
from agent import focus
from firmware_interface.errors import StageBusyError
from firmware_interface.stage import FirmwareInfo, Stage


@dataclass
class Microscope:
    stage: Stage
    camera: Camera
    firmware: FirmwareInfo
    slide: object | None = None
    """The virtual slide when the camera is simulated (it knows the truth), else None."""


def measure_name(settings: Settings) -> str:
    name = settings.focus.measure or focus.DEFAULT_MEASURE
    if name not in focus.MEASURES:
        raise WbcscopeError(f"focus.measure: unknown measure {name!r} (known: {', '.join(focus.MEASURES)})")
    return name


def build_analyzer(settings: Settings) -> FieldAnalyzer:
    from agent.inference.base import NoClassifier
    from agent.inference.classical import ClassicalDetector

    detector = ClassicalDetector()
    classifier = NoClassifier()
    return FieldAnalyzer(detector, classifier, um_per_px=settings.camera.um_per_px, measure=measure_name(settings))


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
        if emulator is not None:
            position_um = emulator.physical_position_um
        else:
            def position_um() -> tuple[float, float, float]:
                pos = stage.position()
                return (pos.x_um, pos.y_um, pos.z_um)
        camera, slide = _build_camera(settings, position_um)
        stack.callback(camera.close)
        camera.open()
        yield Microscope(stage=stage, camera=camera, firmware=firmware, slide=slide)


def _start_emulator(settings: Settings, stack: contextlib.ExitStack):
    from firmware_interface.emulator.grbl import GrblEmulator, MotionTimings
    from firmware_interface.emulator.pty_server import PtyEmulatorServer

    sim = settings.simulation
    timings = MotionTimings(
        xy_speed_mm_s=sim.xy_speed_mm_s, xy_accel_mm_s2=sim.xy_accel_mm_s2,
        xy_settle_s=sim.xy_settle_ms / 1000.0, z_speed_mm_s=sim.z_speed_mm_s,
        z_settle_s=sim.z_settle_ms / 1000.0, realtime=sim.realtime,
    )
    travel_mm = tuple(t / 1000.0 for t in settings.stage.travel_um)
    emulator = GrblEmulator(timings=timings, travel_mm=travel_mm)
    server = PtyEmulatorServer(emulator)
    path = server.start()
    stack.callback(server.stop)
    return emulator, path


def _build_stage(settings: Settings, port: str) -> Stage:
    from firmware_interface.grbl import GrblStage

    st = settings.stage
    limits = tuple((0.0, t) for t in st.travel_um)
    return GrblStage(
        port, baudrate=st.baudrate, reply_timeout_s=st.reply_timeout_s, soft_limits_um=limits,
        z_backlash_um=st.z_backlash_um, xy_feed_mm_min=st.xy_feed_mm_min, z_feed_mm_min=st.z_feed_mm_min,
    )


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
    from agent.hardware.optics import Optics, OpticsSettings
    from agent.hardware.virtual_camera import VirtualCamera

    sim, cam = settings.simulation, settings.camera
    slide = build_slide(settings)
    camera = VirtualCamera(
        slide, Optics(OpticsSettings()), position_um, width_px=cam.width_px, height_px=cam.height_px,
        um_per_px=cam.um_per_px, frame_rate_hz=cam.frame_rate_hz, exposure_s=cam.exposure_ms / 1000.0,
        realtime=sim.realtime, seed=sim.seed,
    )
    return camera, slide

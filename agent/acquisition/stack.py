"""Capture a z-stack: planes at equal steps around a centre, taken bottom to top."""

from __future__ import annotations

import time

from agent.field_analysis import Plane
from agent.hardware.camera import Camera
from firmware_interface.stage import Stage


def plane_heights_um(center_z_um: float, planes: int, step_um: float) -> list[float]:
    first = center_z_um - (planes - 1) / 2.0 * step_um
    return [first + i * step_um for i in range(planes)]


def capture_stack(
    stage: Stage, camera: Camera, center_z_um: float, planes: int, step_um: float, *,
    move_timeout_s: float, capture_timeout_s: float,
) -> list[Plane]:
    """Upward through the stack, so every plane is approached from the same side (backlash)."""
    stack = []
    for index, z_um in enumerate(plane_heights_um(center_z_um, planes, step_um)):
        stage.move_to(z_um=z_um, timeout_s=move_timeout_s)
        # Only a frame exposed after the stage reported idle shows this plane.
        frame = camera.capture(timeout_s=capture_timeout_s, not_before_s=time.monotonic())
        stack.append(Plane(stack_index=index, image=frame.image, z_um=round(z_um, 3)))
    return stack

"""miLab image file names: ``IIII_X_Y_SSS_FM.jpg``.

IIII is the 1-based image (field) number, X and Y the field's stage position in integer micrometres
from the slide origin, SSS the 0-based stack index and FM the plane's integer focus measure.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_NAME = re.compile(r"^(\d{4,})_(\d+)_(\d+)_(\d{3,})_(\d+)\.jpe?g$", re.IGNORECASE)


@dataclass(frozen=True)
class PlaneName:
    image_number: int
    x_um: int
    y_um: int
    stack_index: int
    focus_measure: int

    @property
    def image_index(self) -> int:
        """The key of this image in analyze_result.json."""
        return self.image_number - 1

    def filename(self) -> str:
        return (
            f"{self.image_number:04d}_{self.x_um}_{self.y_um}_"
            f"{self.stack_index:03d}_{self.focus_measure}.jpg"
        )


def format_name(image_number: int, x_um: float, y_um: float, stack_index: int, focus_measure: float) -> str:
    if image_number < 1:
        raise ValueError(f"image numbers start at 1, got {image_number}")
    if x_um < 0 or y_um < 0:
        raise ValueError(f"field position must be non-negative, got ({x_um}, {y_um})")
    return PlaneName(
        image_number, int(round(x_um)), int(round(y_um)), stack_index, max(0, int(round(focus_measure)))
    ).filename()


def parse_name(filename: str) -> PlaneName | None:
    """Parse a miLab file name; ``None`` for anything that is not one."""
    match = _NAME.match(filename)
    if match is None:
        return None
    number, x, y, stack, fm = (int(g) for g in match.groups())
    if number < 1:
        return None
    return PlaneName(number, x, y, stack, fm)

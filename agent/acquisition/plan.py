"""Which fields a scan visits, in which order."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class FieldPlan:
    index: int
    """0-based position in the scan; the field's image number is index + 1."""
    x_um: float
    y_um: float
    """Stage position of the field centre, micrometres from the slide origin."""

    @property
    def image_number(self) -> int:
        return self.index + 1


def serpentine(
    origin_um: tuple[float, float],
    region_um: tuple[float, float],
    field_um: tuple[float, float],
    *,
    overlap: float = 0.0,
    max_fields: int | None = None,
) -> list[FieldPlan]:
    """Rows of fields over the region, alternating direction so the stage never flies back a whole row."""
    step_x = field_um[0] * (1.0 - overlap)
    step_y = field_um[1] * (1.0 - overlap)
    columns = max(1, math.floor(region_um[0] / step_x + 1e-9))
    rows = max(1, math.floor(region_um[1] / step_y + 1e-9))
    fields: list[FieldPlan] = []
    for row in range(rows):
        order = range(columns) if row % 2 == 0 else range(columns - 1, -1, -1)
        for col in order:
            if max_fields is not None and len(fields) >= max_fields:
                return fields
            fields.append(FieldPlan(len(fields), origin_um[0] + col * step_x, origin_um[1] + row * step_y))
    return fields

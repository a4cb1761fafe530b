"""What one field's analysis produced, and its two serialisations.

``milab_entry`` is the field's value in ``analyze_result.json``; ``jsonl_record`` is the richer line in
``fields.jsonl`` (class names, confidences, per-plane focus, stage position, timings) from which the
miLab document can always be rebuilt.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class PlaneRecord:
    stack_index: int
    focus_value: float
    focus_index: int
    """The integer focus measure written into the file name."""
    filename: str
    kept: bool
    """False when the keep policy dropped this plane's JPEG."""
    z_um: float | None = None


@dataclass(frozen=True)
class CellRecord:
    location: tuple[int, int, int, int]
    prediction: int
    label: str
    confidence: float
    detection_score: float
    focus: int
    """Stack index of the plane in which this cell's crop is sharpest."""
    review: bool = False
    """A person should look: the classifier's confidence was below ``inference.review_threshold``, or it called a
    WBC-sized cell a platelet (``agent.field_analysis.review_reasons``)."""
    review_reasons: tuple[str, ...] = ()
    """Why ``review`` is set: ``low_confidence`` and/or ``platelet_size`` (lines written before this field
    existed load with none)."""


@dataclass
class FieldRecord:
    image_number: int
    x_um: int
    y_um: int
    planes: list[PlaneRecord]
    best_plane: int
    """Index into ``planes`` of the sharpest plane (``img_name`` is its file)."""
    cells: list[CellRecord]
    focus_measure: str
    stage_um: tuple[float, float, float] | None = None
    autofocus: dict[str, Any] = field(default_factory=dict)
    timings_s: dict[str, float] = field(default_factory=dict)
    flags: list[str] = field(default_factory=list)
    failed: str = ""
    """Why no stack could be taken (the camera died); such a field has no planes and no miLab entry."""

    @property
    def image_index(self) -> int:
        return self.image_number - 1

    @property
    def img_name(self) -> str:
        return self.planes[self.best_plane].filename

    def milab_entry(self) -> dict[str, Any]:
        return {
            "img_name": self.img_name,
            "cell_prediction": {
                str(i): {"prediction": c.prediction, "location": list(c.location), "focus": c.focus}
                for i, c in enumerate(self.cells)
            },
        }

    def jsonl_record(self) -> dict[str, Any]:
        record = asdict(self)
        record["image_index"] = self.image_index
        if not self.failed:
            record["milab"] = self.milab_entry()
        return record

    @classmethod
    def from_jsonl(cls, record: dict[str, Any]) -> "FieldRecord":
        return cls(
            image_number=record["image_number"],
            x_um=record["x_um"],
            y_um=record["y_um"],
            planes=[PlaneRecord(**p) for p in record["planes"]],
            best_plane=record["best_plane"],
            cells=[CellRecord(**{**c, "location": tuple(c["location"]),
                                 "review_reasons": tuple(c.get("review_reasons", ()))}) for c in record["cells"]],
            focus_measure=record["focus_measure"],
            stage_um=tuple(record["stage_um"]) if record.get("stage_um") else None,
            autofocus=record.get("autofocus", {}),
            timings_s=record.get("timings_s", {}),
            flags=record.get("flags", []),
            failed=record.get("failed", ""),
        )

"""Box arithmetic on ``[x, y, w, h]`` pixel boxes (the miLab ``location`` layout)."""

from __future__ import annotations

from typing import Sequence

Box = Sequence[float]


def iou(a: Box, b: Box) -> float:
    """Intersection over union; 0 for boxes without area."""
    iw = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def match(pred: Sequence[Box], truth: Sequence[Box], iou_min: float = 0.5) -> list[tuple[int, int, float]]:
    """Greedy one-to-one matches (pred index, truth index, IoU) with IoU >= iou_min, best IoU first."""
    pairs = sorted(((iou(p, t), i, j) for i, p in enumerate(pred) for j, t in enumerate(truth)), reverse=True)
    used_p: set[int] = set()
    used_t: set[int] = set()
    out = []
    for value, i, j in pairs:
        if value < iou_min:
            break
        if i not in used_p and j not in used_t:
            used_p.add(i)
            used_t.add(j)
            out.append((i, j, value))
    return out

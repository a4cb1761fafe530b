"""Accuracy and speed of agent.inference.classical.ClassicalDetector on real smears.

    python benchmarks/classical_detector.py --data ../shared/datasets

* miLab 0152 (0.11 um/px): every plane of the stack against the two published WBC boxes.
* BCCD (0.055 um/px): WBC boxes from AnnotationsCBC/ where present, else Annotations/. The images
  are split deterministically by their sorted position: even positions are the tuning split, odd
  positions the check split (the numbers to quote). ``--split all`` scores both.
* Timing: median over repeated runs on one 1920x1200 0152 plane with one OpenCV thread.

A detection is a true positive when it matches a not-yet-matched ground-truth box at IoU >= 0.5
(greedy, highest IoU first).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.inference.boxes import match  # noqa: E402
from agent.inference.classical import ClassicalDetector  # noqa: E402
from agent.results.names import parse_name  # noqa: E402
from models.detector_data import read_voc_wbc  # noqa: E402

Box = tuple[int, int, int, int]
MILAB_UM_PER_PX = 0.11
BCCD_UM_PER_PX = 0.055
IOU_MATCH = 0.5




@dataclass
class Tally:
    n_pred: int = 0
    n_truth: int = 0
    ious: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def add(self, name: str, pred: list[Box], truth: list[Box]) -> None:
        matches = match(pred, truth, IOU_MATCH)
        self.n_pred += len(pred)
        self.n_truth += len(truth)
        self.ious += [m[2] for m in matches]
        if len(matches) != len(pred) or len(matches) != len(truth):
            self.failures.append(f"{name}: {len(truth)} truth, {len(pred)} pred, {len(matches)} matched")

    def summary(self) -> str:
        recall = len(self.ious) / self.n_truth if self.n_truth else float("nan")
        precision = len(self.ious) / self.n_pred if self.n_pred else float("nan")
        mean_iou = float(np.mean(self.ious)) if self.ious else float("nan")
        return (f"recall {recall:.3f} ({len(self.ious)}/{self.n_truth})  precision {precision:.3f} "
                f"({len(self.ious)}/{self.n_pred})  mean IoU of matches {mean_iou:.3f}")


def bccd_items(bccd_dir: Path, split: str) -> list[tuple[str, Path, list[Box]]]:
    """(name, image path, WBC boxes) for the tuning ('tune'), check ('check') or 'all' split."""
    images = sorted((bccd_dir / "JPEGImages").glob("*.jpg"))
    items = []
    for pos, img_path in enumerate(images):
        if split == "tune" and pos % 2 == 1 or split == "check" and pos % 2 == 0:
            continue
        ann = bccd_dir / "AnnotationsCBC" / f"{img_path.stem}.xml"
        if not ann.exists():
            ann = bccd_dir / "Annotations" / f"{img_path.stem}.xml"
        if not ann.exists():
            continue
        items.append((img_path.stem, img_path, read_voc_wbc(ann)))
    return items


def milab_planes(stack_dir: Path) -> tuple[list[tuple[int, np.ndarray]], list[Box]]:
    import json

    cells = json.loads((stack_dir / "cells.json").read_text())["cells"]
    truth = [tuple(int(v) for v in c["location"]) for c in cells]
    planes = []
    for path in sorted(stack_dir.glob("*.jpg")):
        name = parse_name(path.name)
        if name is not None:
            planes.append((name.stack_index, cv2.imread(str(path), cv2.IMREAD_COLOR)))
    return sorted(planes, key=lambda p: p[0]), truth


def boxes_of(detector: ClassicalDetector, image: np.ndarray, um_per_px: float) -> list[Box]:
    return [d.box for d in detector.detect(image, um_per_px)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("../shared/datasets"))
    parser.add_argument("--split", choices=("tune", "check", "all"), default="check")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--show-failures", action="store_true")
    args = parser.parse_args(argv)
    cv2.setNumThreads(1)
    detector = ClassicalDetector()

    planes, truth = milab_planes(args.data / "milab_stacks" / "0152")
    print(f"miLab 0152 at {MILAB_UM_PER_PX} um/px, truth {truth}")
    core = Tally()
    for index, image in planes:
        pred = boxes_of(detector, image, MILAB_UM_PER_PX)
        tally = Tally()
        tally.add(f"plane {index}", pred, truth)
        if 3 <= index <= 7:
            core.add(f"plane {index}", pred, truth)
        ious = " ".join(f"{v:.2f}" for v in tally.ious)
        status = "ok" if not tally.failures else "FAIL"
        print(f"  plane {index}: {len(pred)} boxes, {len(tally.ious)}/2 matched, IoU [{ious}] {status}  {pred}")
    print(f"  planes 3-7: {core.summary()}")

    splits = ("tune", "check") if args.split == "all" else (args.split,)
    for split in splits:
        tally = Tally()
        for name, path, boxes in bccd_items(args.data / "bccd", split):
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)
            tally.add(name, boxes_of(detector, image, BCCD_UM_PER_PX), boxes)
        print(f"BCCD {split} split at {BCCD_UM_PER_PX} um/px: {tally.summary()}")
        if args.show_failures:
            for line in tally.failures:
                print(f"    {line}")

    image = planes[len(planes) // 2][1]
    detector.detect(image, MILAB_UM_PER_PX)
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        detector.detect(image, MILAB_UM_PER_PX)
        times.append(time.perf_counter() - t0)
    ms = np.array(times) * 1e3
    print(f"timing {image.shape[1]}x{image.shape[0]}, 1 OpenCV thread: median {np.median(ms):.1f} ms, "
          f"p90 {np.percentile(ms, 90):.1f} ms over {args.repeats} runs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

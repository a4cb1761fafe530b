"""The WBC classifier on whole fields, as a scan runs it: the configured detector's boxes, the scan's own
crop around each box (``agent.field_analysis.classifier_crop``) and the shipped int8 classifier.

    python benchmarks/classifier_fields.py slide [--fields 40]   # the virtual slide, scored against its truth
    python benchmarks/classifier_fields.py milab                 # ../shared/datasets/milab_stacks/0152
    python benchmarks/classifier_fields.py cells [--part eval]   # BCCD's eye-labelled cells (models/device_cells.py)

The virtual slide's cells are PBC crops that no split uses (the first 12 files of each class), pasted
at 0.17 µm/px and rendered at the camera's 0.11 µm/px: a scale the classifier never saw in training.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

import cv2

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agent.assembly import build_detector, build_slide  # noqa: E402
from agent.config import load_settings  # noqa: E402
from agent.field_analysis import classifier_crop  # noqa: E402
from agent.inference.boxes import iou  # noqa: E402
from agent.inference.tflite_classifier import TfliteClassifier  # noqa: E402
from models import device_cells  # noqa: E402

DATA = ROOT.parent / "shared" / "datasets"


def score(cells: list[tuple], um_per_px: float, title: str) -> None:
    clf = TfliteClassifier()
    labels = [clf.classify(crop, um_per_px).label for crop, _ in cells]
    right = sum(a == b for a, (_, b) in zip(labels, cells))
    errors = Counter(f"{t}->{p}" for p, (_, t) in zip(labels, cells) if p != t)
    print(f"{title}: {right}/{len(cells)} correct")
    print("  errors: " + (", ".join(f"{k} x{v}" for k, v in errors.most_common()) or "none"))


def cmd_slide(args) -> None:
    settings = load_settings()
    slide, cam = build_slide(settings), settings.camera
    width, height, um_per_px = cam.width_px, cam.height_px, cam.um_per_px
    detector = build_detector(settings)
    cells, missed = [], 0
    x0_um, y0_um = settings.scan.origin_um
    for i in range(args.fields):
        x_um = x0_um + (i % 8) * width * um_per_px
        y_um = y0_um + (i // 8) * height * um_per_px
        image = slide.render(x_um, y_um, width, height, um_per_px)
        dets = detector.detect(image, um_per_px)
        for t in slide.truth(x_um, y_um, width, height, um_per_px).cells:
            if not t.fully_inside:
                continue
            match = max(dets, key=lambda d: iou(d.box, t.box), default=None)
            if match is None or iou(match.box, t.box) < 0.3:
                missed += 1
                continue
            cells.append((classifier_crop(image, match.box), t.label))
    score(cells, um_per_px, f"virtual slide, {args.fields} fields ({missed} truth cells not detected)")


def cmd_milab(args) -> None:
    folder = DATA / "milab_stacks" / "0152"
    truth = json.loads((folder / "cells.json").read_text())["cells"]
    image = cv2.imread(str(next(folder.glob("*_005_*.jpg"))))
    dets = build_detector(load_settings()).detect(image, 0.11)
    cells = []
    for t in truth:
        match = max(dets, key=lambda d: iou(d.box, t["location"]))
        cells.append((classifier_crop(image, match.box), t["label"]))
    score(cells, 0.11, "miLab 0152 plane 005")


def cmd_cells(args) -> None:
    listed = device_cells.usable_cells(args.part, args.cells)
    detector = build_detector(load_settings())
    cells, missed = [], 0
    by_image: dict[str, list] = {}
    for c in listed:
        by_image.setdefault(c.image, []).append(c)
    for name, truth in sorted(by_image.items()):
        image = cv2.imread(str(args.images / name))
        if image is None:
            raise SystemExit(f"cannot read {args.images / name}")
        dets = detector.detect(image, args.um_per_px)
        for t in truth:
            match = max(dets, key=lambda d: iou(d.box, t.box), default=None)
            if match is None or iou(match.box, t.box) < 0.5:
                missed += 1
                continue
            cells.append((classifier_crop(image, match.box), t.label))
    score(cells, args.um_per_px, f"{args.cells.name}, {args.part} part ({missed} labelled cells not detected)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    slide = sub.add_parser("slide")
    slide.add_argument("--fields", type=int, default=40)
    slide.set_defaults(run=cmd_slide)
    sub.add_parser("milab").set_defaults(run=cmd_milab)
    cells = sub.add_parser("cells")
    cells.add_argument("--cells", type=Path, default=device_cells.BCCD_CELLS)
    cells.add_argument("--images", type=Path, default=device_cells.BCCD_IMAGES)
    cells.add_argument("--um-per-px", type=float, default=device_cells.BCCD_UM_PER_PX)
    cells.add_argument("--part", default="eval", choices=device_cells.PARTS)
    cells.set_defaults(run=cmd_cells)
    args = parser.parse_args()
    args.run(args)


if __name__ == "__main__":
    main()

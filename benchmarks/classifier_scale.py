"""Scale normalisation of the WBC classifier runtime: accuracy on PBC validation crops (as shipped and
rescaled), the virtual slide, the real miLab field 0152 and SegWBC Dataset 2.

    python benchmarks/classifier_scale.py calibrate     # per-class cell sizes on PBC *training* crops
    python benchmarks/classifier_scale.py pbc [--every 1]
    python benchmarks/classifier_scale.py slide [--fields 40]
    python benchmarks/classifier_scale.py milab
    python benchmarks/classifier_scale.py segwbc

Every table compares the spec's plain crop (``spec``: 20 µm at the given µm/px, one inference) with the
runtime's scale-normalised classification (``normalised``). Data come from ../shared/datasets.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import sys
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agent.inference.base import Classifier  # noqa: E402
from agent.inference.boxes import iou  # noqa: E402
from agent.inference.classical import ClassicalDetector  # noqa: E402
from agent.inference.tflite_classifier import (  # noqa: E402
    PBC_NOMINAL_UM_PER_PX, PBC_REAL_UM_PER_PX, TfliteClassifier,
)

DATA = ROOT.parent / "shared" / "datasets"
MARGIN = 0.5  # as agent/field_analysis.py crops a detection for the classifier


def classifiers() -> dict[str, Classifier]:
    return {"spec": TfliteClassifier(normalise_scale=False), "normalised": TfliteClassifier(normalise_scale=True)}


def crop_box(image: np.ndarray, box, margin: float = MARGIN) -> np.ndarray:
    x, y, w, h = box
    mx, my = int(w * margin), int(h * margin)
    return image[max(0, y - my):y + h + my, max(0, x - mx):x + w + mx]


def rescaled(image: np.ndarray, factor: float) -> np.ndarray:
    """The crop resampled by ``factor`` and brought back to its size: reflected padding when it shrank,
    a centre cut when it grew (the cell stays in the middle, its scale changes)."""
    if factor == 1.0:
        return image
    h, w = image.shape[:2]
    interp = cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR
    r = cv2.resize(image, (round(w * factor), round(h * factor)), interpolation=interp)
    rh, rw = r.shape[:2]
    if factor < 1:
        py, px = h - rh, w - rw
        return cv2.copyMakeBorder(r, py // 2, py - py // 2, px // 2, px - px // 2, cv2.BORDER_REFLECT_101)
    y0, x0 = (rh - h) // 2, (rw - w) // 2
    return r[y0:y0 + h, x0:x0 + w]


def pbc_split():
    sys.path.insert(0, str(ROOT))
    from models import data_pbc

    return data_pbc, data_pbc.make_split(DATA / "pbc")


def cmd_calibrate(args) -> None:
    data_pbc, split = pbc_split()
    clf = TfliteClassifier(normalise_scale=True)
    items = split["train"][:]
    random.Random(0).shuffle(items)
    side = clf.hint_side_px(PBC_REAL_UM_PER_PX)
    size = clf.spec["input"]["size_px"]
    logs: dict[int, list[float]] = {c: [] for c in range(len(data_pbc.CLASSES))}
    for path, ci in items:
        if len(logs[ci]) >= args.per_class:
            continue
        cell = clf.find_cell(cv2.imread(str(path)), PBC_REAL_UM_PER_PX)
        if cell is not None:
            logs[ci].append(float(np.log(cell.diameter_px * size / side)))
    for ci, name in enumerate(data_pbc.CLASSES):
        v = np.array(logs[ci])
        print(f'    "{name}": ({v.mean():.3f}, {v.std():.3f}),  # n={len(v)}, median {np.exp(np.median(v)):.1f} px')
    wbc = [np.mean(logs[ci]) for ci, n in enumerate(data_pbc.CLASSES) if n != "platelet"]
    print(f"WBC_LOG_DIAMETER = {np.mean(wbc):.2f}")


def cmd_pbc(args) -> None:
    data_pbc, split = pbc_split()
    items = split["val"][:: args.every]
    clfs = classifiers()
    hints = {"nominal 0.12": PBC_NOMINAL_UM_PER_PX, f"real {PBC_REAL_UM_PER_PX}": PBC_REAL_UM_PER_PX}
    print(f"PBC validation crops: {len(items)} (every {args.every})")
    print("| rescale | um/px given | spec | normalised |")
    print("| ---: | --- | ---: | ---: |")
    for factor in (1.0, 0.6, 1.6):
        for hint_name, hint in hints.items():
            correct = {k: 0 for k in clfs}
            for path, ci in items:
                image = rescaled(cv2.imread(str(path)), factor)
                for k, clf in clfs.items():
                    correct[k] += clf.classify(image, hint).label == data_pbc.CLASSES[ci]
            row = " | ".join(f"{100 * correct[k] / len(items):.1f}" for k in clfs)
            print(f"| x{factor} | {hint_name} | {row} |", flush=True)


def score_cells(cells: list[tuple[np.ndarray, str]], um_per_px: float, title: str) -> None:
    print(f"{title}: {len(cells)} cells, um/px given {um_per_px}")
    for k, clf in classifiers().items():
        labels = [clf.classify(crop, um_per_px).label for crop, _ in cells]
        right = sum(a == b for a, (_, b) in zip(labels, cells))
        pairs = ", ".join(f"{t}->{p}" for p, (_, t) in zip(labels, cells) if p != t)
        print(f"  {k:10s} {right}/{len(cells)}  errors: {pairs or 'none'}")


def cmd_slide(args) -> None:
    from agent.assembly import build_slide
    from agent.config import load_settings

    settings = load_settings()
    slide, cam = build_slide(settings), settings.camera
    width, height, um_per_px = cam.width_px, cam.height_px, cam.um_per_px
    detector = ClassicalDetector()
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
            cells.append((crop_box(image, match.box), t.label))
    score_cells(cells, um_per_px, f"virtual slide, {args.fields} fields, detector crops ({missed} truth cells undetected)")


def cmd_milab(args) -> None:
    folder = DATA / "milab_stacks" / "0152"
    truth = json.loads((folder / "cells.json").read_text())["cells"]
    image = cv2.imread(str(next(folder.glob("*_005_*.jpg"))))
    dets = ClassicalDetector().detect(image, 0.11)
    cells = []
    for t in truth:
        match = max(dets, key=lambda d: iou(d.box, t["location"]))
        cells.append((crop_box(image, match.box), t["label"]))
    score_cells(cells, 0.11, "miLab 0152 plane 005, detector crops")


def cmd_segwbc(args) -> None:
    folder = DATA / "segwbc_d2"
    with open(folder / "labels.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    cells = [(cv2.imread(str(folder / "images" / r["image"])), r["label"]) for r in rows]
    for um_per_px in (0.0737, PBC_REAL_UM_PER_PX):
        score_cells(cells, um_per_px, "SegWBC D2 (labels unchecked; 0.0737 = estimated scale)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    cal = sub.add_parser("calibrate")
    cal.add_argument("--per-class", type=int, default=200)
    cal.set_defaults(run=cmd_calibrate)
    pbc = sub.add_parser("pbc")
    pbc.add_argument("--every", type=int, default=1, help="use every N-th validation crop")
    pbc.set_defaults(run=cmd_pbc)
    slide = sub.add_parser("slide")
    slide.add_argument("--fields", type=int, default=40)
    slide.set_defaults(run=cmd_slide)
    sub.add_parser("milab").set_defaults(run=cmd_milab)
    sub.add_parser("segwbc").set_defaults(run=cmd_segwbc)
    args = parser.parse_args()
    args.run(args)


if __name__ == "__main__":
    main()

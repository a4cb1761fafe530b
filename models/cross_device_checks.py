"""How the classifier fares off PBC's device: the checks behind the card's cross-device reading.

    python -m models.cross_device_checks stain [--model models/wbc_classifier_int8.tflite]
    python -m models.cross_device_checks adabn --run runs/classifier_long96      # needs the training extra (Keras)
    python -m models.cross_device_checks cells [--cells LIST.csv --images DIR --um-per-px X] [--framings]  # default: BCCD's

``stain``: re-stains the even-numbered half of SegWBC's images in optical-density space (each channel's
density against the image's background multiplied by a factor, the background itself unchanged) and runs
the int8 model with the runtime's views on them. If SegWBC's paler, more purple nuclei were the problem, some
factor would bring the lymphocytes back.

``adabn``: re-estimates every BatchNorm layer's statistics on SegWBC's own squares (and on those mixed with
100 PBC validation squares) and compares float accuracy, 1 view, before and after. If BatchNorm's
training-set statistics were the problem (the Raabin-WBC finding), this would recover much of the gap.

``cells``: the runtime on every box of a labelled cell list (``models/device_cells.py``; by default BCCD's 301
WBC boxes, another microscope and stain, at its nominal 0.055 µm/px), cut as a scan cuts a detection
(``classifier_crop``): which classes it names, how many it flags for review, and its accuracy against the
certain labels of each part. Only the "train" part may be trained on (``train_classifier --cells-repeat``); the
"eval" part is the check.

SegWBC is only evaluated here, never trained on.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import cv2
import numpy as np

from agent.config import InferenceSettings
from agent.field_analysis import classifier_crop
from models import data_pbc
from models.augment import restain

REVIEW_THRESHOLD = InferenceSettings().review_threshold
SEGWBC = Path("../shared/datasets/segwbc_d2")
DENSITY_FACTORS_BGR = [(1, 1, 1), (1, 1, 1.15), (1, 1, 1.3), (1.2, 1.2, 1.2), (1.2, 1.2, 1.4), (1.4, 1.4, 1.4),
                       (1.1, 1.0, 1.3), (0.8, 0.8, 0.8)]


def load_segwbc(root: Path, keep=lambda name: True) -> tuple[list[np.ndarray], np.ndarray]:
    with open(root / "labels.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if keep(r["image"])]
    images = [cv2.imread(str(root / "images" / r["image"])) for r in rows]
    return images, np.array([data_pbc.CLASSES.index(r["label"]) for r in rows])


def recall_by_class(pred: np.ndarray, y: np.ndarray) -> str:
    return ", ".join(f"{c} {100 * float((pred[y == k] == k).mean()):.0f}"
                     for k, c in enumerate(data_pbc.CLASSES) if (y == k).any())


def stain(args) -> None:
    from models.eval_classifier import Runner

    images, y = load_segwbc(args.segwbc, keep=lambda name: int(Path(name).stem) % 2 == 0)
    runner = Runner(args.model, n_views=2)
    for factors in DENSITY_FACTORS_BGR:
        squares = np.stack([data_pbc.canonical_crop(restain(im, factors), 96, data_pbc.CROP_FACTOR) for im in images])
        pred = runner.predict(squares).argmax(1)
        print(f"density x{factors} (B, G, R): {100 * float((pred == y).mean()):.0f} % of {len(y)}; {recall_by_class(pred, y)}")


def adabn(args) -> None:
    import keras

    cfg = json.loads((args.run / "config.json").read_text())
    size, factor = cfg["size"], cfg["crop_factor"]
    images, y = load_segwbc(args.segwbc)
    x = np.stack([data_pbc.canonical_crop(im, size, factor) for im in images]).astype(np.float32)
    split = data_pbc.make_split(Path(cfg["data"]), seed=cfg["split_seed"])
    xv, yv = data_pbc.load_arrays(split["val"], "val", args.run.parent / "cache", size, factor)
    xv = xv.astype(np.float32)
    model = keras.models.load_model(args.run / "last.keras", compile=False)

    def accuracy(xx, yy):
        return 100 * float((model.predict(xx, verbose=0, batch_size=128).argmax(1) == yy).mean())

    print(f"as trained: SegWBC {accuracy(x, y):.0f} %, PBC val {accuracy(xv, yv):.1f} %")
    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    trained = [[w.numpy() for w in layer.weights] for layer in norms]
    for name, data in (("SegWBC", x), ("SegWBC + 100 PBC", np.concatenate([x, xv[::11][:100]]))):
        for layer, weights in zip(norms, trained):
            layer.set_weights(weights)
            layer.momentum = 0.0  # one training-mode pass then leaves exactly this batch's statistics
        model(data, training=True)
        print(f"statistics from {name}: SegWBC {accuracy(x, y):.0f} %, PBC val {accuracy(xv, yv):.1f} %")


def cells(args) -> None:
    from collections import Counter

    from agent.inference.tflite_classifier import TfliteClassifier
    from models import device_cells

    classifier = TfliteClassifier(args.model.parent)
    listed = device_cells.read_cells(args.cells)
    images: dict[str, np.ndarray] = {}
    names, confidences, pred = Counter(), [], []
    for cell in listed:
        if cell.image not in images:
            images[cell.image] = data_pbc.read_bgr(args.images / cell.image)
        result = classifier.classify(classifier_crop(images[cell.image], cell.box), args.um_per_px)
        names[result.label] += 1
        confidences.append(result.confidence)
        pred.append(data_pbc.CLASSES.index(result.label))
    print(f"{len(listed)} WBC boxes: " + ", ".join(f"{k} {v}" for k, v in names.most_common()))
    print(f"median confidence {float(np.median(confidences)):.2f}; under the review threshold {REVIEW_THRESHOLD}: "
          f"{100 * float(np.mean(np.array(confidences) < REVIEW_THRESHOLD)):.0f} %")
    pred = np.array(pred)
    for part in device_cells.PARTS:
        keep = np.array([c.usable and c.part == part for c in listed])
        if not keep.any():
            continue
        y = np.array([data_pbc.CLASSES.index(c.label) for c, kept in zip(listed, keep) if kept])
        p = pred[keep]
        print(f"certain labels, {part} part: {int((p == y).sum())}/{len(y)} = {100 * float((p == y).mean()):.1f} %; "
              f"recall: {recall_by_class(p, y)}")
    if args.framings:
        framings(classifier, [c for c in listed if c.usable and c.part == "eval"], images, args.um_per_px)
    if args.write_samples:
        write_samples(args.write_samples, [(c, int(k), conf) for c, k, conf in zip(listed, pred, confidences)
                                           if c.usable and c.part == "eval"], images)


def half_size(image: np.ndarray) -> np.ndarray:
    """The image at half its size (``INTER_AREA``), as a camera with half the resolution would give it."""
    return cv2.resize(image, (image.shape[1] // 2, image.shape[0] // 2), interpolation=cv2.INTER_AREA)


SAMPLES_PER_CLASS = {"neutrophil": 3, "eosinophil": 2, "lymphocyte": 2, "monocyte": 1}


def write_samples(folder: Path, cells: list, images: dict, seed: int = 7) -> None:
    """Test fixtures: per class, the first eval-part cells in a seeded order that the model names right and is
    sure of (not flagged for review, so that a last-bit difference between builds cannot flip them), cut as a
    scan cuts them and saved at half size (JPEG) as ``<class>__<image stem>_<x>_<y>.jpg``."""
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*__*.jpg"):
        old.unlink()
    taken: dict[str, int] = {}
    for k in np.random.default_rng(seed).permutation(len(cells)):
        cell, predicted, confidence = cells[k]
        if (taken.get(cell.label, 0) >= SAMPLES_PER_CLASS.get(cell.label, 0) or data_pbc.CLASSES[predicted] != cell.label
                or confidence < REVIEW_THRESHOLD):
            continue
        crop = classifier_crop(images[cell.image], cell.box)
        name = f"{cell.label}__{Path(cell.image).stem}_{cell.box[0]}_{cell.box[1]}.jpg"
        cv2.imwrite(str(folder / name), half_size(crop), [cv2.IMWRITE_JPEG_QUALITY, 90])
        taken[cell.label] = taken.get(cell.label, 0) + 1
    print(f"wrote {sum(taken.values())} samples to {folder}: {taken}")


def framings(classifier, cells, images: dict, um_per_px: float) -> None:
    """The same cells cut 0.1, 0.5 and 1 box size around their box, with and without the µm/px hint, and from
    the image at half size: how much the answers depend on how a caller crops."""
    def right(cut, hint) -> int:
        return sum(classifier.classify(cut(c), hint).label == c.label for c in cells)

    for margin in (0.1, 0.5, 1.0):
        for hint in (um_per_px, None):
            n = right(lambda c: classifier_crop(images[c.image], c.box, margin), hint)
            print(f"eval part, crop {margin} box sizes around, hint {hint}: {n}/{len(cells)}")
    halves = {k: half_size(v) for k, v in images.items()}
    n = right(lambda c: classifier_crop(halves[c.image], tuple(v // 2 for v in c.box)), None)
    print(f"eval part, image at half size, no hint: {n}/{len(cells)}")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("check", choices=["stain", "adabn", "cells"])
    ap.add_argument("--segwbc", type=Path, default=SEGWBC)
    ap.add_argument("--cells", type=Path, default=None, help="cell list (default: BCCD's, models/device_cells.py)")
    ap.add_argument("--images", type=Path, default=None, help="its images (default: BCCD's JPEGImages)")
    ap.add_argument("--um-per-px", type=float, default=None, help="their scale (default: BCCD's 0.055)")
    ap.add_argument("--framings", action="store_true", help="cells: also other crops of the eval part's cells")
    ap.add_argument("--write-samples", type=Path, default=None,
                    help="cells: write test fixtures from the eval part's correctly named cells into this folder")
    ap.add_argument("--model", type=Path, default=Path(__file__).resolve().parent / "wbc_classifier_int8.tflite")
    ap.add_argument("--run", type=Path, default=Path("runs/classifier_long96"))
    args = ap.parse_args(argv)
    if args.check == "cells":
        from models import device_cells

        if args.um_per_px is not None and not args.um_per_px > 0:
            ap.error(f"--um-per-px must be a positive number, got {args.um_per_px}")
        args.cells = device_cells.BCCD_CELLS if args.cells is None else args.cells
        args.images = device_cells.BCCD_IMAGES if args.images is None else args.images
        args.um_per_px = device_cells.BCCD_UM_PER_PX if args.um_per_px is None else args.um_per_px
    {"stain": stain, "adabn": adabn, "cells": cells}[args.check](args)


if __name__ == "__main__":
    main()

"""``wbcscope classify`` and ``wbcscope detect``: the inference steps on image files, for scripts.

Output is stable (scripts parse it): with ``--json`` a JSON list with one entry per file, in the order
given; a file that cannot be read or decoded gets ``{"path", "error"}`` instead of stopping the run.
The exit status is non-zero only when no file could be processed.

    wbcscope classify CROP.jpg... [--um-per-px X] [--json]   # names the cell in the middle of each crop
    wbcscope detect FIELD.jpg... [--um-per-px X] [--json]    # WBC boxes [x, y, w, h] in each field
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from agent.config import Settings, load_settings
from agent.errors import ConfigError, WbcscopeError

EXIT_OK = 0
EXIT_NOTHING_PROCESSED = 1
MIN_CROP_PX = 16
"""A crop with a shorter side cannot show a cell's nucleus and cytoplasm (a 12 µm WBC is 27 px even at 0.44 µm/px)."""


class ImageReadError(WbcscopeError, OSError):
    """A file is missing, unreadable or not a decodable image."""


class UnusableImageError(WbcscopeError, ValueError):
    """A decoded image that cannot show what the models read: no colour, or too small to hold a cell."""


def require_colour(image: np.ndarray) -> np.ndarray:
    """Refuses a grayscale image (decoded to three equal channels): both models read the stain's colour, and
    would otherwise answer with confidence about an image that cannot show it."""
    if np.array_equal(image[..., 0], image[..., 1]) and np.array_equal(image[..., 1], image[..., 2]):
        raise UnusableImageError("grayscale image: the models need the stain's colour")
    return image


def require_crop_size(image: np.ndarray) -> np.ndarray:
    h, w = image.shape[:2]
    if min(h, w) < MIN_CROP_PX:
        raise UnusableImageError(f"{w}x{h} px is too small for a cell crop (at least {MIN_CROP_PX} px a side)")
    return image


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Registers ``classify`` and ``detect`` (each with its handler) on the top-level sub-parsers."""
    classify = sub.add_parser("classify", help="name the WBC in the middle of each crop (int8 TFLite model)")
    detect = sub.add_parser("detect", help="find WBCs in each field image (the configured detector)")
    for parser in (classify, detect):
        parser.add_argument("images", nargs="+", type=Path, metavar="IMG")
        parser.add_argument("--um-per-px", type=float,
                            help="image scale in µm per pixel (detect: default camera.um_per_px; "
                                 "classify: optional, the cell is measured in the crop)")
        parser.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
        parser.add_argument("--config", type=Path, help="TOML settings file")
    classify.set_defaults(handler=run_classify)
    detect.set_defaults(handler=run_detect)


def read_image(path: Path) -> np.ndarray:
    """BGR uint8; decoding from bytes also handles paths OpenCV's imread cannot (non-ASCII on Windows)."""
    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError as exc:
        raise ImageReadError(f"cannot read: {exc.strerror or exc}") from None
    if data.size == 0:
        raise ImageReadError("empty file")
    image = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if image is None:
        raise ImageReadError("not a decodable image")
    return image


def _scale(args: argparse.Namespace, settings: Settings) -> float:
    um_per_px = args.um_per_px if args.um_per_px is not None else settings.camera.um_per_px
    if not um_per_px > 0:
        raise ConfigError(f"--um-per-px must be positive, got {um_per_px}")
    return um_per_px


def run_classify(args: argparse.Namespace) -> int:
    from agent.inference.tflite_classifier import TfliteClassifier

    settings = load_settings(args.config)
    # The classifier measures the cell itself: without --um-per-px a crop's scale is unknown, and the
    # camera's scale would be a guess about someone else's image.
    um_per_px = _scale(args, settings) if args.um_per_px is not None else None
    # Always the int8 model: classifying with inference.classifier = "none" would only say "wbc".
    classifier = TfliteClassifier(num_threads=settings.inference.threads, views=settings.inference.classifier_views,
                                  more_views_below=settings.inference.classifier_more_views_below)
    entries: list[dict[str, Any]] = []
    for path in args.images:
        try:
            result = classifier.classify(require_crop_size(require_colour(read_image(path))), um_per_px)
        except (ImageReadError, UnusableImageError) as exc:
            entries.append({"path": str(path), "error": str(exc)})
            continue
        entries.append({"path": str(path), "label": result.label, "prediction": result.prediction,
                        "confidence": round(float(result.confidence), 4)})
    return _report(entries, args.json, ("label", "prediction", "confidence"))


def run_detect(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    um_per_px = _scale(args, settings)
    from agent.assembly import build_detector

    detector = build_detector(settings)
    entries: list[dict[str, Any]] = []
    for path in args.images:
        try:
            detections = detector.detect(require_colour(read_image(path)), um_per_px)
        except (ImageReadError, UnusableImageError) as exc:
            entries.append({"path": str(path), "error": str(exc)})
            continue
        cells = [{"location": [int(v) for v in d.box], "score": round(float(d.score), 4)} for d in detections]
        entries.append({"path": str(path), "cells": cells})
    return _report(entries, args.json, ("cells",))


def _report(entries: list[dict[str, Any]], as_json: bool, columns: tuple[str, ...]) -> int:
    if as_json:
        print(json.dumps(entries, indent=2))
    else:
        _print_table(entries, columns)
    for entry in entries:
        if "error" in entry:
            print(f"wbcscope: {entry['path']}: {entry['error']}", file=sys.stderr)
    return EXIT_OK if any("error" not in e for e in entries) else EXIT_NOTHING_PROCESSED


def _print_table(entries: list[dict[str, Any]], columns: tuple[str, ...]) -> None:
    rows = [["path", *columns]]
    for entry in entries:
        if "error" in entry:
            rows.append([entry["path"], f"error: {entry['error']}", *[""] * (len(columns) - 1)])
        elif columns == ("cells",):
            boxes = " ".join(f"[{x},{y},{w},{h}]:{c['score']:.2f}"
                             for c in entry["cells"] for x, y, w, h in [c["location"]])
            rows.append([entry["path"], f"{len(entry['cells'])} {boxes}".rstrip()])
        else:
            rows.append([entry["path"], *[str(entry[c]) for c in columns]])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        print("  ".join([*(cell.ljust(w) for cell, w in zip(row, widths)), row[-1]]).rstrip())

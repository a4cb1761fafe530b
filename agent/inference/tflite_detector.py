"""The int8 TFLite WBC detector (a small CenterNet), run with LiteRT (``ai_edge_litert``; ``tflite_runtime``
where a device only has that). Everything the runtime needs is in ``models/wbc_detector_spec.json``:

1. the field is resampled to the model's scale (``input.um_per_px``, 0.44 µm/px: a 12 µm WBC is ~27 px);
2. it is padded (bottom / right, with the field's per-channel median colour) to the model's fixed input
   size, or cut into overlapping tiles of that size when larger; RGB, ``int8 = uint8 - 128``;
3. the two outputs at stride 4 are decoded in NumPy: a centre heatmap (peaks = local 3x3 maxima above
   ``decode.score_threshold``) and per-cell box regression (centre offset and width / height in cells);
   overlapping boxes are suppressed (greedy NMS), boxes are scaled back to full-resolution pixels, and boxes
   whose longer side is under ``decode.min_box_um`` (platelets, specks; the smallest annotated BCCD WBC
   is 5.3 µm) are dropped.

No TensorFlow import here.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from agent.inference.base import Detection, Detector
from agent.inference.tflite_classifier import (
    ModelError,
    _interpreter_class,
    shipped_model_dir,
)

SPEC_FILE = "wbc_detector_spec.json"


def peaks(heat: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cols) of local 3x3 maxima of ``heat`` (H x W float) at or above ``threshold``."""
    pooled = cv2.dilate(heat.astype(np.float32), np.ones((3, 3), np.uint8))
    return np.nonzero((heat >= pooled) & (heat >= threshold))


def nms(boxes: np.ndarray, scores: np.ndarray, iou_max: float) -> list[int]:
    """Greedy non-maximum suppression of x0 y0 x1 y1 boxes; indices kept, best first."""
    order = list(np.argsort(-scores, kind="stable"))
    keep: list[int] = []
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    while order:
        i = order.pop(0)
        keep.append(i)
        if not order:
            break
        rest = np.array(order)
        ix0 = np.maximum(boxes[i, 0], boxes[rest, 0])
        iy0 = np.maximum(boxes[i, 1], boxes[rest, 1])
        ix1 = np.minimum(boxes[i, 2], boxes[rest, 2])
        iy1 = np.minimum(boxes[i, 3], boxes[rest, 3])
        inter = np.clip(ix1 - ix0, 0, None) * np.clip(iy1 - iy0, 0, None)
        iou = inter / np.maximum(area[i] + area[rest] - inter, 1e-6)
        order = [j for j, v in zip(order, iou) if v <= iou_max]
    return keep


def decode(heat: np.ndarray, box: np.ndarray, stride: int, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Boxes (N x 4, x0 y0 x1 y1 in model-input px) and scores from one output pair
    (heat: H x W, box: H x W x 4 = offset x, offset y, width, height in cells)."""
    rows, cols = peaks(heat, threshold)
    if rows.size == 0:
        return np.zeros((0, 4), np.float32), np.zeros((0,), np.float32)
    reg = box[rows, cols]
    cx = (cols + 0.5 + reg[:, 0]) * stride
    cy = (rows + 0.5 + reg[:, 1]) * stride
    w = np.maximum(reg[:, 2], 0.0) * stride
    h = np.maximum(reg[:, 3], 0.0) * stride
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1).astype(np.float32)
    return boxes, heat[rows, cols].astype(np.float32)


def fill_colour(rgb: np.ndarray) -> np.ndarray:
    """Padding colour: the per-channel median of the field (of every 4th pixel per axis, for speed)."""
    return np.median(rgb[::4, ::4].reshape(-1, 3), axis=0).astype(np.uint8)


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of ``tile`` px covering ``length`` px with at least ``overlap`` px overlap."""
    if length <= tile:
        return [0]
    n = int(np.ceil((length - overlap) / (tile - overlap)))
    return [int(round(i * (length - tile) / (n - 1))) for i in range(n)]


class TfliteDetector(Detector):
    name = "wbc_detector_int8"

    def __init__(self, model_dir: Path | None = None, *, num_threads: int = 1, model_file: str | None = None,
                 score_threshold: float | None = None) -> None:
        self.model_dir = Path(model_dir) if model_dir else shipped_model_dir()
        self.num_threads = num_threads
        try:
            self.spec = json.loads((self.model_dir / SPEC_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ModelError(f"cannot read {self.model_dir / SPEC_FILE}: {exc}") from None
        self.model_path = Path(model_file) if model_file else self.model_dir / self.spec["model"]
        dec = self.spec["decode"]
        self.score_threshold = float(dec["score_threshold"] if score_threshold is None else score_threshold)
        self._interpreter = None

    @property
    def model_files(self) -> list[Path]:
        return [self.model_path, self.model_dir / SPEC_FILE]

    def _load(self):
        if self._interpreter is None:
            try:
                interpreter = _interpreter_class()(model_path=str(self.model_path), num_threads=self.num_threads)
            except ValueError as exc:  # LiteRT's error for a missing or corrupt flatbuffer
                raise ModelError(f"cannot load {self.model_path}: {exc}") from None
            interpreter.allocate_tensors()
            inp = interpreter.get_input_details()[0]
            outs = {int(o["shape"][-1]): o for o in interpreter.get_output_details()}
            if set(outs) != {1, 4}:
                raise ModelError(f"{self.model_path}: expected outputs with 1 and 4 channels, got {sorted(outs)}")
            self._io = (inp, outs[1], outs[4])
            self._interpreter = interpreter
        return self._interpreter

    def model_input(self, image_bgr: np.ndarray, um_per_px: float) -> tuple[np.ndarray, float]:
        """The field at the model's scale as RGB uint8, and the factor model px per source px."""
        if image_bgr.ndim != 3 or image_bgr.shape[2] != 3 or image_bgr.dtype != np.uint8:
            raise ValueError(f"expected an H x W x 3 uint8 BGR image, got {image_bgr.shape} {image_bgr.dtype}")
        if not um_per_px > 0:
            raise ValueError(f"um_per_px must be positive, got {um_per_px}")
        f = um_per_px / self.spec["input"]["um_per_px"]
        h, w = image_bgr.shape[:2]
        size = (max(1, int(round(w * f))), max(1, int(round(h * f))))
        small = cv2.resize(image_bgr, size, interpolation=cv2.INTER_AREA if f < 1 else cv2.INTER_LINEAR)
        return cv2.cvtColor(small, cv2.COLOR_BGR2RGB), size[0] / w

    def _run_tile(self, tile_rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        interpreter = self._load()
        inp, heat_d, box_d = self._io
        if inp["dtype"] == np.int8:
            x = (tile_rgb.astype(np.int16) - 128).astype(np.int8)[None]
        else:
            x = tile_rgb.astype(np.float32)[None]
        interpreter.set_tensor(inp["index"], x)
        interpreter.invoke()
        out = []
        for d in (heat_d, box_d):
            raw = interpreter.get_tensor(d["index"])[0]
            scale, zero = d["quantization"]
            out.append((raw.astype(np.float32) - zero) * scale if raw.dtype != np.float32 else raw)
        return out[0][..., 0], out[1]

    def detect_model_px(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Boxes (x0 y0 x1 y1, model px of ``rgb``) and scores for an RGB field already at the model's scale."""
        spec_in, dec = self.spec["input"], self.spec["decode"]
        th, tw = spec_in["height_px"], spec_in["width_px"]
        overlap, stride = dec["tile_overlap_px"], dec["stride"]
        h, w = rgb.shape[:2]
        fill = fill_colour(rgb)
        ys, xs = tile_starts(h, th, overlap), tile_starts(w, tw, overlap)
        all_boxes, all_scores = [], []
        for iy, y0 in enumerate(ys):
            for ix, x0 in enumerate(xs):
                tile = rgb[y0:y0 + th, x0:x0 + tw]
                if tile.shape[:2] != (th, tw):
                    canvas = np.empty((th, tw, 3), np.uint8)
                    canvas[:] = fill
                    canvas[:tile.shape[0], :tile.shape[1]] = tile
                    tile = canvas
                heat, box = self._run_tile(tile)
                boxes, scores = decode(heat, box, stride, self.score_threshold)
                if len(boxes) == 0:
                    continue
                boxes += np.array([x0, y0, x0, y0], np.float32)
                # each tile owns the area up to the middle of its overlaps with its neighbours
                cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
                lo_x = 0 if ix == 0 else (xs[ix - 1] + tw + x0) / 2
                hi_x = w if ix == len(xs) - 1 else (x0 + tw + xs[ix + 1]) / 2
                lo_y = 0 if iy == 0 else (ys[iy - 1] + th + y0) / 2
                hi_y = h if iy == len(ys) - 1 else (y0 + th + ys[iy + 1]) / 2
                own = (cx >= lo_x) & (cx < hi_x) & (cy >= lo_y) & (cy < hi_y)
                all_boxes.append(boxes[own])
                all_scores.append(scores[own])
        if not all_boxes:
            return np.zeros((0, 4), np.float32), np.zeros((0,), np.float32)
        boxes, scores = np.concatenate(all_boxes), np.concatenate(all_scores)
        boxes[:, [0, 2]] = np.clip(boxes[:, [0, 2]], 0, w)
        boxes[:, [1, 3]] = np.clip(boxes[:, [1, 3]], 0, h)
        keep = nms(boxes, scores, dec["nms_iou"])
        return boxes[keep], scores[keep]

    def detect(self, image: np.ndarray, um_per_px: float) -> list[Detection]:
        rgb, f = self.model_input(image, um_per_px)
        boxes, scores = self.detect_model_px(rgb)
        img_h, img_w = image.shape[:2]
        dec = self.spec["decode"]
        min_side = dec.get("min_box_px", 2)
        min_long_px = dec.get("min_box_um", 0.0) / um_per_px
        out = []
        for (x0, y0, x1, y1), s in zip(boxes / f, scores):
            bx0, by0 = max(0, int(round(x0))), max(0, int(round(y0)))
            bx1, by1 = min(img_w, int(round(x1))), min(img_h, int(round(y1)))
            if bx1 - bx0 < min_side or by1 - by0 < min_side or max(bx1 - bx0, by1 - by0) < min_long_px:
                continue
            out.append(Detection(box=(bx0, by0, bx1 - bx0, by1 - by0), score=float(s)))
        out.sort(key=lambda d: d.score, reverse=True)
        return out

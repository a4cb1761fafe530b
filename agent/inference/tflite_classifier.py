"""The int8 TFLite WBC classifier, run with LiteRT (``ai_edge_litert``; ``tflite_runtime`` where a device
only has that). Preprocessing follows the model's spec file (``models/wbc_classifier_spec.json``):
a square of ``field_um`` around the cell, resized to the model's input, RGB, ``uint8 - 128``."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import cv2
import numpy as np

from agent.errors import WbcscopeError
from agent.inference.base import PREDICTION_CODES, Classification, Classifier

SPEC_FILE = "wbc_classifier_spec.json"


class ModelError(WbcscopeError, RuntimeError):
    """A model file is missing, unreadable, or not what its spec says."""


def _interpreter_class():
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        try:
            from tflite_runtime.interpreter import Interpreter
        except ImportError:
            raise ModelError("no TFLite interpreter: install ai-edge-litert (or tflite-runtime)") from None
    return Interpreter


def shipped_model_dir() -> Path:
    return Path(str(resources.files("models")))


class TfliteClassifier(Classifier):
    name = "wbc_classifier_int8"

    def __init__(self, model_dir: Path | None = None, *, num_threads: int = 1) -> None:
        self.model_dir = Path(model_dir) if model_dir else shipped_model_dir()
        self.num_threads = num_threads
        self._interpreter = None
        try:
            self.spec = json.loads((self.model_dir / SPEC_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ModelError(f"cannot read {self.model_dir / SPEC_FILE}: {exc}") from None
        self.classes: list[str] = self.spec["classes"]
        unknown = [c for c in self.classes if c not in PREDICTION_CODES]
        if unknown:
            raise ModelError(f"{SPEC_FILE}: classes without a prediction code: {unknown}")

    @property
    def model_files(self) -> list[Path]:
        return [self.model_dir / self.spec["model"], self.model_dir / self.spec["labels"]]

    def _load(self):
        if self._interpreter is None:
            path = self.model_dir / self.spec["model"]
            try:
                interpreter = _interpreter_class()(model_path=str(path), num_threads=self.num_threads)
            except ValueError as exc:  # LiteRT's error for a missing or corrupt flatbuffer
                raise ModelError(f"cannot load {path}: {exc}") from None
            interpreter.allocate_tensors()
            self._interpreter = interpreter
        return self._interpreter

    def input_tensor(self, crop_bgr: np.ndarray, um_per_px: float) -> np.ndarray:
        """The crop, centred on its middle, as the model's int8 NHWC input."""
        spec = self.spec["input"]
        size = spec["size_px"]
        h, w = crop_bgr.shape[:2]
        cx, cy = (w - 1) / 2.0, (h - 1) / 2.0
        side = max(1, int(round(spec["field_um"] / um_per_px)))
        x0, y0 = int(round(cx - side / 2.0)), int(round(cy - side / 2.0))
        pad = max(0, -x0, -y0, x0 + side - w, y0 + side - h)
        if pad:
            crop_bgr = cv2.copyMakeBorder(crop_bgr, pad, pad, pad, pad, cv2.BORDER_REFLECT_101)
            x0, y0 = x0 + pad, y0 + pad
        square = crop_bgr[y0:y0 + side, x0:x0 + side]
        interpolation = cv2.INTER_AREA if side >= size else cv2.INTER_LINEAR
        rgb = cv2.cvtColor(cv2.resize(square, (size, size), interpolation=interpolation), cv2.COLOR_BGR2RGB)
        return (rgb.astype(np.int16) + spec["zero_point"]).astype(np.int8)[None]

    def probabilities(self, crop_bgr: np.ndarray, um_per_px: float) -> np.ndarray:
        interpreter = self._load()
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], self.input_tensor(crop_bgr, um_per_px))
        interpreter.invoke()
        out = self.spec["output"]
        raw = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])[0]
        return (raw.astype(np.float32) - out["zero_point"]) * out["scale"]

    def classify(self, crop: np.ndarray, um_per_px: float) -> Classification:
        p = self.probabilities(crop, um_per_px)
        best = int(np.argmax(p))
        return Classification(label=self.classes[best], confidence=float(p[best]))

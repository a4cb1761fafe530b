"""The int8 TFLite WBC classifier, run with LiteRT (``ai_edge_litert``; ``tflite_runtime`` where a device
only has that). Preprocessing follows the model's spec file (``models/wbc_classifier_spec.json``): the cell
square of ``agent/inference/cell_crop.py`` (a fixed number of nucleus diameters around the stained cell
nearest the crop's middle), resized to the model's input, its background balanced to the training
crops' colour, RGB, ``uint8 - 128``.

The square is measured on the cell itself, so a crop at any pixel scale (a PBC crop, a tight crop filled by
the cell, a wide one with the cell small) gives the model the same view; ``um_per_px`` is only a hint for
the first measuring pass and may be None.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import cv2
import numpy as np

from agent.errors import WbcscopeError
from agent.inference.base import PREDICTION_CODES, Classification, Classifier
from agent.inference.cell_crop import CellSquare, balance_background, cut_square, locate_cell
from agent.inference.cell_finder import CellFinder

SPEC_FILE = "wbc_classifier_spec.json"
VIEW_CHOICES = (1, 2, 4)
MORE_VIEWS_BELOW = 0.9
"""Default: further views only for a cell whose first view's top probability is under this."""


def views(image: np.ndarray, n: int) -> list[np.ndarray]:
    """The first ``n`` of: as is, mirrored left-right, mirrored top-bottom, turned 90°. A cell has no
    up or left, and training saw every rotation and flip, so averaging over views only removes noise
    (``models/classifier.md`` has what each count is worth)."""
    out = [image, image[:, ::-1], image[::-1], np.rot90(image)]
    return [np.ascontiguousarray(v) for v in out[:n]]


def average_views(probabilities: list[np.ndarray]) -> np.ndarray:
    """Geometric mean of the views' probabilities, renormalised (one confident view cannot outvote the rest)."""
    log_mean = np.mean([np.log(np.asarray(p, np.float64) + 1e-3) for p in probabilities], axis=0)
    p = np.exp(log_mean - log_mean.max())
    return (p / p.sum()).astype(np.float32)


def classify_views(run, image: np.ndarray, n: int, more_views_below: float = MORE_VIEWS_BELOW) -> np.ndarray:
    """Probabilities of ``image`` from ``run`` (one view in, probabilities out) over up to ``n`` views.

    The first view alone decides when its top probability reaches ``more_views_below``: on PBC validation
    that is about 9 cells in 10, and the other views would not change their answer, so a confident cell
    costs one invoke and only the unsure rest pays for all ``n`` (``models/classifier.md``). 1.0 runs
    every view for every cell.
    """
    all_views = views(image, n)
    probabilities = [run(all_views[0])]
    if float(np.max(probabilities[0])) < more_views_below:
        probabilities += [run(v) for v in all_views[1:]]
    return average_views(probabilities)


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

    def __init__(self, model_dir: Path | None = None, *, num_threads: int = 1, views: int = 2,
                 more_views_below: float = MORE_VIEWS_BELOW) -> None:
        if views not in VIEW_CHOICES:
            raise ValueError(f"views must be one of {VIEW_CHOICES}, got {views}")
        if not 0.0 <= more_views_below <= 1.0:
            raise ValueError(f"more_views_below must be within 0..1, got {more_views_below}")
        self.model_dir = Path(model_dir) if model_dir else shipped_model_dir()
        self.num_threads = num_threads
        self.views = views
        self.more_views_below = more_views_below
        self.finder = CellFinder()
        self._interpreter = None
        try:
            self.spec = json.loads((self.model_dir / SPEC_FILE).read_text(encoding="utf-8"))
            self.classes: list[str] = self.spec["classes"]
            self.size: int = int(self.spec["input"]["size_px"])
            self.crop_factor = float(self.spec["input"]["crop_factor"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ModelError(f"cannot read {self.model_dir / SPEC_FILE}: {exc!r}") from None
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

    def locate(self, crop_bgr: np.ndarray, um_per_px: float | None = None) -> CellSquare:
        """The square the model looks at: ``crop_factor`` nucleus diameters around the cell (the finder
        refuses a crop that is not H x W x 3 uint8 and a hint that is not positive)."""
        return locate_cell(crop_bgr, self.crop_factor, um_per_px, self.finder)

    def input_tensor(self, crop_bgr: np.ndarray, square: CellSquare) -> np.ndarray:
        """The model's int8 NHWC input for ``square`` of the BGR crop, its background balanced to training's."""
        resized = balance_background(cut_square(crop_bgr, square.cx, square.cy, square.side_px, self.size))
        rgb = cv2.cvtColor(resized, cv2.COLOR_BGR2RGB)
        return (rgb.astype(np.int16) + self.spec["input"]["zero_point"]).astype(np.int8)[None]

    def _run(self, tensor: np.ndarray) -> np.ndarray:
        interpreter = self._load()
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], tensor)
        interpreter.invoke()
        out = self.spec["output"]
        raw = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])[0]
        return (raw.astype(np.float32) - out["zero_point"]) * out["scale"]

    def probabilities(self, crop_bgr: np.ndarray, um_per_px: float | None = None) -> np.ndarray:
        """Class probabilities of the cell nearest the middle of the crop (sums to 1), averaged over views."""
        tensor = self.input_tensor(crop_bgr, self.locate(crop_bgr, um_per_px))[0]
        return classify_views(lambda v: self._run(v[None]), tensor, self.views, self.more_views_below)

    def classify(self, crop: np.ndarray, um_per_px: float | None = None) -> Classification:
        p = self.probabilities(crop, um_per_px)
        best = int(np.argmax(p))
        return Classification(label=self.classes[best], confidence=float(p[best]))

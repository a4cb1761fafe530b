"""The int8 TFLite WBC classifier, run with LiteRT (``ai_edge_litert``; ``tflite_runtime`` where a device
only has that). Preprocessing follows the model's spec file (``models/wbc_classifier_spec.json``):
a square around the cell, resized to the model's input, RGB, ``uint8 - 128``.

Scale normalisation (why this is more than the spec's fixed 20 µm crop): the PBC training crops are
really ~0.17 µm/px, not the nominal 0.12 the spec assumed, and callers' µm/px may be wrong or unknown.
So ``probabilities`` does not trust ``um_per_px`` alone. It measures the stained cell (``CellFinder``),
runs the model at a few crop sizes around the one the hint implies, and scores each (class, size) pair
by the model's output *and* by how well the cell's resulting size in the model input matches the size
that class had in training. Summing over sizes gives the class. Absolute size is what tells a
lymphocyte from a monocyte, so a plain "rescale every cell to the median size" loses ~15 points; the
joint score keeps the size cue and still follows a wrong hint (``models/classifier.md``, "Runtime scale
normalisation", has the numbers and ``benchmarks/classifier_scale.py`` the commands).
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import cv2
import numpy as np

from agent.errors import WbcscopeError
from agent.inference.base import PREDICTION_CODES, Classification, Classifier
from agent.inference.cell_finder import CellFinder, FoundCell

SPEC_FILE = "wbc_classifier_spec.json"

PBC_NOMINAL_UM_PER_PX = 0.12
"""The scale the model's spec (and training) assumed for PBC crops."""
PBC_REAL_UM_PER_PX = 0.17
"""Measured: PBC red cells ~38-44 px (7.5 µm), neutrophils ~71 px (12 µm); the virtual slide's PBC atlas
uses 0.17 too. A caller's true µm/px is converted with this, so the spec's 20 µm field is ~28 µm real."""

SCALE_FACTORS = tuple(float(f) for f in np.exp(np.linspace(np.log(0.5), np.log(2.0), 7)))
"""Crop sizes tried (relative to a centre between the hint's and the cell's own size), in steps of 1.26x:
training augmentation covers about ±18 %, so neighbouring sizes overlap."""
HINT_WEIGHT = 0.5
"""Prior probability that the hint's crop size is right (the rest is spread evenly over SCALE_FACTORS)."""
HINT_SIGMA_LOG = 0.12
"""Width (natural log of the size factor) of the prior's peak at the hint."""
MODEL_LOG_WEIGHT = 2.0
"""Weight of log p(class | crop) against the size term: the model's output is the sharper evidence."""
SIZE_LOG_WEIGHT = 1.0

# Per class: mean and standard deviation of log(cell diameter in model-input px) by CellFinder on PBC
# training crops at the canonical crop with the hint at PBC_REAL_UM_PER_PX (200 per class, seed 0;
# medians 13-36 px). Recompute with
# `python benchmarks/classifier_scale.py calibrate`; the order is the spec's class order.
CLASS_LOG_DIAMETER = {
    "basophil": (3.402, 0.109),
    "eosinophil": (3.354, 0.141),
    "erythroblast": (3.125, 0.283),
    "ig": (3.460, 0.185),
    "lymphocyte": (3.210, 0.110),
    "monocyte": (3.586, 0.120),
    "neutrophil": (3.208, 0.120),
    "platelet": (2.661, 0.258),
}
WBC_LOG_DIAMETER = 3.33
"""A typical WBC (mean over the seven WBC classes above): moves the sizes tried towards the cell's own
size when the hint disagrees with it."""


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

    def __init__(self, model_dir: Path | None = None, *, num_threads: int = 1, normalise_scale: bool = False) -> None:
        self.model_dir = Path(model_dir) if model_dir else shipped_model_dir()
        self.num_threads = num_threads
        self.normalise_scale = normalise_scale
        """False: the spec's plain crop at the hint's scale (one inference; for comparisons)."""
        self.finder = CellFinder()
        self._interpreter = None
        try:
            self.spec = json.loads((self.model_dir / SPEC_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ModelError(f"cannot read {self.model_dir / SPEC_FILE}: {exc}") from None
        self.classes: list[str] = self.spec["classes"]
        unknown = [c for c in self.classes if c not in PREDICTION_CODES]
        if unknown:
            raise ModelError(f"{SPEC_FILE}: classes without a prediction code: {unknown}")
        missing = [c for c in self.classes if c not in CLASS_LOG_DIAMETER]
        if missing:
            raise ModelError(f"no training cell size for classes {missing}: re-run classifier_scale.py calibrate")
        sizes = np.array([CLASS_LOG_DIAMETER[c] for c in self.classes], dtype=np.float64)
        self._size_mean, self._size_sd = sizes[:, 0], sizes[:, 1]

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

    def hint_side_px(self, um_per_px: float, *, spec_scale: bool = False) -> float:
        """Crop side (source px) the hint implies: the spec's field, converted from PBC's nominal to its
        real scale unless ``spec_scale`` (the spec's literal reading, kept for comparisons)."""
        if not um_per_px > 0:
            raise ValueError(f"um_per_px must be positive, got {um_per_px}")
        field_um = self.spec["input"]["field_um"]
        if not spec_scale:
            field_um *= PBC_REAL_UM_PER_PX / PBC_NOMINAL_UM_PER_PX
        return field_um / um_per_px

    def input_tensor(self, crop_bgr: np.ndarray, um_per_px: float, *, side_px: float | None = None,
                     centre: tuple[float, float] | None = None) -> np.ndarray:
        """The model's int8 NHWC input: a square of ``side_px`` source px (default: the spec's 20 µm at
        ``um_per_px``) around ``centre`` (default: the crop's middle)."""
        spec = self.spec["input"]
        size = spec["size_px"]
        h, w = crop_bgr.shape[:2]
        cx, cy = ((w - 1) / 2.0, (h - 1) / 2.0) if centre is None else centre
        if side_px is None:
            side_px = self.hint_side_px(um_per_px, spec_scale=True)
        side = max(1, int(round(side_px)))
        x0, y0 = int(round(cx - side / 2.0)), int(round(cy - side / 2.0))
        pad = max(0, -x0, -y0, x0 + side - w, y0 + side - h)
        if pad:
            # BORDER_REFLECT_101 needs the border to be smaller than the image; very large crops of a tiny
            # image (a 2x size hypothesis of a thumbnail) repeat the reflection instead.
            while pad > 0:
                step = min(pad, min(crop_bgr.shape[:2]) - 1)
                if step <= 0:
                    crop_bgr = cv2.copyMakeBorder(crop_bgr, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
                    x0, y0, pad = x0 + pad, y0 + pad, 0
                    break
                crop_bgr = cv2.copyMakeBorder(crop_bgr, step, step, step, step, cv2.BORDER_REFLECT_101)
                x0, y0, pad = x0 + step, y0 + step, pad - step
        square = crop_bgr[y0:y0 + side, x0:x0 + side]
        interpolation = cv2.INTER_AREA if side >= size else cv2.INTER_LINEAR
        rgb = cv2.cvtColor(cv2.resize(square, (size, size), interpolation=interpolation), cv2.COLOR_BGR2RGB)
        return (rgb.astype(np.int16) + spec["zero_point"]).astype(np.int8)[None]

    def _run(self, tensor: np.ndarray) -> np.ndarray:
        interpreter = self._load()
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], tensor)
        interpreter.invoke()
        out = self.spec["output"]
        raw = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])[0]
        return (raw.astype(np.float32) - out["zero_point"]) * out["scale"]

    def find_cell(self, crop_bgr: np.ndarray, um_per_px: float) -> FoundCell | None:
        return self.finder.find(crop_bgr, um_per_px)

    def probabilities(self, crop_bgr: np.ndarray, um_per_px: float) -> np.ndarray:
        """Class probabilities of the cell in the middle of the crop (sums to 1)."""
        if not self.normalise_scale:
            return self._run(self.input_tensor(crop_bgr, um_per_px))
        hint_side = self.hint_side_px(um_per_px)
        cell = self.find_cell(crop_bgr, um_per_px)
        if cell is None:
            # Nothing stained to measure: the hint is all there is.
            return self._run(self.input_tensor(crop_bgr, um_per_px, side_px=hint_side))
        size = self.spec["input"]["size_px"]
        # Sizes tried: SCALE_FACTORS around the geometric middle of the hint's size and the size the cell
        # itself implies (as if it were a typical WBC), so a hint off by more than 2x is still covered while
        # the prior keeps its peak at the hint.
        implied = cell.diameter_px * size / hint_side / np.exp(WBC_LOG_DIAMETER)
        factors = np.asarray(SCALE_FACTORS) * np.sqrt(implied)
        log_prior = self._log_prior(factors)
        log_p = np.empty((len(factors), len(self.classes)))
        log_size = np.empty_like(log_p)
        for i, factor in enumerate(factors):
            side = hint_side * factor
            p = self._run(self.input_tensor(crop_bgr, um_per_px, side_px=side))
            log_p[i] = np.log(p.astype(np.float64) + 1e-4)
            z = (np.log(cell.diameter_px * size / side) - self._size_mean) / self._size_sd
            log_size[i] = -0.5 * z * z - np.log(self._size_sd)
        score = MODEL_LOG_WEIGHT * log_p + SIZE_LOG_WEIGHT * log_size + log_prior[:, None]
        score = np.exp(score - score.max())
        posterior = score.sum(axis=0)
        return (posterior / posterior.sum()).astype(np.float32)

    @staticmethod
    def _log_prior(factors: np.ndarray) -> np.ndarray:
        """log prior of each size factor (relative to the hint): a peak at 1 plus an even floor. Both are
        normalised as on the nominal SCALE_FACTORS grid, so shifting the grid does not move mass."""
        nominal = np.asarray(SCALE_FACTORS)
        peak_norm = np.exp(-0.5 * (np.log(nominal) / HINT_SIGMA_LOG) ** 2).sum()
        peak = np.exp(-0.5 * (np.log(factors) / HINT_SIGMA_LOG) ** 2) / peak_norm
        return np.log(HINT_WEIGHT * peak + (1.0 - HINT_WEIGHT) / len(nominal))

    def classify(self, crop: np.ndarray, um_per_px: float) -> Classification:
        p = self.probabilities(crop, um_per_px)
        best = int(np.argmax(p))
        return Classification(label=self.classes[best], confidence=float(p[best]))

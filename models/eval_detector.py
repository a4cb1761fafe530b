"""Evaluate the WBC detector: recall / precision / mean IoU at IoU >= 0.5, float32 vs int8, against the
classical detector on the same images, and latency.

    python -m models.eval_detector --run runs/detector                 # held-back BCCD + miLab 0152
    python -m models.eval_detector --run runs/detector --latency       # + latency (CPU otherwise idle!)
    python -m models.eval_detector --run runs/detector --sweep         # score threshold on BCCD *training* images

* BCCD held-back split: the 20 % that ``models/detector_data.bccd_split`` (fixed seed) keeps out of
  training, at 0.055 um/px; WBC boxes from AnnotationsCBC/ where present, else Annotations/.
* miLab 0152 (0.11 um/px, 1920x1200): every plane of the focal stack against the two published boxes;
  "planes 3-7" as in benchmarks/classical_detector.py.
* ``--slide N``: N whole fields of the default virtual slide (synthetic; PBC sprites), 0.11 um/px.
* Matching: greedy one-to-one at IoU >= 0.5, highest IoU first (as benchmarks/classical_detector.py).
* Latency: ``TfliteDetector.detect`` on one 1920x1200 0152 plane (resample, pad, quantise, invoke,
  decode), and invoke alone; median over ``--latency-runs``, at 1 and 2 interpreter threads, one OpenCV thread.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agent.inference.classical import ClassicalDetector
from agent.inference.tflite_detector import TfliteDetector
from models import detector_data as D


class Tally:
    def __init__(self):
        self.n_pred = self.n_truth = 0
        self.ious: list[float] = []
        self.failures: list[str] = []

    def add(self, name, pred, truth):
        m = D.match(pred, truth)
        self.n_pred += len(pred)
        self.n_truth += len(truth)
        self.ious += [v for _, _, v in m]
        if len(m) != len(pred) or len(m) != len(truth):
            self.failures.append(f"{name}: {len(truth)} truth, {len(pred)} pred, {len(m)} matched")

    def numbers(self) -> dict:
        tp = len(self.ious)
        return {"recall": tp / self.n_truth if self.n_truth else float("nan"),
                "precision": tp / self.n_pred if self.n_pred else float("nan"),
                "mean_iou": float(np.mean(self.ious)) if self.ious else float("nan"),
                "tp": tp, "n_truth": self.n_truth, "n_pred": self.n_pred}

    def line(self) -> str:
        n = self.numbers()
        return (f"recall {n['recall']:.3f} ({n['tp']}/{n['n_truth']})  precision {n['precision']:.3f} "
                f"({n['tp']}/{n['n_pred']})  mean IoU {n['mean_iou']:.3f}")


def milab_planes(stack_dir: Path):
    cells = json.loads((stack_dir / "cells.json").read_text())["cells"]
    truth = [tuple(int(v) for v in c["location"]) for c in cells]
    planes = []
    for path in sorted(stack_dir.glob("*.jpg")):
        planes.append((int(path.stem.split("_")[3]), cv2.imread(str(path), cv2.IMREAD_COLOR)))
    return planes, truth


def score_bccd(detector, items) -> Tally:
    t = Tally()
    for name, path, boxes in items:
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        t.add(name, [d.box for d in detector.detect(image, D.BCCD_UM_PER_PX)], boxes)
    return t


def score_milab(detector, planes, truth) -> tuple[Tally, Tally, list[str]]:
    core, every, lines = Tally(), Tally(), []
    for index, image in planes:
        pred = [d.box for d in detector.detect(image, D.MILAB_UM_PER_PX)]
        every.add(f"plane {index}", pred, truth)
        if 3 <= index <= 7:
            core.add(f"plane {index}", pred, truth)
        one = Tally()
        one.add("", pred, truth)
        lines.append(f"plane {index}: {len(pred)} boxes, {len(one.ious)}/{len(truth)} matched, "
                     f"IoU [{' '.join(f'{v:.2f}' for v in one.ious)}]  {pred}")
    return core, every, lines


def score_slide(detector, n: int) -> Tally:
    """Fields of the default virtual slide (the tests' slide: seed 1, 50 WBC/mm2) at 0.11 um/px, 1920x1200,
    on a fixed grid; truth boxes clipped to the frame."""
    from agent.assembly import build_slide
    from agent.config import load_settings

    slide = build_slide(load_settings())
    t = Tally()
    for k in range(n):
        x, y = 2000.0 + 230.0 * (k % 40), 2000.0 + 150.0 * (k // 40)
        image = slide.render(x, y, 1920, 1200, D.MILAB_UM_PER_PX)
        truth = [c.box for c in slide.truth(x, y, 1920, 1200, D.MILAB_UM_PER_PX).cells]
        t.add(f"field {k}", [d.box for d in detector.detect(image, D.MILAB_UM_PER_PX)], truth)
    return t


def latency(model_dir: Path, model_file: str | None, image: np.ndarray, threads: int, runs: int) -> dict:
    det = TfliteDetector(model_dir, num_threads=threads, model_file=model_file)
    det.detect(image, D.MILAB_UM_PER_PX)
    full = []
    for _ in range(runs):
        t0 = time.perf_counter()
        det.detect(image, D.MILAB_UM_PER_PX)
        full.append(time.perf_counter() - t0)
    it = det._load()
    inv = []
    for _ in range(runs):
        t0 = time.perf_counter()
        it.invoke()
        inv.append(time.perf_counter() - t0)
    return {"threads": threads, "detect_ms": 1e3 * float(np.median(full)), "detect_p90_ms": 1e3 * float(np.percentile(full, 90)),
            "invoke_ms": 1e3 * float(np.median(inv))}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, default=Path("runs/detector"))
    ap.add_argument("--model-dir", type=Path, default=ROOT / "models", help="folder with the int8 model and spec")
    ap.add_argument("--data", type=Path, default=None, help="datasets folder (default: the run's)")
    ap.add_argument("--latency", action="store_true")
    ap.add_argument("--latency-runs", type=int, default=200)
    ap.add_argument("--sweep", action="store_true", help="recall / precision vs score threshold on BCCD training images")
    ap.add_argument("--slide", type=int, default=0, help="also score N 1920x1200 fields of the default virtual slide")
    ap.add_argument("--show-failures", action="store_true")
    ap.add_argument("--json", type=Path, default=None, help="write the numbers here")
    args = ap.parse_args(argv)
    cv2.setNumThreads(1)

    cfg = json.loads((args.run / "config.json").read_text())
    data = args.data or Path(cfg["data"])
    split = D.bccd_split(data / "bccd", seed=cfg["split_seed"], fraction=cfg["holdout_fraction"])
    assert [n for n, _, _ in split["holdout"]] == cfg["holdout_names"], "held-back split differs from the run's"
    float_file = str(args.run / "wbc_detector_float32.tflite")
    detectors = {
        "int8": TfliteDetector(args.model_dir),
        "float32": TfliteDetector(args.model_dir, model_file=float_file),
        "classical": ClassicalDetector(),
    }
    results: dict = {}

    if args.sweep:
        for thr in (0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.5):
            t = score_bccd(TfliteDetector(args.model_dir, score_threshold=thr), split["train"])
            print(f"sweep BCCD train, int8, threshold {thr:.2f}: {t.line()}")
            results[f"sweep_train_{thr}"] = t.numbers()

    planes, truth = milab_planes(data / "milab_stacks" / "0152")
    print(f"BCCD held-back split: {len(split['holdout'])} images, seed {cfg['split_seed']}; "
          f"miLab 0152: {len(planes)} planes, truth {truth}")
    for name, det in detectors.items():
        t = score_bccd(det, split["holdout"])
        core, every, lines = score_milab(det, planes, truth)
        results[name] = {"bccd_holdout": t.numbers(), "milab_0152_planes_3_7": core.numbers(),
                         "milab_0152_all_planes": every.numbers()}
        print(f"[{name}] BCCD held-back: {t.line()}")
        print(f"[{name}] 0152 planes 3-7: {core.line()}")
        print(f"[{name}] 0152 all planes: {every.line()}")
        if args.slide:
            st = score_slide(det, args.slide)
            results[name]["virtual_slide"] = st.numbers()
            print(f"[{name}] virtual slide, {args.slide} fields: {st.line()}")
        if args.show_failures:
            for line in t.failures:
                print(f"    {line}")
            for line in lines:
                print(f"    {line}")

    if args.latency:
        image = dict(planes)[5]
        for label, mf in (("int8", None), ("float32", float_file)):
            for threads in (1, 2):
                r = latency(args.model_dir, mf, image, threads, args.latency_runs)
                results[f"latency_{label}_{threads}"] = r
                print(f"latency {label} 1920x1200, {threads} thread(s): detect median {r['detect_ms']:.2f} ms "
                      f"(p90 {r['detect_p90_ms']:.2f}), invoke median {r['invoke_ms']:.2f} ms")
        cd = ClassicalDetector()
        cd.detect(image, D.MILAB_UM_PER_PX)
        ts = []
        for _ in range(30):
            t0 = time.perf_counter()
            cd.detect(image, D.MILAB_UM_PER_PX)
            ts.append(time.perf_counter() - t0)
        print(f"latency classical 1920x1200 (1 OpenCV thread): median {1e3 * np.median(ts):.1f} ms")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()

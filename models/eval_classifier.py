"""Evaluate the exported classifier: float32 vs int8 TFLite on the validation split (and the 96 held-out
sprite crops), per-class precision / recall, confusion matrix, latency, size; plus the SegWBC Dataset 2
cross-device proxy.

    nice -n 19 python -m models.eval_classifier --run runs/classifier [--latency]

Needs only numpy, OpenCV and ai_edge_litert (the validation arrays are cached by training / export, or are
rebuilt from the JPEGs with the canonical crop). Writes ``eval.json`` and ``eval.md`` into --run.
Run --latency only when nothing else (training) uses the CPU.
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import time
from pathlib import Path

import cv2
import numpy as np

from agent.config import InferenceSettings
from agent.inference.tflite_classifier import MORE_VIEWS_BELOW, VIEW_CHOICES, classify_views
from models import crop_variants, data_pbc

MODELS_DIR = Path(__file__).resolve().parent
REVIEW_THRESHOLD = InferenceSettings().review_threshold


def make_interpreter(path: Path, threads: int = 1):
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:  # pragma: no cover
        from tflite_runtime.interpreter import Interpreter
    it = Interpreter(model_path=str(path), num_threads=threads)
    it.allocate_tensors()
    return it


class Runner:
    """Runs a TFLite classifier on uint8 RGB canonical crops (int8 or float32 input)."""

    def __init__(self, path: Path, threads: int = 1, n_views: int = 1, more_views_below: float = MORE_VIEWS_BELOW):
        self.n_views = n_views
        self.more_views_below = more_views_below
        self.it = make_interpreter(path, threads)
        self.i = self.it.get_input_details()[0]
        self.o = self.it.get_output_details()[0]

    def set(self, rgb: np.ndarray):
        if self.i["dtype"] == np.int8:
            s, z = self.i["quantization"]
            x = np.clip(np.round(rgb.astype(np.float32) / s + z), -128, 127).astype(np.int8)
        else:
            x = rgb.astype(np.float32)
        self.it.set_tensor(self.i["index"], x[None])

    def probs(self, rgb: np.ndarray) -> np.ndarray:
        self.set(rgb)
        self.it.invoke()
        y = self.it.get_tensor(self.o["index"])[0]
        if self.o["dtype"] == np.int8:
            s, z = self.o["quantization"]
            y = (y.astype(np.float32) - z) * s
        return y

    def predict(self, xs: np.ndarray) -> np.ndarray:
        """Probabilities over up to ``n_views`` views, gated by the first view's confidence as the runtime does."""
        return np.stack([classify_views(self.probs, x, self.n_views, self.more_views_below) for x in xs])

    def latency_ms(self, rgb: np.ndarray, n: int = 500, warmup: int = 50) -> float:
        self.set(rgb)
        for _ in range(warmup):
            self.it.invoke()
        ts = np.empty(n)
        for k in range(n):
            t = time.perf_counter()
            self.it.invoke()
            ts[k] = time.perf_counter() - t
        return float(np.median(ts) * 1e3)


def view_settings(gate: float):
    """(views, gate, tag) for each view count: gated as asked, and with every view (one view has nothing to gate)."""
    for n in VIEW_CHOICES:
        yield n, gate, ""
        if n > 1:
            yield n, 1.0, " every view"


def classify_latency_ms(model_dir: Path, items: list) -> dict:
    """Median and mean time of the runtime's whole ``classify`` (find the cell, cut, balance, views, invoke) per
    PBC crop already in memory, at 1 thread, for each view count, with the default gate for further views
    (the mean shows the unsure cells' extra views) and with every view for every cell."""
    from agent.inference.tflite_classifier import TfliteClassifier

    crops = [data_pbc.read_bgr(p) for p, _ in items]
    out = {}
    for n, gate, tag in view_settings(MORE_VIEWS_BELOW):
        clf = TfliteClassifier(model_dir, num_threads=1, views=n, more_views_below=gate)
        clf.classify(crops[0])
        ts = []
        for crop in crops:
            t = time.perf_counter()
            clf.classify(crop)
            ts.append(time.perf_counter() - t)
        key = f"classify_{n}views{tag.replace(' ', '_')}_1thread"
        out[key] = float(np.median(ts) * 1e3)
        out[f"{key}_mean"] = float(np.mean(ts) * 1e3)
    return out


def metrics(y: np.ndarray, p: np.ndarray, n: int) -> dict:
    cm = np.zeros((n, n), int)
    for a, b in zip(y, p):
        cm[a, b] += 1
    prec = [float(cm[k, k] / cm[:, k].sum()) if cm[:, k].sum() else float("nan") for k in range(n)]
    rec = [float(cm[k, k] / cm[k].sum()) if cm[k].sum() else float("nan") for k in range(n)]
    return {"acc": float((y == p).mean()), "n": int(len(y)), "precision": prec, "recall": rec,
            "support": cm.sum(1).tolist(), "confusion": cm.tolist()}


def segwbc(runner: Runner, root: Path, size: int, factor: float, classes: list[str]) -> dict:
    """SegWBC Dataset 2 (300x300, 5 classes, unchecked labels) through the runtime's crop: without a scale,
    and with the scale estimated by assuming the median WBC (mask: cytoplasm + nucleus) is 11.5 um wide."""
    with open(root / "labels.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    imgs, labels, diams = [], [], []
    for r in rows:
        imgs.append(cv2.imread(str(root / "images" / r["image"])))
        m = cv2.imread(str(root / "masks" / r["image"]), cv2.IMREAD_GRAYSCALE) > 0
        labels.append(classes.index(r["label"]))
        diams.append(2.0 * np.sqrt(m.sum() / np.pi))
    labels = np.array(labels)
    present = sorted(set(labels.tolist()))
    um_est = 11.5 / float(np.median(diams))
    out = {"n": len(rows), "classes_present": [classes[k] for k in present],
           "median_wbc_diameter_px": float(np.median(diams)), "um_per_px_estimate": um_est, "runs": []}
    for hint in (None, round(um_est, 4)):
        pr = runner.predict(np.stack([data_pbc.canonical_crop(im, size, factor, um_per_px=hint) for im in imgs]))
        p8 = pr.argmax(1)
        p5 = np.array(present)[pr[:, present].argmax(1)]
        m8 = metrics(labels, p8, len(classes))
        out["runs"].append({"um_per_px": hint, "acc_8way": float((p8 == labels).mean()),
                            "acc_within_5": float((p5 == labels).mean()),
                            "recall_8way": {classes[k]: m8["recall"][k] for k in present},
                            "confusion_8way": m8["confusion"]})
    return out


def _zoomed(factor: float):
    interpolation = cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR
    return lambda im: cv2.resize(im, None, fx=factor, fy=factor, interpolation=interpolation)


SCALE_VARIANTS = (
    ("as given", None, None), ("as given, hint 0.11", None, 0.11), ("whole crop x0.5", _zoomed(0.5), None),
    ("whole crop x0.7", _zoomed(0.7), None), ("whole crop x1.4", _zoomed(1.4), None),
    ("whole crop x2.0", _zoomed(2.0), None),
    ("tight: middle 100 px to 160 px (cell fills the crop, x1.6)", crop_variants.filled_160, None),
    ("small: x0.6 in a 300 px canvas of plasma", crop_variants.small_in_300, None),
)


def _lamp(gains_bgr: tuple[float, float, float]):
    g = np.asarray(gains_bgr, np.float32)
    return lambda im: np.clip(im.astype(np.float32) * g + 0.5, 0, 255).astype(np.uint8)


# Another lamp / camera white balance multiplies the channels: each is run with and without the runtime's
# background balance.
LAMP_VARIANTS = (
    ("lamp: white (miLab 0152's plasma 248, 246, 250)", _lamp((248 / 204, 246 / 229, 250 / 255))),
    ("lamp: bluish (B x1.15, R x0.85)", _lamp((1.15, 1.0, 0.85))),
    ("lamp: dim greenish (B x0.85, G x0.95, R x0.8)", _lamp((0.85, 0.95, 0.8))),
)


def robustness(runner: Runner, items: list, y: np.ndarray, size: int, factor: float) -> list[dict]:
    """The validation JPEGs resized (the same cells at other pixel scales) through the runtime's crop."""
    imgs = [data_pbc.read_bgr(p) for p, _ in items]
    out = []
    runs = [(name, variant, hint, True) for name, variant, hint in SCALE_VARIANTS]
    for name, variant in LAMP_VARIANTS:
        runs += [(name, variant, None, True), (name + ", no background balance", variant, None, False)]
    for name, variant, hint, balance in runs:
        xs = [data_pbc.canonical_crop(variant(im) if variant else im, size, factor, um_per_px=hint, balance=balance) for im in imgs]
        p = runner.predict(np.stack(xs)).argmax(1)
        recall = {c: float((p[y == k] == k).mean()) for k, c in enumerate(data_pbc.CLASSES)}
        out.append({"variant": name, "um_per_px_hint": hint, "acc": float((p == y).mean()), "recall": recall})
    return out


def write_samples(folder: Path, items: list, y, pq, pf, classes, seed: int = 7) -> dict:
    import shutil

    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*__*.jpg"):
        old.unlink()
    order = np.random.default_rng(seed).permutation(len(items))
    picked, skipped = {}, {}
    for k in order:
        c = classes[y[k]]
        if c in picked:
            continue
        if pq[k] == y[k] and pf[k] == y[k]:
            src = items[k][0]
            shutil.copyfile(src, folder / f"{c}__{src.name}")
            picked[c] = src.name
        else:
            skipped[c] = skipped.get(c, 0) + 1
    return {"picked": picked, "skipped_as_misclassified": skipped}


def fmt_pct(v):
    return "n/a" if np.isnan(v) else f"{100 * v:.1f}"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, default=Path("runs/classifier"))
    ap.add_argument("--model", type=Path, default=MODELS_DIR / "wbc_classifier_int8.tflite")
    ap.add_argument("--float-model", type=Path, default=None, help="default: RUN/wbc_classifier_float32.tflite")
    ap.add_argument("--data", type=Path, default=None, help="default: the run's config")
    ap.add_argument("--report-dir", type=Path, default=None,
                    help="where eval.json and eval.md go (default: the run; give one for an ensemble's model)")
    ap.add_argument("--segwbc", type=Path, default=Path("../shared/datasets/segwbc_d2"))
    ap.add_argument("--views", type=int, default=2, choices=VIEW_CHOICES,
                    help="views averaged per crop, as inference.classifier_views (default 2, the runtime's default)")
    ap.add_argument("--more-views-below", type=float, default=MORE_VIEWS_BELOW,
                    help="further views only below this first-view confidence, as "
                         "inference.classifier_more_views_below (1: every view for every crop)")
    ap.add_argument("--latency", action="store_true", help="measure latency (only on an idle CPU)")
    ap.add_argument("--latency-runs", type=int, default=1000)
    ap.add_argument("--robustness", action="store_true",
                    help="int8 validation accuracy when the runtime's scale or cell centre is off")
    ap.add_argument("--write-samples", type=Path, default=None,
                    help="copy one validation JPEG per class (first in a seeded order that int8 and float classify "
                         "correctly) into this folder as <class>__<file>.jpg, for tests/models")
    args = ap.parse_args(argv)

    cfg = json.loads((args.run / "config.json").read_text())
    size, factor = cfg["size"], cfg["crop_factor"]
    data = args.data or Path(cfg["data"])
    classes = data_pbc.CLASSES
    fmodel = args.float_model or args.run / "wbc_classifier_float32.tflite"
    split = data_pbc.make_split(data, seed=cfg["split_seed"])
    cache = args.run.parent / "cache"
    xva, yva = data_pbc.load_arrays(split["val"], "val", cache, size, factor)
    xsp, ysp = data_pbc.load_arrays(split["sprites"], "sprites", cache, size, factor)

    gate = args.more_views_below
    q, f = Runner(args.model, n_views=args.views, more_views_below=gate), Runner(fmodel, n_views=args.views, more_views_below=gate)
    res = {"model": str(args.model), "size_bytes": args.model.stat().st_size, "float_model": str(fmodel),
           "input": {"shape": [int(v) for v in q.i["shape"]], "dtype": np.dtype(q.i["dtype"]).name,
                     "quantization": [float(v) for v in q.i["quantization"]]},
           "output": {"shape": [int(v) for v in q.o["shape"]], "dtype": np.dtype(q.o["dtype"]).name,
                      "quantization": [float(v) for v in q.o["quantization"]]},
           "classes": classes, "config": cfg, "views": args.views, "more_views_below": gate}
    pq, pf = q.predict(xva), f.predict(xva)
    res["val_int8"] = metrics(yva, pq.argmax(1), len(classes))
    res["val_float"] = metrics(yva, pf.argmax(1), len(classes))
    res["val_agreement"] = float((pq.argmax(1) == pf.argmax(1)).mean())
    top = pq.max(1)
    res["val_int8_confidence"] = {"median": float(np.median(top)),
                                  f"under_{REVIEW_THRESHOLD}": float((top < REVIEW_THRESHOLD).mean())}
    res["val_acc_by_views"] = {
        f"{name} {n}{tag}": float((Runner(path, n_views=n, more_views_below=g).predict(xva).argmax(1) == yva).mean())
        for name, path in (("int8", args.model), ("float32", fmodel)) for n, g, tag in view_settings(gate)}
    res["sprites_int8"] = metrics(ysp, q.predict(xsp).argmax(1), len(classes))
    res["sprites_float"] = metrics(ysp, f.predict(xsp).argmax(1), len(classes))
    if args.segwbc.exists():
        res["segwbc_int8"] = segwbc(q, args.segwbc, size, factor, classes)
    if args.latency:
        x = xva[0]
        res["latency_ms"] = {"cpu": platform.processor() or platform.machine(), "runs": args.latency_runs}
        for name, path in (("int8", args.model), ("float32", fmodel)):
            for th in (1, 2):
                res["latency_ms"][f"{name}_{th}thread"] = Runner(path, th).latency_ms(x, args.latency_runs)
        res["latency_ms"].update(classify_latency_ms(args.model.parent, split["val"][:200]))
    if args.robustness:
        res["robustness_int8"] = robustness(q, split["val"], yva, size, factor)
    if args.write_samples:
        res["samples"] = write_samples(args.write_samples, split["val"], yva, pq.argmax(1), pf.argmax(1), classes)
    report_dir = args.report_dir or args.run
    report_dir.mkdir(parents=True, exist_ok=True)
    (report_dir / "eval.json").write_text(json.dumps(res, indent=1) + "\n")

    L = []
    vi, vf = res["val_int8"], res["val_float"]
    L.append(f"Validation ({vi['n']} crops, {args.views} views, further views below {gate}): int8 {fmt_pct(vi['acc'])} %, float32 "
             f"{fmt_pct(vf['acc'])} %, int8/float agreement {fmt_pct(res['val_agreement'])} %")
    conf = res["val_int8_confidence"]
    L.append(f"int8 confidence (top probability): median {conf['median']:.2f}, under {REVIEW_THRESHOLD} (the default "
             f"review threshold) {fmt_pct(conf[f'under_{REVIEW_THRESHOLD}'])} %")
    L.append("By views: " + ", ".join(f"{k} {fmt_pct(v)} %" for k, v in res["val_acc_by_views"].items()))
    L.append(f"Held-out sprite crops ({res['sprites_int8']['n']}): int8 {fmt_pct(res['sprites_int8']['acc'])} %, "
             f"float32 {fmt_pct(res['sprites_float']['acc'])} %")
    L.append("")
    L.append("| class | support | int8 precision | int8 recall | float recall |")
    L.append("| --- | ---: | ---: | ---: | ---: |")
    for k, c in enumerate(classes):
        L.append(f"| {c} | {vi['support'][k]} | {fmt_pct(vi['precision'][k])} | {fmt_pct(vi['recall'][k])} | "
                 f"{fmt_pct(vf['recall'][k])} |")
    L.append("")
    L.append("Confusion matrix, int8 (rows: true, columns: predicted, order as above):")
    L.append("")
    L.append("| true \\ pred | " + " | ".join(c[:4] for c in classes) + " |")
    L.append("| --- |" + " ---: |" * len(classes))
    for k, c in enumerate(classes):
        L.append(f"| {c} | " + " | ".join(str(v) for v in vi["confusion"][k]) + " |")
    if "segwbc_int8" in res:
        s = res["segwbc_int8"]
        L.append("")
        L.append(f"SegWBC Dataset 2 ({s['n']} images, classes {', '.join(s['classes_present'])}; "
                 f"estimated scale {s['um_per_px_estimate']:.4f} um/px from median WBC diameter "
                 f"{s['median_wbc_diameter_px']:.0f} px = 11.5 um), int8:")
        L.append("")
        L.append("| um/px hint | accuracy (8-way) | accuracy (argmax over the 5 present classes) | recall per class (8-way) |")
        L.append("| ---: | ---: | ---: | --- |")
        for r in s["runs"]:
            hint = "none" if r["um_per_px"] is None else f"{r['um_per_px']:.4f}"
            rec = ", ".join(f"{c} {fmt_pct(v)}" for c, v in r["recall_8way"].items())
            L.append(f"| {hint} | {fmt_pct(r['acc_8way'])} | {fmt_pct(r['acc_within_5'])} | {rec} |")
    if "robustness_int8" in res:
        L.append("")
        L.append("Validation accuracy (int8, the runtime's crop) with the JPEGs resized, i.e. the same cells at "
                 "other pixel scales:")
        L.append("")
        L.append("| variant | accuracy | " + " | ".join(c[:4] for c in classes) + " |")
        L.append("| --- | ---: |" + " ---: |" * len(classes))
        for r in res["robustness_int8"]:
            L.append(f"| {r['variant']} | {fmt_pct(r['acc'])} | " + " | ".join(fmt_pct(r["recall"][c]) for c in classes) + " |")
    if "latency_ms" in res:
        lt = res["latency_ms"]
        L.append("")
        L.append(f"Latency, median of {lt['runs']} invokes (ms): " + ", ".join(
            f"{k} {v:.3f}" for k, v in lt.items() if k not in ("cpu", "runs")))
    L.append("")
    L.append(f"Size: {res['size_bytes']} bytes")
    (report_dir / "eval.md").write_text("\n".join(L) + "\n")
    print("\n".join(L))


if __name__ == "__main__":
    main()

"""Export a trained detector to a full-integer int8 TFLite model (int8 input and outputs) plus its spec.

    python -m models.export_detector --run runs/detector [--out models/wbc_detector_int8.tflite]

The Keras model is fully convolutional; it is rebuilt at the runtime input size (``--height`` x ``--width``,
default 320 x 480: a 1920 x 1200 field at 0.11 um/px becomes 480 x 300 at the model's 0.44 um/px and is
padded to 320 rows) and the trained weights are copied in. Calibration: ``--n-calib`` inputs prepared
exactly as the runtime does (resample, pad with the median colour), from BCCD *training* images and
virtual-slide fields, fixed seed. Also writes the float32 TFLite model next to the run (for the float vs
int8 comparison) and ``wbc_detector_spec.json``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

MODELS_DIR = Path(__file__).resolve().parent
SCORE_THRESHOLD = 0.3
"""Threshold used while choosing the threshold ('auto') and the fallback."""
THRESHOLD_GRID = tuple(round(0.2 + 0.05 * k, 2) for k in range(9))  # 0.20 .. 0.60
NMS_IOU = 0.4
TILE_OVERLAP_PX = 64
MIN_BOX_UM = 4.5


def calibration_inputs(run_cfg: dict, height: int, width: int, n: int, seed: int) -> np.ndarray:
    """uint8 RGB (n, height, width, 3) prepared as the runtime prepares a field."""
    import cv2

    from models import detector_data as D

    split = D.bccd_split(Path(run_cfg["data"]) / "bccd", seed=run_cfg["split_seed"])
    rng = np.random.default_rng(seed)
    out = []
    n_bccd = n * 2 // 3
    for k in sorted(rng.choice(len(split["train"]), n_bccd, replace=False)):
        bgr = cv2.imread(str(split["train"][k][1]), cv2.IMREAD_COLOR)
        small, _ = D.resize_to(bgr, D.BCCD_UM_PER_PX, run_cfg["um_per_px"])
        out.append(D.pad_to(cv2.cvtColor(small, cv2.COLOR_BGR2RGB), 16, height, width)[:height, :width])
    # whole fields like a miLab camera's, from virtual slides not used for training (seeds 5000+)
    for rgb, _ in D.render_slide_fields(n - n_bccd, size_px=width, um_per_px=run_cfg["um_per_px"], seed=5000,
                                        height_px=height, wbc_per_mm2=100.0):
        out.append(rgb)
    return np.stack(out)


def choose_threshold(model_dir: Path, run_cfg: dict) -> tuple[float, dict]:
    """Score threshold of the exported int8 model from the BCCD training images (never the held-back ones):
    best F1 averaged over each threshold and its grid neighbours; the middle (lower median) of ties."""
    import cv2

    from agent.inference.tflite_detector import TfliteDetector
    from models import detector_data as D

    split = D.bccd_split(Path(run_cfg["data"]) / "bccd", seed=run_cfg["split_seed"])
    images = [(cv2.imread(str(p), cv2.IMREAD_COLOR), b) for _, p, b in split["train"]]
    table = {}
    for thr in THRESHOLD_GRID:
        det = TfliteDetector(model_dir, score_threshold=thr)
        tp = n_pred = n_truth = 0
        for image, truth in images:
            pred = [d.box for d in det.detect(image, D.BCCD_UM_PER_PX)]
            tp += len(D.match(pred, truth))
            n_pred += len(pred)
            n_truth += len(truth)
        table[str(thr)] = round(2 * tp / max(1, n_pred + n_truth), 4)
    # F1 averaged with the two neighbouring thresholds: keeps the choice off the edge of a cliff (recall falls
    # steeply above some threshold; an unseen image set moves that edge).
    f1 = np.array(list(table.values()))
    smooth = np.array([f1[max(0, k - 1):k + 2].mean() for k in range(len(f1))])
    ties = [float(t) for t, v in zip(table, smooth) if v >= smooth.max() - 1e-9]
    return ties[(len(ties) - 1) // 2], table


def convert(model, height: int, width: int, calib: np.ndarray | None) -> bytes:
    import tempfile

    import tensorflow as tf

    from models.export_tflite import _finish

    with tempfile.TemporaryDirectory() as tmp:
        sig = [tf.TensorSpec([1, height, width, 3], tf.float32, name="rgb")]
        model.export(tmp, format="tf_saved_model", input_signature=sig, verbose=False)
        conv = tf.lite.TFLiteConverter.from_saved_model(tmp)
        return _finish(conv, calib)


def describe(tflite_bytes: bytes) -> dict:
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=tflite_bytes)

    def d(t):
        return {"name": t["name"], "shape": [int(v) for v in t["shape"]], "dtype": np.dtype(t["dtype"]).name,
                "scale": float(t["quantization"][0]), "zero_point": int(t["quantization"][1])}

    outs = {int(o["shape"][-1]): d(o) for o in it.get_output_details()}
    return {"input": d(it.get_input_details()[0]), "heat": outs[1], "box": outs[4],
            "ops": sorted({o["op_name"] for o in it._get_ops_details()})}


CLASSES = ["wbc"]
"""One class: every box is a white blood cell (prediction code 9 until the classifier names it)."""


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, default=Path("runs/detector"))
    ap.add_argument("--weights", default="last")
    ap.add_argument("--out", type=Path, default=MODELS_DIR / "wbc_detector_int8.tflite")
    ap.add_argument("--height", type=int, default=320)
    ap.add_argument("--width", type=int, default=480)
    ap.add_argument("--n-calib", type=int, default=150)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--score-threshold", default="auto",
                    help="a number, or 'auto': the threshold of THRESHOLD_GRID with the best F1 of the int8 model on the "
                         "BCCD *training* images, F1 averaged with the neighbouring thresholds (never the held-back split)")
    args = ap.parse_args(argv)

    import keras

    from models.detector_net import build_detector
    from models.train_detector import box_loss, heat_loss

    cfg = json.loads((args.run / "config.json").read_text())
    trained = keras.models.load_model(args.run / f"{args.weights}.keras", compile=False,
                                      custom_objects={"heat_loss": heat_loss, "box_loss": box_loss})
    model = build_detector(args.height, args.width, cfg["base"])
    model.set_weights(trained.get_weights())

    calib = calibration_inputs(cfg, args.height, args.width, args.n_calib, args.seed)
    q = convert(model, args.height, args.width, calib)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(q)
    f = convert(model, args.height, args.width, None)
    (args.run / "wbc_detector_float32.tflite").write_bytes(f)

    info = describe(q)
    state = json.loads((args.run / "state.json").read_text())
    labels_path = args.out.parent / "wbc_detector_labels.txt"
    labels_path.write_text("\n".join(CLASSES) + "\n")
    spec = {
        "model": args.out.name,
        "labels": labels_path.name,
        "classes": CLASSES,
        "input": {
            **info["input"],
            "layout": "NHWC",
            "colour_order": "RGB",
            "um_per_px": cfg["um_per_px"],
            "height_px": args.height,
            "width_px": args.width,
            "resample": "cv2.resize of the whole field by um_per_px_of_image / input.um_per_px "
                        "(INTER_AREA when shrinking, INTER_LINEAR when enlarging)",
            "pad": "bottom / right to height_px x width_px with the resampled field's per-channel median colour; "
                   "a larger field is cut into tiles of that size overlapping by at least decode.tile_overlap_px, "
                   "each tile keeping the boxes whose centre lies in its share of the overlaps",
            "quantise": "int8 = uint8_rgb - 128 (scale 1.0, zero point -128)",
        },
        "outputs": {
            "heat": {**info["heat"], "meaning": "WBC centre heatmap at stride 4, 0..1; the output with 1 channel"},
            "box": {**info["box"], "meaning": "per cell: centre offset x, y from the cell centre and box width, "
                                              "height, all in cells (x stride px); the output with 4 channels"},
            "dequantise": "v = (int8 - zero_point) * scale",
        },
        "decode": {
            "stride": cfg["stride"],
            "score_threshold": args.score_threshold,
            "peak": "local maximum of heat in its 3x3 neighbourhood (cv2.dilate) and >= score_threshold",
            "box": "cx = (col + 0.5 + off_x) * stride, cy = (row + 0.5 + off_y) * stride, w = bw * stride, "
                   "h = bh * stride (model px); full-resolution px = model px / (um_per_px_of_image / input.um_per_px)",
            "nms_iou": NMS_IOU,
            "tile_overlap_px": TILE_OVERLAP_PX,
            "min_box_px": 2,
            "min_box_um": MIN_BOX_UM,
            "filter": "drop boxes narrower or lower than min_box_px, or whose longer side is under min_box_um "
                      "(full-resolution px x um_per_px of the image)",
            "score": "heat value at the peak",
        },
        "ops": info["ops"],
        "trained_on": "BCCD trainval minus a 20 % held-back split (0.055 um/px) + rendered virtual-slide fields",
        "keras_run": {k: v for k, v in cfg.items() if k != "holdout_names"},
        "epochs_trained": state["epoch"],
        "holdout_names": cfg["holdout_names"],
    }
    spec_path = args.out.parent / "wbc_detector_spec.json"
    if args.score_threshold == "auto":
        spec["decode"]["score_threshold"] = SCORE_THRESHOLD
        spec_path.write_text(json.dumps(spec, indent=2) + "\n")
        thr, table = choose_threshold(args.out.parent, cfg)
        spec["decode"]["score_threshold"] = thr
        spec["decode"]["threshold_choice"] = {
            "rule": "best F1 on the BCCD training images (int8, IoU >= 0.5), F1 averaged with the two neighbouring "
                    "grid thresholds; middle of ties",
            "grid": table,
        }
        print(f"score threshold {thr} (training-image F1 per threshold: {table})")
    else:
        spec["decode"]["score_threshold"] = float(args.score_threshold)
    spec_path.write_text(json.dumps(spec, indent=2) + "\n")
    print(json.dumps({k: info[k] for k in ("input", "heat", "box", "ops")}, indent=1))
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes)")


if __name__ == "__main__":
    main()

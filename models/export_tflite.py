"""Export a trained Keras classifier to a full-integer int8 TFLite model (int8 input and output).

    python -m models.export_tflite --run runs/classifier [--out models/wbc_classifier_int8.tflite]
    python -m models.export_tflite --run runs/a runs/b     # an ensemble: one graph, the runs' mean probabilities

Calibration uses ``--n-calib`` training crops (canonical preprocessing, no augmentation) picked with a
fixed seed. Also writes the float32 TFLite model (``--float-out``, by default in the first run) for the
float-vs-int8 comparison, the labels file, the preprocessing spec (``wbc_classifier_spec.json``) and each
member's float weights (``wbc_classifier_memberK.npz``, for ``train_classifier --init``).

Several runs (trained with the same input size and crop, e.g. two seeds) become one model whose output is
the arithmetic mean of their softmax outputs: one file and one invoke for the runtime, which needs to
know nothing about it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

MODELS_DIR = Path(__file__).resolve().parent


def convert(model, size: int, calib: np.ndarray | None):
    """calib: uint8 RGB (N, size, size, 3), or None for a float32 model."""
    import tempfile

    import tensorflow as tf

    with tempfile.TemporaryDirectory() as tmp:
        sig = [tf.TensorSpec([1, size, size, 3], tf.float32, name="rgb")]
        model.export(tmp, format="tf_saved_model", input_signature=sig, verbose=False)
        conv = tf.lite.TFLiteConverter.from_saved_model(tmp)
        return _finish(conv, calib)


def _finish(conv, calib):
    import tensorflow as tf

    if calib is not None:
        calib = calib.astype(np.float32)
        # pin the input range to exactly 0..255 so the input quantisation is scale 1, zero point -128
        calib[0, 0, 0, :] = 0.0
        calib[0, 0, 1, :] = 255.0

        def rep():
            for i in range(len(calib)):
                yield [calib[i : i + 1]]

        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = rep
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = tf.int8
        conv.inference_output_type = tf.int8
    return conv.convert()


def ensemble(models: list):
    """One Keras model averaging the members' class probabilities (a single member is returned as is)."""
    import keras

    if len(models) == 1:
        return models[0]
    inp = keras.Input(shape=models[0].input_shape[1:], name="rgb")
    outs = []
    for k, m in enumerate(models):
        m.name = f"member{k}_{m.name}"  # members trained from one recipe share a name; a graph needs unique ones
        outs.append(m(inp))
    return keras.Model(inp, keras.layers.Average(name="mean_probabilities")(outs), name="wbc_ensemble")


def describe(tflite_bytes: bytes) -> dict:
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=tflite_bytes)
    i, o = it.get_input_details()[0], it.get_output_details()[0]
    ops = sorted({d["op_name"] for d in it._get_ops_details()})
    return {
        "input": {"shape": [int(v) for v in i["shape"]], "dtype": np.dtype(i["dtype"]).name,
                  "scale": float(i["quantization"][0]), "zero_point": int(i["quantization"][1])},
        "output": {"shape": [int(v) for v in o["shape"]], "dtype": np.dtype(o["dtype"]).name,
                   "scale": float(o["quantization"][0]), "zero_point": int(o["quantization"][1])},
        "ops": ops,
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, nargs="+", default=[Path("runs/classifier")],
                    help="one training run, or several (same size and crop factor) to export as an ensemble")
    ap.add_argument("--weights", default="last", choices=["best", "last"],
                    help="last (default: no selection on the validation set) or best (highest val acc)")
    ap.add_argument("--out", type=Path, default=MODELS_DIR / "wbc_classifier_int8.tflite")
    ap.add_argument("--float-out", type=Path, default=None,
                    help="float32 copy (default: RUN/wbc_classifier_float32.tflite, "
                         "or FIRST_RUN/wbc_ensemble_float32.tflite for several runs)")
    ap.add_argument("--n-calib", type=int, default=400)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    import keras

    from models import data_pbc
    from models.train_classifier import saved_cells

    cfgs = [json.loads((run / "config.json").read_text()) for run in args.run]
    cfg = cfgs[0]
    size, factor = cfg["size"], cfg["crop_factor"]
    for run, other in zip(args.run[1:], cfgs[1:]):
        if (other["size"], other["crop_factor"], other["split_seed"]) != (size, factor, cfg["split_seed"]):
            ap.error(f"{run}: input size, crop factor or split differ from {args.run[0]}'s; cannot ensemble")
    members = [keras.models.load_model(run / f"{args.weights}.keras", compile=False) for run in args.run]
    model = ensemble(members)
    first = args.run[0]
    float_out = args.float_out or first / ("wbc_classifier_float32.tflite" if len(args.run) == 1
                                           else "wbc_ensemble_float32.tflite")

    split = data_pbc.make_split(Path(cfg["data"]), seed=cfg["split_seed"])
    rng = np.random.default_rng(args.seed)
    items = [split["train"][i] for i in sorted(rng.choice(len(split["train"]), args.n_calib, replace=False))]
    calib, _ = data_pbc.load_arrays(items, f"calib{args.seed}", first.parent / "cache", size, factor)

    q = convert(model, size, calib)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(q)
    f = convert(model, size, None)
    float_out.write_bytes(f)
    model_dir = args.out.parent

    info = describe(q)
    labels_path = model_dir / "wbc_classifier_labels.txt"
    labels_path.write_text("\n".join(data_pbc.CLASSES) + "\n")
    spec = {
        "model": args.out.name,
        "labels": labels_path.name,
        "classes": data_pbc.CLASSES,
        "input": {
            **info["input"],
            "layout": "NHWC",
            "colour_order": "RGB",
            "size_px": size,
            "crop_factor": factor,
            "crop": "agent/inference/cell_crop.py: a square of crop_factor x the convex-hull diameter of the "
                    "stained nucleus nearest the middle (CellFinder, two passes), centred on it; "
                    "x0 = round(cx - side/2), y0 = round(cy - side/2), outside filled with the crop's background colour (median of its brightest tenth), "
                    "cv2.resize to size_px x size_px, INTER_AREA (INTER_LINEAR when enlarging), then "
                    "balance_background (per-channel gains bringing the brightest tenth to the training background)",
            "quantise": "int8 = uint8_rgb - 128 (scale 1.0, zero point -128)",
        },
        "output": {**info["output"], "meaning": "softmax probabilities in the order of 'classes'",
                   "dequantise": "p = (int8 - zero_point) * scale"},
        "ops": info["ops"],
        "trained_on": "PBC (Acevedo et al. 2020), half-scale crops (about 0.17 um/px), cell-centred squares",
        "keras_run": cfg,
    }
    if len(cfgs) > 1:
        spec["keras_run"] = {"ensemble": "arithmetic mean of the members' softmax outputs, in the graph",
                             "members": cfgs}
    cell_lists = sorted({path.name for path in (saved_cells(c)[0] for c in cfgs) if path is not None})
    if cell_lists:
        spec["trained_on"] += f"; with labelled cells of another device ({', '.join(cell_lists)}, models/device_cells.py)"
    (model_dir / "wbc_classifier_spec.json").write_text(json.dumps(spec, indent=2) + "\n")
    for k, member in enumerate(members):  # float weights, to fine-tune from without the training runs (--init)
        np.savez_compressed(model_dir / f"wbc_classifier_member{k}.npz", *member.get_weights())
    print(json.dumps({k: info[k] for k in ("input", "output", "ops")}, indent=1))
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes)")


if __name__ == "__main__":
    main()

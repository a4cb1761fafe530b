"""Train the WBC detector (small CenterNet, TensorFlow/Keras, CPU) on BCCD and virtual-slide fields.

    nice -n 10 python -m models.train_detector --data ../shared/datasets --out runs/detector
    nice -n 10 python -m models.train_detector --out runs/detector --resume   # continue a stopped run

Training samples (``--crop`` px squares at the model scale, 0.44 um/px +-20 %): with probability
1 - ``--slide-fraction`` a 2 x 2 mosaic of augmented BCCD training images on their median colour (the way
the runtime pads a small image), otherwise a crop of a rendered virtual-slide field (slides seeded 1000+,
never the tests' slide). 20 % of BCCD (``detector_data.bccd_split``, fixed seed) is held back and never
used here. Every epoch writes ``last.keras`` (with optimizer state) and ``state.json``; augmentation
depends only on (seed, epoch, batch), so a resumed run sees the same data as an uninterrupted one. The
per-epoch "fit" numbers are detection recall / precision on the (unaugmented) BCCD *training* images: a
sanity check, not a validation. Then:

    python -m models.export_detector --run runs/detector
    python -m models.eval_detector --run runs/detector
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("../shared/datasets"))
    ap.add_argument("--out", type=Path, default=Path("runs/detector"))
    ap.add_argument("--crop", type=int, default=192, help="training crop side (px at the model scale)")
    ap.add_argument("--base", type=int, default=16, help="network width")
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--steps", type=int, default=150, help="steps per epoch")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--wd", type=float, default=1e-4)
    ap.add_argument("--slide-fraction", type=float, default=0.3)
    ap.add_argument("--slide-fields", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2, help="TensorFlow intra-op threads")
    ap.add_argument("--max-minutes", type=float, default=0, help="stop cleanly after this long (0: no limit)")
    ap.add_argument("--resume", action="store_true")
    return ap.parse_args(argv)


KEYS = ("data", "crop", "base", "epochs", "steps", "batch", "lr", "wd", "slide_fraction", "slide_fields", "seed")


def heat_loss(y_true, y_pred):
    """CenterNet's penalty-reduced focal loss, normalised by the number of centres in the batch."""
    import keras.ops as K

    p = K.clip(y_pred, 1e-4, 1 - 1e-4)
    pos = K.cast(K.greater_equal(y_true, 0.999), "float32")
    pos_l = pos * K.square(1 - p) * K.log(p)
    neg_l = (1 - pos) * K.power(1 - y_true, 4) * K.square(p) * K.log(1 - p)
    return -(K.sum(pos_l) + K.sum(neg_l)) / K.maximum(K.sum(pos), 1.0)


def box_loss(y_true, y_pred):
    """L1 on centre offset (weight 1) and width / height (weight 0.2, in cells) where the target is set."""
    import keras.ops as K

    w = y_true[..., 4:5]
    diff = K.abs(y_pred - y_true[..., :4]) * K.convert_to_tensor(np.array([1.0, 1.0, 0.2, 0.2], np.float32))
    return K.sum(diff * w) / K.maximum(K.sum(w), 1.0)


def load_data(data: Path, cache_dir: Path, n_fields: int):
    """BCCD split, cached BCCD training images and rendered slide fields (both at CACHE_UM_PER_PX)."""
    import pickle

    from models import detector_data as D

    split = D.bccd_split(data / "bccd")
    cache_dir.mkdir(parents=True, exist_ok=True)
    path = cache_dir / f"detector_train_{D.SPLIT_SEED}_{n_fields}.pkl"
    if path.exists():
        bccd, fields = pickle.loads(path.read_bytes())
    else:
        bccd = D.load_bccd_cache(split["train"])
        fields = D.render_slide_fields(n_fields)
        path.write_bytes(pickle.dumps((bccd, fields)))
    return split, bccd, fields


def fit_check(model, split, n: int = 60, threshold: float = 0.3) -> dict:
    """Recall / precision at IoU 0.5 on the first ``n`` BCCD training images (float Keras, no tiling)."""
    import cv2

    from agent.inference.tflite_detector import decode, nms
    from models import detector_data as D

    xs, truths, factors = [], [], []
    for _, path, boxes in split["train"][:n]:
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        small, f = D.resize_to(bgr, D.BCCD_UM_PER_PX, D.WORK_UM_PER_PX)
        xs.append(D.pad_to(cv2.cvtColor(small, cv2.COLOR_BGR2RGB), 16, 96, 96))
        truths.append(boxes)
        factors.append(f)
    out = model.predict(np.stack(xs).astype(np.float32), batch_size=16, verbose=0)
    tp = n_pred = n_truth = 0
    for k in range(len(xs)):
        b, s = decode(out["heat"][k, ..., 0], out["box"][k], D.STRIDE, threshold)
        keep = nms(b, s, 0.4)
        b = b[keep] / factors[k]
        pred = [(x0, y0, x1 - x0, y1 - y0) for x0, y0, x1, y1 in b]
        tp += len(D.match(pred, truths[k]))
        n_pred += len(pred)
        n_truth += len(truths[k])
    return {"fit_recall": tp / max(1, n_truth), "fit_precision": tp / max(1, n_pred)}


def main(argv=None):
    args = parse(argv)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    cfg_path = out / "config.json"
    if args.resume:
        if not cfg_path.exists():
            raise SystemExit(f"--resume: no {cfg_path}")
        saved = json.loads(cfg_path.read_text())
        for k in KEYS:
            setattr(args, k, type(getattr(args, k))(saved[k]) if k != "data" else Path(saved[k]))
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import cv2

    cv2.setNumThreads(1)
    import keras
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    keras.utils.set_random_seed(args.seed)

    from models import detector_data as D
    from models.detector_net import build_detector

    t0 = time.time()
    split, bccd, fields = load_data(args.data, out.parent / "cache", args.slide_fields)
    print(f"data: BCCD train {len(split['train'])} holdout {len(split['holdout'])}, slide fields {len(fields)} "
          f"({time.time() - t0:.0f} s)", flush=True)
    cfg = {k: (str(getattr(args, k)) if k == "data" else getattr(args, k)) for k in KEYS}
    cfg.update({"split_seed": D.SPLIT_SEED, "holdout_fraction": D.HOLDOUT_FRACTION, "um_per_px": D.WORK_UM_PER_PX,
                "stride": D.STRIDE, "n_train_bccd": len(split["train"]), "n_holdout_bccd": len(split["holdout"]),
                "holdout_names": [name for name, _, _ in split["holdout"]]})
    if not args.resume:
        cfg_path.write_text(json.dumps(cfg, indent=2) + "\n")

    class Train(keras.utils.PyDataset):
        def __init__(self):
            super().__init__(workers=1, use_multiprocessing=False, max_queue_size=8)
            self.epoch = 0

        def __len__(self):
            return args.steps

        def __getitem__(self, i):
            rng = np.random.default_rng([args.seed, self.epoch, i])
            xb, hb, rb = [], [], []
            for _ in range(args.batch):
                if rng.random() < args.slide_fraction:
                    img, boxes = D.field_crop(fields, args.crop, rng)
                else:
                    img, boxes = D.bccd_mosaic(bccd, args.crop, rng)
                img = D.colour_aug(img, rng)
                heat, reg = D.targets(boxes, args.crop, args.crop)
                xb.append(img)
                hb.append(heat)
                rb.append(reg)
            return np.stack(xb).astype(np.float32), {"heat": np.stack(hb), "box": np.stack(rb)}

    train = Train()
    state_path = out / "state.json"
    state = {"epoch": 0, "history": []}
    if args.resume and (out / "last.keras").exists():
        state = json.loads(state_path.read_text())
        model = keras.models.load_model(out / "last.keras", custom_objects={"heat_loss": heat_loss, "box_loss": box_loss})
        print(f"resumed after epoch {state['epoch']}", flush=True)
    else:
        model = build_detector(None, None, args.base)
        sched = keras.optimizers.schedules.CosineDecay(
            0.0, decay_steps=max(1, (args.epochs - 1) * args.steps), alpha=0.02,
            warmup_target=args.lr, warmup_steps=args.steps,
        )
        model.compile(optimizer=keras.optimizers.AdamW(sched, weight_decay=args.wd),
                      loss={"heat": heat_loss, "box": box_loss})
        print(f"model {model.name}: {model.count_params()} parameters", flush=True)
    train.epoch = state["epoch"]
    start = time.time()

    class Keep(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            train.epoch = epoch
            self.t = time.time()

        def on_epoch_end(self, epoch, logs=None):
            logs = dict(logs or {})
            rec = {"epoch": epoch + 1, **{k: round(float(v), 4) for k, v in logs.items()},
                   "lr": float(self.model.optimizer.learning_rate), "s": round(time.time() - self.t, 1)}
            rec.update({k: round(v, 4) for k, v in fit_check(self.model, split).items()})
            state["history"].append(rec)
            state["epoch"] = epoch + 1
            self.model.save(out / "last.tmp.keras")
            os.replace(out / "last.tmp.keras", out / "last.keras")
            state_path.write_text(json.dumps(state, indent=1) + "\n")
            print(json.dumps(rec), flush=True)
            if args.max_minutes and time.time() - start > 60 * args.max_minutes:
                print("max-minutes reached: stopping (resume with --resume)", flush=True)
                self.model.stop_training = True

    if state["epoch"] >= args.epochs:
        print("already trained", flush=True)
        return
    model.fit(train, epochs=args.epochs, initial_epoch=state["epoch"], callbacks=[Keep()], verbose=2, shuffle=False)
    what = "done" if state["epoch"] >= args.epochs else f"stopped after epoch {state['epoch']} (--resume to go on)"
    print(what, flush=True)


if __name__ == "__main__":
    main()

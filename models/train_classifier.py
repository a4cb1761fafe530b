"""Train the 8-class PBC white-blood-cell classifier (TensorFlow/Keras, CPU).

    nice -n 19 python -m models.train_classifier --data ../shared/datasets/pbc --out runs/classifier
    nice -n 19 python -m models.train_classifier --out runs/classifier --resume   # continue a stopped run

Every epoch writes ``last.keras`` (weights + optimizer state) and ``state.json`` to --out, and
``best.keras`` when validation accuracy improves, so a run can be stopped at any time (or with
--max-minutes) and resumed with --resume. Augmentation randomness depends only on (seed, epoch, index), so a
resumed run sees the same data as an uninterrupted one. Then:

    python -m models.export_tflite --run runs/classifier
    python -m models.eval_classifier --run runs/classifier

Another microscope: label some of its cells (``models/device_cells.py``) and add them to PBC's training crops,
either from the start (the shipped members were trained so with BCCD's) or as a fine-tune of a trained model
(``--init``: a run's ``best.keras``, or a shipped member's ``models/wbc_classifier_memberK.npz``):

    nice -n 19 python -m models.train_classifier --data ../shared/datasets/pbc --out runs/classifier_bccd96_s2 \
        --seed 2 --cells models/data/bccd_wbc_labels.csv --cells-images ../shared/datasets/bccd/JPEGImages \
        --cells-um-per-px 0.055 --cells-repeat 8
    nice -n 19 python -m models.train_classifier --out runs/ft_C_s0 --init runs/classifier_long96/best.keras \
        --cells models/data/bccd_wbc_labels.csv --cells-images ../shared/datasets/bccd/JPEGImages \
        --cells-um-per-px 0.055 --cells-repeat 8 --epochs 10 --lr 1e-4
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
    ap.add_argument("--data", type=Path, default=Path("../shared/datasets/pbc"))
    ap.add_argument("--out", type=Path, default=Path("runs/classifier"))
    ap.add_argument("--size", type=int, default=96, help="model input side in px")
    ap.add_argument("--crop-factor", type=float, default=None,
                    help="side of the model's square in nucleus diameters (default: data_pbc.CROP_FACTOR)")
    ap.add_argument("--width", default="m", choices=["s", "m"])
    ap.add_argument("--norm", default="bn", choices=["bn", "gn"],
                    help="BatchNorm (folded into the convolutions at export) or GroupNorm (kept in the graph)")
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--wd", type=float, default=5e-5)
    ap.add_argument("--label-smoothing", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--stain-aug", type=float, default=0.0,
                    help="share of training samples re-stained in optical-density space (0: off)")
    ap.add_argument("--cells", type=Path, default=None,
                    help="labelled cells of another device (models/device_cells.py): log accuracy on its eval part "
                         "every epoch, and with --cells-repeat train on its train part")
    ap.add_argument("--cells-images", type=Path, default=None, help="folder of the images --cells names")
    ap.add_argument("--cells-um-per-px", type=float, default=None, help="the scale of those images")
    ap.add_argument("--cells-repeat", type=int, default=0,
                    help="add the train part of --cells this many times to the training set (0: only log)")
    ap.add_argument("--init", type=Path, default=None,
                    help="fine-tune: start from these weights (a run's .keras, or an exported "
                         "models/wbc_classifier_memberK.npz; fresh optimizer, cosine from --lr)")
    ap.add_argument("--threads", type=int, default=2, help="TensorFlow intra-op threads")
    ap.add_argument("--max-minutes", type=float, default=0, help="stop cleanly after this long (0: no limit)")
    ap.add_argument("--limit-steps", type=int, default=0, help="debug: steps per epoch")
    ap.add_argument("--resume", action="store_true")
    return ap.parse_args(argv)


def saved_cells(saved: dict) -> tuple[Path | None, Path | None, float | None, int]:
    """A run's cell list as saved in its config.json: (list, images, um_per_px, repeat), (None, None, None, 0) without.

    The first runs with BCCD's cells (the session-5 fine-tunes ft_C_s0 / ft_C_s1) saved them as ``bccd`` (the data
    set folder) and ``bccd_repeat``, before ``--cells*`` existed; they meant BCCD's own list, images and scale.
    """
    cells = saved.get("cells")
    if cells:
        return Path(cells["list"]), Path(cells["images"]), float(cells["um_per_px"]), int(cells["repeat"])
    if saved.get("bccd"):
        from models.device_cells import BCCD_CELLS, BCCD_UM_PER_PX

        return BCCD_CELLS, Path(saved["bccd"]) / "JPEGImages", BCCD_UM_PER_PX, int(saved.get("bccd_repeat", 0))
    return None, None, None, 0


def init_weights(path: Path) -> list[np.ndarray]:
    """Weights to fine-tune from: a training run's ``.keras`` file or an exported member's ``.npz``."""
    if path.suffix == ".npz":
        with np.load(path) as arrays:
            return [arrays[f"arr_{i}"] for i in range(len(arrays.files))]
    import keras

    return keras.models.load_model(path).get_weights()


def main(argv=None):
    args = parse(argv)
    if args.cells is not None and (args.cells_images is None or not (args.cells_um_per_px or 0) > 0):
        raise SystemExit("--cells needs --cells-images and a positive --cells-um-per-px")
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    cfg_path = out / "config.json"
    if args.resume:
        if not cfg_path.exists():
            raise SystemExit(f"--resume: no {cfg_path}")
        saved = json.loads(cfg_path.read_text())
        for k in ("data", "size", "crop_factor", "width", "epochs", "batch", "lr", "wd", "label_smoothing", "seed"):
            setattr(args, k, Path(saved[k]) if k == "data" else saved[k])
        # options added later; runs from before them used the defaults
        args.stain_aug, args.init = saved.get("stain_aug", 0.0), Path(saved["init"]) if saved.get("init") else None
        args.cells, args.cells_images, args.cells_um_per_px, args.cells_repeat = saved_cells(saved)
        args.norm = saved.get("norm", "bn")  # runs from before GroupNorm was an option
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import cv2

    cv2.setNumThreads(1)
    import keras
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    keras.utils.set_random_seed(args.seed)

    from models import data_pbc, device_cells
    from models.augment import JitterStrength, augment
    from models.net import build_model

    if args.crop_factor is None:
        args.crop_factor = data_pbc.CROP_FACTOR
    cache_dir = out.parent / "cache"
    split = data_pbc.make_split(args.data)
    cache_px = int(round(args.size * data_pbc.CACHE_MARGIN))
    zoom = args.size * data_pbc.CACHE_MARGIN / cache_px  # output px per cache px at the canonical scale
    t0 = time.time()
    xtr, ytr = data_pbc.load_arrays(split["train"], "train", cache_dir, cache_px, args.crop_factor, data_pbc.CACHE_MARGIN)
    xva, yva = data_pbc.load_arrays(split["val"], "val", cache_dir, args.size, args.crop_factor)
    if args.cells is not None:
        def cell_arrays(part, size, margin=1.0):
            return device_cells.load_arrays(device_cells.usable_cells(part, args.cells), args.cells_images,
                                            args.cells_um_per_px, size, args.crop_factor, margin)

        xce, yce = cell_arrays("eval", args.size)
        if args.cells_repeat:
            xct, yct = cell_arrays("train", cache_px, data_pbc.CACHE_MARGIN)
            xtr = np.concatenate([xtr] + [xct] * args.cells_repeat)
            ytr = np.concatenate([ytr] + [yct] * args.cells_repeat)
    strength = JitterStrength(stain_density_p=args.stain_aug)
    print(f"data: train {xtr.shape} val {xva.shape} ({time.time() - t0:.0f} s)", flush=True)

    cfg = {
        "data": str(args.data), "size": args.size, "crop_factor": args.crop_factor, "width": args.width, "norm": args.norm,
        "epochs": args.epochs, "batch": args.batch, "lr": args.lr, "wd": args.wd,
        "label_smoothing": args.label_smoothing, "seed": args.seed, "split_seed": data_pbc.SPLIT_SEED,
        "n_train": int(len(ytr)), "n_val": int(len(yva)), "classes": data_pbc.CLASSES,
        "cache_margin": data_pbc.CACHE_MARGIN, "cache_px": cache_px, "stain_aug": args.stain_aug,
        "cells": {"list": str(args.cells), "images": str(args.cells_images), "um_per_px": args.cells_um_per_px,
                  "repeat": args.cells_repeat} if args.cells else None,
        "init": str(args.init) if args.init else None,
    }
    if not args.resume:
        cfg_path.write_text(json.dumps(cfg, indent=2) + "\n")

    n_classes = len(data_pbc.CLASSES)
    steps = len(ytr) // args.batch
    if args.limit_steps:
        steps = min(steps, args.limit_steps)

    class Train(keras.utils.PyDataset):
        def __init__(self):
            super().__init__(workers=1, use_multiprocessing=False, max_queue_size=8)
            self.epoch = 0

        def __len__(self):
            return steps

        def _order(self):
            return np.random.default_rng([args.seed, self.epoch]).permutation(len(ytr))

        def __getitem__(self, i):
            idx = self._order()[i * args.batch : (i + 1) * args.batch]
            rng = np.random.default_rng([args.seed, self.epoch, i])
            xb = np.stack([augment(xtr[j], args.size, zoom, rng, strength=strength) for j in idx]).astype(np.float32)
            yb = keras.utils.to_categorical(ytr[idx], n_classes)
            return xb, yb

    train = Train()

    state_path = out / "state.json"
    state = {"epoch": 0, "best_acc": 0.0, "history": []}
    if args.resume and (out / "last.keras").exists():
        state = json.loads(state_path.read_text())
        model = keras.models.load_model(out / "last.keras")
        print(f"resumed after epoch {state['epoch']} (best val acc {state['best_acc']:.4f})", flush=True)
    else:
        model = build_model(args.size, n_classes, args.width, norm=args.norm)
        if args.init is not None:
            model.set_weights(init_weights(args.init))
        warmup = 1 if args.init is not None else 2
        sched = keras.optimizers.schedules.CosineDecay(
            0.0, decay_steps=max(1, (args.epochs - warmup) * steps), alpha=0.01,
            warmup_target=args.lr, warmup_steps=warmup * steps,
        )
        model.compile(
            optimizer=keras.optimizers.AdamW(sched, weight_decay=args.wd),
            loss=keras.losses.CategoricalCrossentropy(label_smoothing=args.label_smoothing),
            metrics=["accuracy"],
        )
        print(f"model {model.name}: {model.count_params()} parameters", flush=True)
    train.epoch = state["epoch"]

    start = time.time()

    class Keep(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            train.epoch = epoch
            self.t = time.time()

        def on_epoch_end(self, epoch, logs=None):
            logs = dict(logs or {})
            p = self.model.predict(xva.astype(np.float32), batch_size=256, verbose=0)
            acc = float((p.argmax(1) == yva).mean())
            rec = {"epoch": epoch + 1, "loss": float(logs.get("loss", 0)), "train_acc": float(logs.get("accuracy", 0)),
                   "val_acc": acc, "lr": float(self.model.optimizer.learning_rate), "s": round(time.time() - self.t, 1)}
            if args.cells is not None and len(yce):  # logged only; the best epoch is chosen on PBC validation alone
                pc = self.model.predict(xce.astype(np.float32), batch_size=256, verbose=0)
                rec["cells_eval_acc"] = float((pc.argmax(1) == yce).mean())
            state["history"].append(rec)
            state["epoch"] = epoch + 1
            if acc > state["best_acc"]:
                state["best_acc"] = acc
                state["best_epoch"] = epoch + 1
                self.model.save(out / "best.keras")
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
    # shuffle=False: Train already permutes per epoch from (seed, epoch), which keeps a resumed run on the same order
    model.fit(train, epochs=args.epochs, initial_epoch=state["epoch"], callbacks=[Keep()], verbose=2, shuffle=False)
    what = "done" if state["epoch"] >= args.epochs else f"stopped after epoch {state['epoch']} (--resume to go on)"
    print(f"{what}: best val acc {state['best_acc']:.4f} at epoch {state.get('best_epoch')}", flush=True)


if __name__ == "__main__":
    main()

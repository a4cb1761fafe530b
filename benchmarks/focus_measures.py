"""Rank the focus measures of agent.focus on the real miLab 0152 focal stack.

    python benchmarks/focus_measures.py --data ../shared/datasets

For every measure: the plane it picks on the full stack and on truncated stacks, Spearman rank
correlation with the device's own focus measure (the last field of each file name), whether the
curve is unimodal (rises to its peak, then falls), and speed on one full-resolution frame at one
OpenCV thread, in megapixels per second.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.focus import DEFAULT_MEASURE, MEASURES, focus_measure  # noqa: E402
from agent.results.names import parse_name  # noqa: E402

# (first, last) plane indices, inclusive: the stack as a scan that started or stopped early sees it.
TRUNCATIONS: tuple[tuple[int, int], ...] = ((2, 9), (0, 6), (4, 9))
DEVICE_PEAK_TOLERANCE = 1


def load_stack(stack_dir: Path) -> tuple[list[np.ndarray], np.ndarray]:
    planes = []
    for path in stack_dir.glob("*.jpg"):
        name = parse_name(path.name)
        if name is not None:
            planes.append((name.stack_index, name.focus_measure, path))
    if not planes:
        raise FileNotFoundError(f"no miLab plane images in {stack_dir}")
    planes.sort()
    images = []
    for _, _, path in planes:
        img = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if img is None:
            raise OSError(f"cannot read {path}")
        images.append(img)
    return images, np.array([fm for _, fm, _ in planes], dtype=np.float64)


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rho (no tie correction: focus values are continuous)."""
    rank_a = np.argsort(np.argsort(a)).astype(np.float64)
    rank_b = np.argsort(np.argsort(b)).astype(np.float64)
    return float(np.corrcoef(rank_a, rank_b)[0, 1])


def is_unimodal(values: np.ndarray) -> bool:
    peak = int(np.argmax(values))
    return bool(np.all(np.diff(values[: peak + 1]) > 0) and np.all(np.diff(values[peak:]) < 0))


def megapixels_per_s(image: np.ndarray, measure: str, repeats: int) -> tuple[float, float]:
    focus_measure(image, measure)  # warm caches and OpenCV's dispatch
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        focus_measure(image, measure)
        times.append(time.perf_counter() - t0)
    median_s = float(np.median(times))
    return image.shape[0] * image.shape[1] / 1e6 / median_s, median_s * 1e3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("../shared/datasets"))
    parser.add_argument("--stack", default="milab_stacks/0152")
    parser.add_argument("--channel", choices=("green", "gray"), default="green")
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args(argv)

    cv2.setNumThreads(1)
    images, device_fm = load_stack(args.data / args.stack)
    device_peak = int(np.argmax(device_fm))
    print(f"stack {args.stack}: {len(images)} planes of {images[0].shape[1]}x{images[0].shape[0]}, "
          f"device peak at plane {device_peak}, channel={args.channel}, 1 OpenCV thread")
    trunc_heads = [f"{a}-{b}" for a, b in TRUNCATIONS]
    header = (f"{'measure':<20} {'full':>4} " + " ".join(f"{h:>4}" for h in trunc_heads)
              + f" {'all±1':>5} {'spearman':>8} {'unimodal':>8} {'ms':>6} {'MP/s':>7}")
    print(header)
    print("-" * len(header))
    rows = []
    for measure in MEASURES:
        values = np.array([focus_measure(img, measure, channel=args.channel) for img in images])
        picks = [int(np.argmax(values))]
        picks += [a + int(np.argmax(values[a : b + 1])) for a, b in TRUNCATIONS]
        all_ok = all(abs(p - device_peak) <= DEVICE_PEAK_TOLERANCE for p in picks)
        rho = spearman(values, device_fm)
        mps, ms = megapixels_per_s(images[device_peak], measure, args.repeats)
        rows.append((all_ok, rho, measure, picks, is_unimodal(values), ms, mps))
    # best first: correct on every stack, then agreement with the device
    for all_ok, rho, measure, picks, unimodal, ms, mps in sorted(rows, key=lambda r: (not r[0], -r[1])):
        mark = "*" if measure == DEFAULT_MEASURE else " "
        print(f"{measure + mark:<20} {picks[0]:>4} " + " ".join(f"{p:>4}" for p in picks[1:])
              + f" {'yes' if all_ok else 'NO':>5} {rho:>8.3f} {'yes' if unimodal else 'no':>8}"
              + f" {ms:>6.2f} {mps:>7.0f}")
    print(f"* = DEFAULT_MEASURE; planes are absolute stack indices; all±1 = every pick within "
          f"±{DEVICE_PEAK_TOLERANCE} of the device peak")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Processing time of one 10-plane 1920x1200 field against its acquisition time.

Processing = focus scores of every plane, detection on the sharpest, per-cell focus and
classification, JPEG writing and the JSON records, as the scan's worker thread does it. Acquisition =
move to the next field, autofocus and the z-stack on the virtual microscope at its default (realistic)
timings, i.e. the physical limit of that hardware.

    python benchmarks/process_field.py [--repeats 7] [--acquisitions 4] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import cv2

from agent.acquisition.plan import FieldPlan
from agent.assembly import build_analyzer, open_microscope
from agent.config import load_settings
from agent.results.writer import ResultWriter
from agent.scan import ScanRunner, process_field


def acquire_fields(realtime: bool, count: int, tmp: Path):
    settings = load_settings(overrides={"simulation.realtime": realtime})
    analyzer = build_analyzer(settings)
    cam = settings.camera
    step = cam.width_px * cam.um_per_px
    fields, seconds = [], []
    with ResultWriter(tmp / f"acq-{realtime}", fsync=False) as writer, open_microscope(settings) as scope:
        runner = ScanRunner(settings, scope.stage, scope.camera, analyzer, writer)
        for i in range(count):
            plan = FieldPlan(i, settings.scan.origin_um[0] + i * step, settings.scan.origin_um[1])
            t0 = time.perf_counter()
            acquired = runner._acquire(plan)
            seconds.append(time.perf_counter() - t0)
            fields.append(acquired)
    return settings, analyzer, fields, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--acquisitions", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1, help="OpenCV threads (the worker is one thread)")
    args = parser.parse_args()
    cv2.setNumThreads(args.threads)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        _, _, _, acq_seconds = acquire_fields(True, args.acquisitions, tmp)
        # Later fields are the steady state (the first one searches a wider range).
        steady = acq_seconds[1:] or acq_seconds
        settings, analyzer, fields, _ = acquire_fields(False, 3, tmp)
        # Time a field with cells in it: per-cell work is part of the cost.
        with ResultWriter(tmp / "warmup", fsync=False) as writer:
            found = [len(process_field(f, analyzer, writer, settings).cells) for f in fields]
        sample = fields[found.index(max(found))]
        steps: dict[str, list[float]] = {}
        totals, cells = [], 0
        for r in range(args.repeats):
            with ResultWriter(tmp / f"proc-{r}", fsync=settings.output.fsync) as writer:
                t0 = time.perf_counter()
                record = process_field(sample, analyzer, writer, settings)
                total = time.perf_counter() - t0
            totals.append(total)
            cells = len(record.cells)
            parts = {k: record.timings_s[k] for k in ("focus", "detect", "cells", "write_jpeg")}
            parts["records (jsonl + json)"] = total - sum(parts.values())
            for k, v in parts.items():
                steps.setdefault(k, []).append(v)
    med = statistics.median(totals)
    acq = statistics.median(steady)
    print(f"field: {settings.camera.width_px}x{settings.camera.height_px}, {settings.stack.planes} planes, "
          f"{cells} WBC(s), measure {analyzer.measure}, OpenCV threads {args.threads}, repeats {args.repeats}")
    print(f"processing median: {med * 1000:.0f} ms")
    for k, v in steps.items():
        m = statistics.median(v)
        print(f"  {k:<24} {m * 1000:7.1f} ms  {100 * m / med:5.1f} %")
    print(f"acquisition median (default timings, fields 2..{args.acquisitions}): {acq * 1000:.0f} ms")
    print(f"processing / acquisition: {med / acq:.2f}")


if __name__ == "__main__":
    main()

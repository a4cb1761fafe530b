"""Autofocus side by side on the zero-delay virtual microscope, scored against the slide's truth.

    nice -n 10 python benchmarks/autofocus.py --fields 200 --json /tmp/af.json

The fields are the scan's own serpentine plan (``agent.session.plan_for``); on each one, in scan
order, three strategies run on the same field:

- ``map``:   the scan's focuser (focus map prediction, three-frame confirmation, fallbacks);
- ``squid``: 10 frames at 1.5 um steps centred on the map's prediction (the start z on field 1),
             the best frame's z (a Squid-style stack search);
- ``cold``:  the focuser with an empty map on every field: the search from ``focus.start_z_um``.

Frames count every image a strategy takes, retries included; a flagged field counts as a miss. The
truth is ``slide.focus_z_um`` at the field centre.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent import focus  # noqa: E402
from agent.acquisition.autofocus import build_focuser  # noqa: E402
from agent.assembly import build_slide, measure_name, open_microscope  # noqa: E402
from agent.config import Settings  # noqa: E402
from agent.session import plan_for  # noqa: E402

SQUID_FRAMES = 10
SQUID_STEP_UM = 1.5
TOLERANCE_UM = 0.5
WARM_FROM_FIELD = 6


def squid_search(stage, camera, center_z_um: float, settings: Settings, measure: str) -> tuple[float, int]:
    heights = [center_z_um + (k - (SQUID_FRAMES - 1) / 2.0) * SQUID_STEP_UM for k in range(SQUID_FRAMES)]
    scores = []
    for z_um in heights:
        stage.move_to(z_um=z_um, timeout_s=settings.stage.move_timeout_s)
        frame = camera.capture(timeout_s=settings.camera.capture_timeout_s)
        scores.append(focus.focus_measure(frame.image, measure, downsample=settings.focus.downsample))
    return heights[int(np.argmax(scores))], SQUID_FRAMES


def run(settings: Settings, modes: list[str], log) -> dict[str, list[dict]]:
    plan = plan_for(settings)
    slide = build_slide(settings)
    measure = measure_name(settings)
    rows: dict[str, list[dict]] = {m: [] for m in modes}
    with open_microscope(settings) as scope:
        stage, camera = scope.stage, scope.camera
        focuser = build_focuser(settings, stage, camera, measure)
        for f in plan:
            stage.move_to(x_um=f.x_um, y_um=f.y_um, timeout_s=settings.stage.move_timeout_s)
            truth = slide.focus_z_um(f.x_um, f.y_um)
            prediction = focuser.predict(f.x_um, f.y_um)
            center = settings.focus.start_z_um if prediction is None else prediction.z_um
            if "map" in modes:
                r = focuser.focus_field(f.x_um, f.y_um)
                rows["map"].append(_row(f, r.z_um, r.success, r.frames, r.elapsed_s, truth, r.reason))
            if "squid" in modes:
                t0 = time.perf_counter()
                z, frames = squid_search(stage, camera, center, settings, measure)
                rows["squid"].append(_row(f, z, True, frames, time.perf_counter() - t0, truth, ""))
            if "cold" in modes:
                r = build_focuser(settings, stage, camera, measure).focus_field(f.x_um, f.y_um)
                rows["cold"].append(_row(f, r.z_um, r.success, r.frames, r.elapsed_s, truth, r.reason))
            log(f"field {f.image_number}: " + "  ".join(
                f"{m} {rows[m][-1]['frames']}f {rows[m][-1]['error_um']:+.3f}" for m in modes))
    return rows


def _row(f, z_um: float, success: bool, frames: int, elapsed_s: float, truth_um: float, reason: str) -> dict:
    return {"field": f.image_number, "x_um": f.x_um, "y_um": f.y_um, "z_um": z_um, "truth_um": truth_um,
            "error_um": z_um - truth_um, "success": success, "frames": frames, "elapsed_s": elapsed_s,
            "reason": reason}


def summarise(rows: list[dict]) -> dict:
    frames = np.array([r["frames"] for r in rows], dtype=float)
    warm = np.array([r["frames"] for r in rows if r["field"] >= WARM_FROM_FIELD], dtype=float)
    err = np.array([abs(r["error_um"]) for r in rows])
    hit = np.array([r["success"] and abs(r["error_um"]) <= TOLERANCE_UM for r in rows])
    return {
        "fields": len(rows),
        "frames_mean": float(frames.mean()),
        "frames_mean_from_6": float(warm.mean()) if warm.size else float("nan"),
        "frames_max": int(frames.max()),
        "err_p50_um": float(np.percentile(err, 50)),
        "err_p99_um": float(np.percentile(err, 99)),
        "err_max_um": float(err.max()),
        "within_tol_pct": 100.0 * float(hit.mean()),
        "flagged": int(sum(not r["success"] for r in rows)),
        "af_s_mean": float(np.mean([r["elapsed_s"] for r in rows])),
    }


def print_table(summaries: dict[str, dict]) -> None:
    head = ("| strategy | fields | frames/field | frames/field (6+) | max frames | |err| p50 µm | "
            "|err| p99 µm | |err| max µm | ≤0.5 µm | flagged | AF s/field (zero-delay) |")
    print(head)
    print("|" + " --- |" * head.count(" | ") + " --- |")
    for name, s in summaries.items():
        print(f"| {name} | {s['fields']} | {s['frames_mean']:.2f} | {s['frames_mean_from_6']:.2f} | "
              f"{s['frames_max']} | {s['err_p50_um']:.3f} | {s['err_p99_um']:.3f} | {s['err_max_um']:.3f} | "
              f"{s['within_tol_pct']:.1f} % | {s['flagged']} | {s['af_s_mean']:.2f} |")
    if "map" in summaries and "squid" in summaries:
        ratio = summaries["map"]["frames_mean"] / summaries["squid"]["frames_mean"]
        print(f"\nmap / squid frames: {ratio:.2f}x")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fields", type=int, default=200)
    ap.add_argument("--downsample", type=int, default=None, help="override focus.downsample")
    ap.add_argument("--modes", default="map,squid,cold", help="comma-separated: map, squid, cold")
    ap.add_argument("--json", type=Path, default=None, help="write every field's result here")
    ap.add_argument("--quiet", action="store_true", help="no per-field lines")
    args = ap.parse_args(argv)
    settings = Settings()
    settings.simulation.realtime = False
    settings.scan.fields = args.fields
    if args.downsample is not None:
        settings.focus.downsample = args.downsample
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]

    def log(line: str) -> None:
        if not args.quiet:
            print(line, flush=True)

    t0 = time.perf_counter()
    rows = run(settings, modes, log)
    summaries = {m: summarise(r) for m, r in rows.items()}
    print(f"\n{args.fields} fields, focus.downsample {settings.focus.downsample}, measure "
          f"{measure_name(settings)}, {time.perf_counter() - t0:.0f} s wall\n")
    print_table(summaries)
    if args.json is not None:
        args.json.write_text(json.dumps({"summaries": summaries, "fields": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

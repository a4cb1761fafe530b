"""``wbcscope calibrate``: measure image scale, camera rotation/mirror, stage backlash and flat-field.

Runs at the bench on any camera backend (the virtual microscope with ``--simulate``). The result goes
to ``calibration.json`` (and ``calibration_flat.npy``) next to the config file, or into ``--out``,
and is printed in plain words.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from agent.config import load_settings, set_in_file, simulation_overrides


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser("calibrate", help="measure µm per pixel, camera rotation, backlash and flat-field")
    p.add_argument("--config", type=Path, help="TOML settings file (the calibration is written next to it)")
    p.add_argument("--out", type=Path, help="directory for calibration.json (default: the config's directory, "
                                            "else the current directory)")
    p.add_argument("--simulate", action="store_true", help="calibrate the virtual microscope")
    p.add_argument("--zero-delay", action="store_true", help="simulated hardware without waits")
    p.add_argument("--centre-um", type=float, nargs=2, metavar=("X", "Y"),
                   help="a smear area with cells, in focus (default: scan.origin_um)")
    p.add_argument("--z-um", type=float, help="focus z to use (default: a coarse search around focus.start_z_um)")
    p.add_argument("--blank-um", type=float, nargs=2, metavar=("X", "Y"),
                   help="an empty, clean area for the flat-field (default: median of many fields)")
    p.add_argument("--flat-fields", type=int, default=15, help="fields for the median flat-field (default 15)")
    p.add_argument("--no-flat-field", action="store_true", help="do not record a flat-field")
    p.add_argument("--overshoot-um", type=float, default=100.0,
                   help="approach distance, must exceed the backlash (default 100)")
    p.add_argument("--settle-s", type=float, default=0.0, help="extra wait after each move before a frame counts")
    return p


def run(args: argparse.Namespace) -> int:
    from agent.assembly import open_microscope
    from agent.calibration import CALIBRATION_FILE, Bench, calibrate, focus_coarsely
    from agent.errors import ConfigError, OutputError

    overrides = simulation_overrides(simulate=args.simulate, zero_delay=args.zero_delay)
    settings = load_settings(args.config, overrides)
    if args.flat_fields < 3:
        raise ConfigError("--flat-fields must be at least 3")
    out_dir = args.out or (args.config.parent if args.config else Path.cwd())
    if not out_dir.is_dir():
        raise OutputError(f"not a directory: {out_dir}")
    centre = tuple(args.centre_um) if args.centre_um else tuple(settings.scan.origin_um)

    def say(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    with open_microscope(settings) as scope:
        bench = Bench(scope.stage, scope.camera, overshoot_um=args.overshoot_um, settle_s=args.settle_s,
                      capture_timeout_s=settings.camera.capture_timeout_s,
                      move_timeout_s=settings.stage.move_timeout_s, log=say)
        bench.approach_from_below(*centre)
        if args.z_um is not None:
            scope.stage.move_to(z_um=args.z_um, wait=True, timeout_s=settings.stage.move_timeout_s)
        else:
            z = focus_coarsely(bench, settings.focus.start_z_um, settings.focus.first_range_um,
                               settings.focus.coarse_step_um)
            say(f"focused at z = {z:.1f} µm")
        cal = calibrate(bench, centre_um=centre, guess_um_per_px=settings.camera.um_per_px, out_dir=out_dir,
                        blank_um=tuple(args.blank_um) if args.blank_um else None, flat_fields=args.flat_fields,
                        flat_field=not args.no_flat_field,
                        camera_name=f"{settings.camera.backend}:{settings.camera.device or 'default'}")
    print(cal.describe())
    print(f"written to {out_dir / CALIBRATION_FILE}")
    if args.config:
        relative = os.path.relpath(out_dir / CALIBRATION_FILE, args.config.parent)
        set_in_file(args.config, "camera", "calibration", relative)
        print(f"{args.config}: camera.calibration = {relative!r} (scale and flat-field used from now on)")
    else:
        print(f"to use it: set camera.calibration = {str(out_dir / CALIBRATION_FILE)!r} in your config")
    return 0

"""``wbcscope stage ...``: bench commands for the motorised stage (info, home, move, pos, jog, stop).

Each invocation opens the port, does one thing, prints plain words (``--json`` for ``pos``/``info``)
and closes the port. Port and dialect come from ``--port``/``--dialect``, else from the ``stage.*``
settings of ``--config``, else the defaults. Errors are raised as typed ``StageError``s for the
top-level CLI to print as one line. Note that opening a GRBL board's port resets an Arduino-based
controller, so ``stage stop`` is only useful on controllers that survive a reopen (Sangaboard v1).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from agent.config import load_settings
from firmware_interface.errors import UnsupportedOperationError
from firmware_interface.factory import DIALECTS, build_stage_from_settings
from firmware_interface.stage import Position, Stage


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``stage`` command (with its sub-commands) to the top-level subparsers."""
    stage = subparsers.add_parser("stage", help="bench control of the stage controller")
    actions = stage.add_subparsers(dest="stage_action", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--port", help="serial port, pyserial URL or 'emulator' (default: stage.port)")
    common.add_argument("--dialect", choices=DIALECTS, help="controller firmware (default: stage.dialect)")
    common.add_argument("--config", type=Path, help="TOML settings file for the stage.* defaults")
    common.add_argument("--timeout-s", type=float, help="wait for a move (default: stage.move_timeout_s)")

    info = actions.add_parser("info", parents=[common], help="identify the controller and its position")
    info.add_argument("--json", action="store_true", help="print one JSON object")
    actions.add_parser("home", parents=[common], help="run the homing cycle (needs endstops)")
    move = actions.add_parser("move", parents=[common], help="absolute move in micrometres")
    for axis in "xyz":
        move.add_argument(f"--{axis}", type=float, dest=f"{axis}_um", metavar="UM")
    pos = actions.add_parser("pos", parents=[common], help="print the position in micrometres")
    pos.add_argument("--json", action="store_true", help="print one JSON object")
    jog = actions.add_parser("jog", parents=[common], help="relative move in micrometres")
    for axis in "xyz":
        jog.add_argument(f"--d{axis}", type=float, default=0.0, dest=f"d{axis}_um", metavar="UM")
    actions.add_parser("stop", parents=[common], help="abort the move in progress")
    stage.set_defaults(handler=run)
    return stage


def run(args: argparse.Namespace) -> int:
    settings = load_settings(getattr(args, "config", None))
    st = settings.stage
    if args.dialect:
        st.dialect = args.dialect
    if args.port:
        st.port = args.port
    timeout_s = args.timeout_s if args.timeout_s is not None else st.move_timeout_s
    with _connected(settings) as stage:
        action = args.stage_action
        if action == "info":
            return _info(stage, st.dialect, st.port, as_json=args.json)
        if action == "pos":
            here = stage.position()
            print(json.dumps(_pos_dict(here)) if args.json else _words(here))
        elif action == "move":
            if args.x_um is None and args.y_um is None and args.z_um is None:
                print("wbcscope stage move: give at least one of --x --y --z", file=sys.stderr)
                return 2
            stage.move_to(args.x_um, args.y_um, args.z_um, timeout_s=timeout_s)
            print("at " + _words(stage.position()))
        elif action == "jog":
            here = stage.position()
            stage.move_to(here.x_um + args.dx_um, here.y_um + args.dy_um, here.z_um + args.dz_um,
                          timeout_s=timeout_s)
            print("at " + _words(stage.position()))
        elif action == "home":
            home = getattr(stage, "home", None)
            if home is None:
                raise UnsupportedOperationError(f"{st.dialect} driver has no homing")
            print("homed, at " + _words(home(timeout_s=timeout_s)))
        elif action == "stop":
            stage.stop()
            print("stopped at " + _words(stage.position()))
    return 0


@contextlib.contextmanager
def _connected(settings: Any) -> Iterator[Stage]:
    with contextlib.ExitStack() as stack:
        port = settings.stage.port
        if port == "emulator":
            port = _start_emulator(settings, stack)
        stage = build_stage_from_settings(settings.stage, port)
        stack.callback(stage.close)
        stage.connect()
        yield stage


def _start_emulator(settings: Any, stack: contextlib.ExitStack) -> str:
    """An in-process emulator lives only as long as this command: handy to try the commands out."""
    from firmware_interface.emulator import MotionTimings, start_emulator

    sim = settings.simulation
    _, server, address = start_emulator(
        settings.stage.dialect, timings=MotionTimings(realtime=sim.realtime),
        travel_mm=tuple(t / 1000.0 for t in settings.stage.travel_um),
        steps_per_um=tuple(settings.stage.steps_per_um))
    stack.callback(server.stop)
    return address


def _info(stage: Stage, dialect: str, port: str, *, as_json: bool) -> int:
    firmware = getattr(stage, "firmware_info", None)
    here = stage.position()
    if as_json:
        print(json.dumps({
            "dialect": dialect, "port": port,
            "version": firmware.version if firmware else None,
            "detail": firmware.detail if firmware else "",
            "position_um": _pos_dict(here),
        }))
        return 0
    version = f"{firmware.version} ({firmware.detail})" if firmware else "unknown version"
    print(f"{dialect} controller on {port}, firmware {version}")
    print("at " + _words(here))
    return 0


def _pos_dict(here: Position) -> dict[str, float]:
    return {"x_um": here.x_um, "y_um": here.y_um, "z_um": here.z_um}


def _words(here: Position) -> str:
    return f"x {here.x_um:.1f} um, y {here.y_um:.1f} um, z {here.z_um:.1f} um"

"""Run an emulated controller on a pty (or TCP) until interrupted: ``python -m firmware_interface.emulator``.

``make_emulator`` / ``start_emulator`` are also what the agent uses when ``stage.port = "emulator"``.
"""

from __future__ import annotations

import argparse
import dataclasses
import threading

from firmware_interface.emulator.board import EmulatedBoard
from firmware_interface.emulator.grbl import GrblEmulator
from firmware_interface.emulator.motion import MotionTimings
from firmware_interface.emulator.pty_server import PtyEmulatorServer
from firmware_interface.emulator.sangaboard import SangaboardEmulator
from firmware_interface.emulator.tcp_server import TcpEmulatorServer

DIALECTS = ("grbl", "sangaboard")


def make_emulator(
    dialect: str = "grbl",
    *,
    timings: MotionTimings | None = None,
    travel_mm: tuple[float, float, float] = (100.0, 75.0, 10.0),
    homing_enabled: bool = False,
    steps_per_um: tuple[float, float, float] = (1.0, 1.0, 1.0),
    sangaboard_firmware: str = "1.0.4",
) -> EmulatedBoard:
    """An emulated board of ``dialect``. For a Sangaboard, ``homing_enabled`` means endstops and the
    step delay is chosen so the x axis moves at ``timings.xy_speed_mm_s``."""
    timings = timings or MotionTimings()
    if dialect == "grbl":
        return GrblEmulator(timings, travel_mm=travel_mm, homing_enabled=homing_enabled)
    if dialect == "sangaboard":
        steps_per_s = timings.xy_speed_mm_s * 1000.0 * steps_per_um[0]
        return SangaboardEmulator(
            firmware=sangaboard_firmware, min_step_delay_us=max(1, round(1e6 / steps_per_s)),
            endstops=homing_enabled, steps_per_um=steps_per_um, realtime=timings.realtime)
    raise ValueError(f"no emulator for dialect {dialect!r} (known: {', '.join(DIALECTS)})")


def start_emulator(dialect: str = "grbl", *, tcp_port: int | None = None,
                   link_path: str | None = None, reappear_after_s: float | None = None,
                   **board: object) -> tuple[EmulatedBoard, PtyEmulatorServer | TcpEmulatorServer, str]:
    """Make a board (``board`` as for ``make_emulator``), serve it, return (board, server, address).
    The caller stops the server."""
    emulator = make_emulator(dialect, **board)  # type: ignore[arg-type]
    server: PtyEmulatorServer | TcpEmulatorServer
    if tcp_port is None:
        server = PtyEmulatorServer(emulator, link_path=link_path, reappear_after_s=reappear_after_s)
    else:
        server = TcpEmulatorServer(emulator, port=tcp_port)
    return emulator, server, server.start()


def serve(
    dialect: str = "grbl",
    *,
    tcp_port: int | None = None,
    timings: MotionTimings | None = None,
    homing_enabled: bool = False,
    realtime: bool | None = None,
    link_path: str | None = None,
    ready: threading.Event | None = None,
    stop: threading.Event | None = None,
) -> None:
    """Start an emulator, print where to connect, block until Ctrl-C (or ``stop`` is set)."""
    if realtime is not None:
        timings = dataclasses.replace(timings or MotionTimings(), realtime=realtime)
    _, server, address = start_emulator(dialect, tcp_port=tcp_port, link_path=link_path,
                                        reappear_after_s=None if link_path is None else 1.0,
                                        timings=timings, homing_enabled=homing_enabled)
    stop = stop or threading.Event()
    try:
        print(f"{dialect} emulator on {address} (Ctrl-C to stop)", flush=True)
        if ready is not None:
            ready.set()
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Emulated stage controller (GRBL 1.1 or Sangaboard).")
    parser.add_argument("--dialect", choices=DIALECTS, default="grbl")
    parser.add_argument("--tcp-port", type=int, default=None, help="serve on TCP instead of a pty")
    parser.add_argument("--link", default=None, metavar="PATH",
                        help="also serve under this stable symlink (re-pointed after a replug)")
    parser.add_argument("--homing", action="store_true",
                        help="GRBL: enable homing ($22=1), boots locked; Sangaboard: min endstops")
    parser.add_argument("--zero-delay", action="store_true", help="moves complete instantly")
    args = parser.parse_args(argv)
    serve(args.dialect, tcp_port=args.tcp_port, homing_enabled=args.homing,
          realtime=not args.zero_delay, link_path=args.link)

"""Run an emulated controller on a pty (or TCP) until interrupted: ``python -m firmware_interface.emulator``."""

from __future__ import annotations

import argparse
import threading

from firmware_interface.emulator.grbl import GrblEmulator
from firmware_interface.emulator.motion import MotionTimings
from firmware_interface.emulator.pty_server import PtyEmulatorServer
from firmware_interface.emulator.tcp_server import TcpEmulatorServer


def serve(
    dialect: str = "grbl",
    *,
    tcp_port: int | None = None,
    timings: MotionTimings | None = None,
    homing_enabled: bool = False,
    ready: threading.Event | None = None,
    stop: threading.Event | None = None,
) -> None:
    """Start an emulator, print where to connect, block until Ctrl-C (or ``stop`` is set)."""
    if dialect != "grbl":
        raise ValueError(f"no emulator for dialect {dialect!r} (only 'grbl')")
    emulator = GrblEmulator(timings, homing_enabled=homing_enabled)
    server: PtyEmulatorServer | TcpEmulatorServer
    if tcp_port is None:
        server = PtyEmulatorServer(emulator)
    else:
        server = TcpEmulatorServer(emulator, port=tcp_port)
    stop = stop or threading.Event()
    address = server.start()
    try:
        print(address, flush=True)
        if ready is not None:
            ready.set()
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Emulated GRBL 1.1 stage controller.")
    parser.add_argument("--tcp-port", type=int, default=None, help="serve on TCP instead of a pty")
    parser.add_argument("--homing", action="store_true", help="enable homing ($22=1): boots locked")
    parser.add_argument("--zero-delay", action="store_true", help="moves complete instantly")
    args = parser.parse_args(argv)
    serve("grbl", tcp_port=args.tcp_port, homing_enabled=args.homing,
          timings=MotionTimings(realtime=not args.zero_delay))

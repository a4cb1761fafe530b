"""GRBL 1.1 and Sangaboard firmware emulators served on a pseudo-terminal or TCP, for tests and bench work."""

from firmware_interface.emulator.faults import Faults
from firmware_interface.emulator.grbl import GrblEmulator
from firmware_interface.emulator.motion import MotionTimings
from firmware_interface.emulator.pty_server import PtyEmulatorServer
from firmware_interface.emulator.sangaboard import SangaboardEmulator
from firmware_interface.emulator.serve import make_emulator, serve, start_emulator
from firmware_interface.emulator.tcp_server import TcpEmulatorServer

__all__ = [
    "Faults", "GrblEmulator", "MotionTimings", "PtyEmulatorServer", "SangaboardEmulator",
    "TcpEmulatorServer", "make_emulator", "serve", "start_emulator",
]

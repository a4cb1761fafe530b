"""What a server needs from an emulated controller, whatever its dialect."""

from __future__ import annotations

from typing import Protocol

from firmware_interface.emulator.faults import Faults


class EmulatedBoard(Protocol):
    faults: Faults

    def feed(self, data: bytes) -> None:
        """Bytes from the host."""

    def poll(self) -> bytes:
        """Output that is due now."""

    def physical_position_um(self) -> tuple[float, float, float]:
        """Where the machine physically is (for the virtual camera and for tests)."""

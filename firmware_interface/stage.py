"""The stage port: the one interface the agent uses to move the slide.

Coordinates are micrometres in the stage's frame. A driver converts them to what its firmware speaks
(mm for GRBL, steps for a Sangaboard).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass


@dataclass(frozen=True)
class Position:
    x_um: float
    y_um: float
    z_um: float


@dataclass(frozen=True)
class FirmwareInfo:
    dialect: str
    """'grbl' or 'sangaboard'."""
    version: str
    detail: str = ""


class Stage(abc.ABC):
    """A motorised XYZ stage. Constructing it touches nothing; ``connect`` opens the port."""

    @abc.abstractmethod
    def connect(self) -> FirmwareInfo:
        """Open the port exclusively and identify the firmware. Raises StageBusyError if held."""

    @abc.abstractmethod
    def close(self) -> None:
        """Close the port. Safe to call twice."""

    @abc.abstractmethod
    def move_to(
        self,
        x_um: float | None = None,
        y_um: float | None = None,
        z_um: float | None = None,
        *,
        wait: bool = True,
        timeout_s: float = 30.0,
    ) -> None:
        """Absolute move of the given axes; with ``wait`` return once the stage is idle again."""

    @abc.abstractmethod
    def wait_idle(self, timeout_s: float = 30.0) -> Position:
        """Block until motion has finished; return the position then."""

    @abc.abstractmethod
    def position(self) -> Position:
        """Current position as reported by the controller."""

    @abc.abstractmethod
    def stop(self) -> None:
        """Halt motion now."""

    @abc.abstractmethod
    def home(self, timeout_s: float = 120.0) -> Position:
        """Run the homing cycle and trust the position again; UnsupportedOperationError without one."""

    @property
    def needs_homing(self) -> bool:
        """True when the controller refuses motion until it has been homed (GRBL boot alarm)."""
        return False

    def __enter__(self) -> "Stage":
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

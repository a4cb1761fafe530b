"""Exceptions of the stage layer. Each also inherits a built-in so callers can catch broadly."""


class StageError(Exception):
    """Base of all stage-layer errors."""


class StageBusyError(StageError, OSError):
    """The serial port is held by another process."""


class StageConnectionError(StageError, OSError):
    """The port cannot be opened or vanished."""


class StageTimeoutError(StageError, TimeoutError):
    """A reply or the end of a motion did not come in time."""


class StageProtocolError(StageError, ValueError):
    """The controller said something that cannot be parsed."""


class FirmwareError(StageError, RuntimeError):
    """The controller rejected a command (GRBL ``error:N``)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"error:{code} {message}")
        self.code = code


class StageAlarm(StageError, RuntimeError):
    """The controller is in alarm (GRBL ``ALARM:N``): motion stopped.

    ``position_lost``: the controller cannot vouch for its coordinates any more (rehome);
    ``reset_required``: it hears nothing but a soft reset until one is sent.
    """

    def __init__(self, code: int, message: str, *, position_lost: bool = False,
                 reset_required: bool = False) -> None:
        super().__init__(f"ALARM:{code} {message}")
        self.code = code
        self.position_lost = position_lost
        self.reset_required = reset_required


class SoftLimitError(StageError, ValueError):
    """A requested target lies outside the configured travel; nothing was sent."""


class PositionLostError(StageError, RuntimeError):
    """The controller reset or was reconnected: its coordinates can no longer be trusted."""


class UnsupportedOperationError(StageError, RuntimeError):
    """The controller cannot do this at all (e.g. ``home()`` on a Sangaboard without endstops, or
    ``stop`` on firmware that predates it). The message says why; nothing was sent that moves."""

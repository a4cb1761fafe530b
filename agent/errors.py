"""The agent's exception tree.

Every error a user can cause or the environment can raise derives from ``WbcscopeError`` *and* a
built-in, so callers may catch either. The CLI turns any ``WbcscopeError`` into a one-line message and
a non-zero exit; anything else is a bug and keeps its traceback.
"""


class WbcscopeError(Exception):
    """Base of every error the agent reports to a user."""


class ConfigError(WbcscopeError, ValueError):
    """The configuration (file or flags) is invalid."""


class DeviceBusyError(WbcscopeError, OSError):
    """Another process holds the device (serial port, camera)."""


class OutputError(WbcscopeError, OSError):
    """The output directory cannot be written (permissions, full disk, ...)."""


class InputError(WbcscopeError, ValueError):
    """Input data (an image directory, an image file) is unusable."""


class CameraError(WbcscopeError, OSError):
    """The camera failed to deliver a frame."""


class ScanAborted(WbcscopeError, RuntimeError):
    """The scan stopped before its plan was complete (signal, hardware fault)."""

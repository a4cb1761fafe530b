"""Sangaboard (OpenFlexure motor controller) line protocol: classify received lines, format commands.

Pure functions and frozen dataclasses; no I/O. The firmware speaks plain words, one command per
LF-terminated line, answers with CRLF lines, and has changed its wording between releases
(``ramp time N`` in v0.5, ``ramp_time N`` in v1; ``done`` / ``done.``; ``Invalid command`` or a
hint to type ``help`` for an unknown command), so the parser normalises those variants.

``parse_reply`` returns one reply type for any printable line and raises StageProtocolError (its one
error) for bytes no firmware sends: control characters, non-ASCII, over-long lines, or step counts
outside a 32-bit ``long``. A corrupted line can therefore never complete a command.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from firmware_interface.errors import StageProtocolError

BAUDRATE = 115200
MAX_LINE_CHARS = 200
"""Longer lines than any reply the firmware prints (help text lines are < 100)."""
LONG_MIN, LONG_MAX = -(2**31), 2**31 - 1
"""Step counters are a signed 32-bit ``long`` on the AVR boards."""


@dataclass(frozen=True)
class StepPosition:
    """Reply to ``p?``: the step counters of the three motors."""

    x: int
    y: int
    z: int


@dataclass(frozen=True)
class Done:
    """``done`` / ``done.``: a move or setting was accepted (non-blocking) or finished (blocking)."""


@dataclass(frozen=True)
class Stopped:
    """Pushed when a move ends after ``notify_on_stop`` (or a blocking move in some v1 builds)."""


@dataclass(frozen=True)
class NotMoving:
    """``Error: stage is not moving``: the answer to ``notify_on_stop`` when nothing moves."""


@dataclass(frozen=True)
class MovingState:
    """Reply to ``moving?``."""

    moving: bool


@dataclass(frozen=True)
class VersionLine:
    """``Sangaboard Firmware v1.0.4`` and the like; also printed at boot, so unsolicited = reset."""

    text: str
    name: str
    version: str
    suffix: str = ""

    @property
    def numbers(self) -> tuple[int, ...]:
        return tuple(int(p) for p in self.version.split("."))

    @property
    def is_sangaboard(self) -> bool:
        return "sangaboard" in self.name.lower()


@dataclass(frozen=True)
class Aborted:
    """Reply to ``stop`` (``Move aborted``)."""


@dataclass(frozen=True)
class Zeroed:
    """Reply to ``zero`` (``position reset to 0 0 0``)."""


@dataclass(frozen=True)
class KeyValue:
    """``<words> <value>``, e.g. ``minimum step delay 1000``; key normalised to ``minimum_step_delay``."""

    key: str
    value: str

    def as_int(self) -> int:
        try:
            return int(self.value)
        except ValueError as exc:
            raise StageProtocolError(f"{self.key} is not an integer: {self.value!r}") from exc


@dataclass(frozen=True)
class InvalidCommand:
    """The firmware does not know the command (it differs between versions and build options)."""

    text: str


@dataclass(frozen=True)
class ErrorLine:
    """Any other ``Error: ...`` line."""

    text: str


@dataclass(frozen=True)
class EndMarker:
    """``--END--``: closes a multi-line listing (``list_modules``, ``help``)."""


@dataclass(frozen=True)
class Text:
    """Any other printable line (a module listing entry, a message the driver does not need)."""

    text: str


Reply = (
    StepPosition | Done | Stopped | NotMoving | MovingState | VersionLine | Aborted | Zeroed
    | KeyValue | InvalidCommand | ErrorLine | EndMarker | Text
)

_PRINTABLE = re.compile(r"[\x20-\x7e]*")
_POSITION = re.compile(r"(-?\d{1,11}) (-?\d{1,11}) (-?\d{1,11})")
_VERSION = re.compile(r"(?P<name>[A-Za-z][A-Za-z0-9 _-]*?) v(?P<version>\d{1,4}(?:\.\d{1,4}){1,3})"
                      r"(?P<suffix>[-+.A-Za-z0-9]*)")
_KEY_VALUE = re.compile(r"([A-Za-z][A-Za-z_ ]*?)[ :]+(-?\d+|true|false)")
_INVALID = ("type 'help' for a list of commands", "invalid command", "unknown command",
            "unrecognised command", "unrecognized command")
_NOT_MOVING = "error: stage is not moving"


def parse_reply(line: bytes | str) -> Reply:
    """Classify one received line (CR/LF terminator optional). Raises StageProtocolError only."""
    if isinstance(line, bytes):
        try:
            line = line.decode("ascii")
        except UnicodeDecodeError as exc:
            raise StageProtocolError(f"non-ASCII bytes in reply {line!r}") from exc
    text = line.rstrip("\r\n")
    if len(text) > MAX_LINE_CHARS:
        raise StageProtocolError(f"reply longer than {MAX_LINE_CHARS} characters")
    if not _PRINTABLE.fullmatch(text):
        raise StageProtocolError(f"control characters in reply {text!r}")
    text = text.strip()
    lower = text.lower()
    simple = _simple(lower)
    if simple is not None:
        return simple
    if lower.startswith(_INVALID):
        return InvalidCommand(text)
    match = _POSITION.fullmatch(text)
    if match:
        return _position(match)
    match = _VERSION.fullmatch(text)
    if match:
        return VersionLine(text, match["name"].strip(), match["version"], match["suffix"])
    if lower == _NOT_MOVING:
        return NotMoving()
    if lower.startswith("error"):
        return ErrorLine(text)
    match = _KEY_VALUE.fullmatch(text)
    if match:
        key = re.sub(r"[ _]+", "_", match[1].strip().lower())
        return KeyValue(key, match[2])
    return Text(text)


def _simple(lower: str) -> Reply | None:
    if lower in ("done", "done."):
        return Done()
    if lower == "stopped":
        return Stopped()
    if lower in ("true", "false"):
        return MovingState(lower == "true")
    if lower.startswith("move aborted"):
        return Aborted()
    if lower.startswith("position reset to 0"):
        return Zeroed()
    if lower == "--end--":
        return EndMarker()
    return None


def _position(match: re.Match[str]) -> StepPosition:
    values = [int(v) for v in match.groups()]
    if not all(LONG_MIN <= v <= LONG_MAX for v in values):
        raise StageProtocolError(f"step count outside a 32-bit long: {match.group(0)!r}")
    return StepPosition(*values)


# --------------------------------------------------------------------------- formatting


def format_move(dx_steps: int, dy_steps: int, dz_steps: int) -> str:
    """Relative move of all three motors: ``mr dx dy dz`` (integer steps)."""
    values = (dx_steps, dy_steps, dz_steps)
    if not all(isinstance(v, int) and LONG_MIN <= v <= LONG_MAX for v in values):
        raise ValueError(f"step counts must be 32-bit integers: {values!r}")
    return "mr {} {} {}".format(*values)


def check_command(line: str) -> str:
    """A command must stay one line of printable ASCII or the firmware would split or mangle it."""
    if not line or not line.isascii() or not _PRINTABLE.fullmatch(line):
        raise ValueError(f"not a single printable command line: {line!r}")
    return line


def endstops_from_modules(lines: list[str]) -> tuple[str, ...]:
    """The endstop kinds (``min``, ``max``, ``soft``) that ``list_modules`` reports, if any."""
    for line in lines:
        kind, sep, rest = line.partition(":")
        if sep and kind.strip().lower() == "endstops":
            return tuple(rest.split())
    return ()

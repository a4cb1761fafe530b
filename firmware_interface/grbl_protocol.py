"""GRBL 1.1 line protocol: classify received lines, parse status reports, format commands.

Pure functions and frozen dataclasses only; no I/O. Every received line maps to exactly one reply
type. Anything that does not match the documented grammar becomes ``Unparseable`` rather than being
guessed at, so a corrupted ``ok`` can never complete a command.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace

from firmware_interface.errors import StageProtocolError
from firmware_interface.grbl_codes import (  # noqa: F401  re-exported for callers
    ALARM_MESSAGES,
    CRITICAL_ALARMS,
    ERROR_MESSAGES,
    POSITION_LOSING_ALARMS,
    alarm_message,
    error_message,
)

# Real-time commands: single bytes picked off the RX stream by the controller, never line-buffered.
RT_STATUS = b"?"
RT_FEED_HOLD = b"!"
RT_CYCLE_START = b"~"
RT_SOFT_RESET = b"\x18"
RT_JOG_CANCEL = b"\x85"
REALTIME_BYTES = frozenset(RT_STATUS + RT_FEED_HOLD + RT_CYCLE_START + RT_SOFT_RESET) | frozenset(
    range(0x80, 0x100)
)

RX_BUFFER_BYTES = 128
PLANNER_BLOCKS = 15
LINE_BUFFER_BYTES = 80

STATES = ("Idle", "Run", "Hold", "Jog", "Alarm", "Door", "Check", "Home", "Sleep")


# --------------------------------------------------------------------------- reply types


@dataclass(frozen=True)
class Ok:
    pass


@dataclass(frozen=True)
class ErrorReply:
    code: int

    @property
    def message(self) -> str:
        return error_message(self.code)


@dataclass(frozen=True)
class AlarmReply:
    code: int

    @property
    def message(self) -> str:
        return alarm_message(self.code)


@dataclass(frozen=True)
class Banner:
    version: str
    """e.g. '1.1h'"""


@dataclass(frozen=True)
class Feedback:
    """A ``[TAG:text]`` line: MSG, GC, HLP, VER, OPT, echo, G54..., PRB and so on."""

    tag: str
    text: str


@dataclass(frozen=True)
class VersionInfo:
    version: str
    build_date: str
    user_string: str


@dataclass(frozen=True)
class BuildOptions:
    codes: str
    planner_blocks: int | None
    rx_buffer_bytes: int | None


@dataclass(frozen=True)
class SettingLine:
    number: int
    value: str

    def as_float(self) -> float:
        try:
            return float(self.value)
        except ValueError as exc:
            raise StageProtocolError(f"setting ${self.number} is not numeric: {self.value!r}") from exc


@dataclass(frozen=True)
class StartupLine:
    """``$Nx=line`` listing or ``>line:ok`` execution echo."""

    text: str


@dataclass(frozen=True)
class StatusReport:
    state: str
    substate: int | None = None
    mpos: tuple[float, ...] | None = None
    wpos: tuple[float, ...] | None = None
    wco: tuple[float, ...] | None = None
    planner_free: int | None = None
    rx_free: int | None = None
    feed: float | None = None
    spindle: float | None = None
    pins: str = ""
    overrides: tuple[int, int, int] | None = None
    line_number: int | None = None
    accessories: str = ""


@dataclass(frozen=True)
class Unparseable:
    raw: str
    reason: str


Reply = (
    Ok | ErrorReply | AlarmReply | Banner | Feedback | VersionInfo | BuildOptions | SettingLine
    | StartupLine | StatusReport | Unparseable
)

# --------------------------------------------------------------------------- parsing

_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)"
_INT_CODE = re.compile(r"(\d{1,3})")
_BANNER = re.compile(r"Grbl (\d+\.\d+[a-z]?) \['\$' for help\]")
_SETTING = re.compile(r"\$(\d{1,3})=(" + _NUMBER + r")")
_STARTUP_LIST = re.compile(r"\$N(\d)=(.*)")
_FEEDBACK = re.compile(r"\[([A-Za-z0-9.]+):(.*)\]")
_VER = re.compile(r"(?:v)?(\d+\.\d+[a-z]?)\.(\d{8}):(.*)")
_PRINTABLE = re.compile(r"[\x20-\x7e]*")


def parse_line(line: str | bytes) -> Reply:
    """Classify one received line (terminator optional). Never raises."""
    if isinstance(line, bytes):
        line = line.decode("ascii", errors="replace")
    text = line.rstrip("\r\n")
    if not _PRINTABLE.fullmatch(text):
        return Unparseable(text, "non-printable characters")
    if text == "ok":
        return Ok()
    for prefix, kind in (("error:", ErrorReply), ("ALARM:", AlarmReply)):
        if text.startswith(prefix):
            match = _INT_CODE.fullmatch(text[len(prefix):])
            if match is None:
                return Unparseable(text, f"bad {prefix[:-1]} code")
            return kind(int(match.group(1)))
    if text.startswith("<"):
        try:
            return parse_status(text)
        except StageProtocolError as exc:
            return Unparseable(text, str(exc))
    if text.startswith("["):
        return _parse_feedback(text)
    if text.startswith("$"):
        return _parse_dollar(text)
    if text.startswith(">") and text.endswith(":ok"):
        return StartupLine(text[1:-3])
    match = _BANNER.fullmatch(text)
    if match:
        return Banner(match.group(1))
    return Unparseable(text, "unknown line")


def _parse_feedback(text: str) -> Reply:
    match = _FEEDBACK.fullmatch(text)
    if match is None:
        return Unparseable(text, "malformed [feedback]")
    tag, body = match.groups()
    if tag == "VER":
        ver = _VER.fullmatch(body)
        if ver is None:
            return Unparseable(text, "malformed [VER:]")
        return VersionInfo(*ver.groups())
    if tag == "OPT":
        return _parse_options(text, body)
    return Feedback(tag, body)


def _parse_options(text: str, body: str) -> Reply:
    parts = body.split(",")
    blocks = rx = None
    if len(parts) >= 3:
        try:
            blocks, rx = int(parts[1]), int(parts[2])
        except ValueError:
            return Unparseable(text, "malformed [OPT:]")
    elif len(parts) != 1:
        return Unparseable(text, "malformed [OPT:]")
    return BuildOptions(parts[0], blocks, rx)


def _parse_dollar(text: str) -> Reply:
    match = _SETTING.fullmatch(text)
    if match:
        return SettingLine(int(match.group(1)), match.group(2))
    match = _STARTUP_LIST.fullmatch(text)
    if match:
        return StartupLine(match.group(2))
    return Unparseable(text, "malformed $ line")


def _floats(field: str, values: str, count: int | None = None) -> tuple[float, ...]:
    try:
        out = tuple(float(v) for v in values.split(","))
    except ValueError as exc:
        raise StageProtocolError(f"non-numeric {field} value {values!r}") from exc
    if count is not None and len(out) != count:
        raise StageProtocolError(f"{field} needs {count} values, got {values!r}")
    if not all(math.isfinite(v) for v in out):
        raise StageProtocolError(f"non-finite {field} value {values!r}")
    return out


def _axes(field: str, values: str) -> tuple[float, ...]:
    out = _floats(field, values)
    if not 3 <= len(out) <= 6:
        raise StageProtocolError(f"{field} needs 3 to 6 axes, got {values!r}")
    return out


def _parse_state(word: str) -> tuple[str, int | None]:
    name, _, sub = word.partition(":")
    if name not in STATES:
        raise StageProtocolError(f"unknown machine state {word!r}")
    if not sub:
        return name, None
    if name not in ("Hold", "Door") or not sub.isdigit() or len(sub) > 2:
        raise StageProtocolError(f"bad sub-state {word!r}")
    return name, int(sub)


def parse_status(text: str) -> StatusReport:
    """Parse ``<State|MPos:...|...>``. Raises StageProtocolError when malformed."""
    text = text.rstrip("\r\n")
    if len(text) < 3 or text[0] != "<" or text[-1] != ">":
        raise StageProtocolError(f"status report not enclosed in <>: {text!r}")
    fields = text[1:-1].split("|")
    state, substate = _parse_state(fields[0])
    values: dict[str, object] = {"state": state, "substate": substate}
    for field in fields[1:]:
        name, sep, body = field.partition(":")
        if not sep or not body:
            raise StageProtocolError(f"status field without value: {field!r}")
        if name in values or (name == "F" and "feed" in values):
            raise StageProtocolError(f"repeated status field {name!r}")
        _parse_field(name, body, values)
    if "mpos" not in values and "wpos" not in values:
        raise StageProtocolError(f"status report without position: {text!r}")
    return StatusReport(**values)  # type: ignore[arg-type]


def _parse_field(name: str, body: str, values: dict[str, object]) -> None:
    if name in ("MPos", "WPos", "WCO"):
        values[name.lower()] = _axes(name, body)
    elif name in ("Bf", "Buf"):
        blocks, rx = _floats(name, body, 2)
        values["planner_free"], values["rx_free"] = int(blocks), int(rx)
    elif name == "FS":
        values["feed"], values["spindle"] = _floats(name, body, 2)
    elif name == "F":
        values["feed"] = _floats(name, body, 1)[0]
    elif name == "Ov":
        ov = _floats(name, body, 3)
        values["overrides"] = (int(ov[0]), int(ov[1]), int(ov[2]))
    elif name == "Ln":
        if not body.isdigit():
            raise StageProtocolError(f"bad line number {body!r}")
        values["line_number"] = int(body)
    elif name == "Pn":
        if not set(body) <= set("XYZABCPDHRS"):
            raise StageProtocolError(f"bad pin letters {body!r}")
        values["pins"] = body
    elif name == "A":
        if not set(body) <= set("SCFMT"):
            raise StageProtocolError(f"bad accessory letters {body!r}")
        values["accessories"] = body
    else:
        raise StageProtocolError(f"unknown status field {name!r}")


class WcoTracker:
    """Completes status reports: GRBL sends WCO only every 10-30 reports, so remember the last one.

    Not thread-safe; the owner (the link's reader thread) is its only user.
    """

    def __init__(self) -> None:
        self.wco: tuple[float, ...] | None = None

    def reset(self) -> None:
        """After a controller reset the next report carries WCO again; forget the stale one."""
        self.wco = None

    def complete(self, report: StatusReport) -> StatusReport:
        if report.wco is not None:
            self.wco = report.wco
        if self.wco is None:
            return report
        if report.mpos is not None and report.wpos is None:
            wpos = tuple(m - o for m, o in zip(report.mpos, self.wco))
            return replace(report, wpos=wpos, wco=self.wco)
        if report.wpos is not None and report.mpos is None:
            mpos = tuple(w + o for w, o in zip(report.wpos, self.wco))
            return replace(report, mpos=mpos, wco=self.wco)
        return replace(report, wco=self.wco)


# --------------------------------------------------------------------------- formatting


def format_mm(value_mm: float, decimals: int = 4) -> str:
    text = f"{value_mm:.{decimals}f}"
    # "-0.0000" is valid G-code but noisy in logs and transcripts.
    return text[1:] if text.startswith("-") and float(text) == 0 else text


def format_move(
    x_mm: float | None,
    y_mm: float | None,
    z_mm: float | None,
    *,
    feed_mm_min: float | None,
) -> str:
    """Absolute move: ``G90 G1 X.. Y.. Z.. F..``, or ``G90 G0 ...`` (rapid) when feed is None."""
    words = ["G90", "G0" if feed_mm_min is None else "G1"]
    words += _axis_words(x_mm, y_mm, z_mm)
    if feed_mm_min is not None:
        words.append(f"F{format_mm(feed_mm_min, 1)}")
    return " ".join(words)


def format_jog(
    dx_mm: float | None, dy_mm: float | None, dz_mm: float | None, *, feed_mm_min: float
) -> str:
    """Relative jog in mm: ``$J=G91 G21 X.. F..``. Jog feed is mandatory and not modal."""
    words = _axis_words(dx_mm, dy_mm, dz_mm)
    return "$J=G91 G21 " + " ".join(words) + f" F{format_mm(feed_mm_min, 1)}"


def _axis_words(x_mm: float | None, y_mm: float | None, z_mm: float | None) -> list[str]:
    words = [
        f"{axis}{format_mm(value)}"
        for axis, value in (("X", x_mm), ("Y", y_mm), ("Z", z_mm))
        if value is not None
    ]
    if not words:
        raise ValueError("a move needs at least one axis")
    return words


def format_status(report: StatusReport, decimals: int = 3) -> str:
    """Render a report as the controller would (used by the emulator and by tests)."""
    state = report.state if report.substate is None else f"{report.state}:{report.substate}"
    fields = [state]

    def coords(values: tuple[float, ...]) -> str:
        return ",".join(format_mm(v, decimals) for v in values)

    if report.mpos is not None:
        fields.append("MPos:" + coords(report.mpos))
    elif report.wpos is not None:
        fields.append("WPos:" + coords(report.wpos))
    if report.planner_free is not None:
        fields.append(f"Bf:{report.planner_free},{report.rx_free}")
    if report.line_number is not None:
        fields.append(f"Ln:{report.line_number}")
    if report.feed is not None:
        fields.append(f"FS:{report.feed:.0f},{report.spindle or 0:.0f}")
    if report.pins:
        fields.append("Pn:" + report.pins)
    if report.wco is not None:
        fields.append("WCO:" + coords(report.wco))
    if report.overrides is not None:
        fields.append("Ov:" + ",".join(str(v) for v in report.overrides))
        if report.accessories:
            fields.append("A:" + report.accessories)
    return "<" + "|".join(fields) + ">"

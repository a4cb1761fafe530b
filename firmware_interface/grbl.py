"""``GrblStage``: the Stage port implemented for a GRBL 1.1 controller.

Coordinates: the stage frame in micrometres is GRBL's machine frame (MPos) in mm x 1000.
Position trust: an unexpected controller reset (banner mid-session), a position-losing alarm or a
reconnect after the port vanished (reopening reboots the board) marks the position lost; motion and
position calls then raise PositionLostError until ``home()`` succeeds or the caller
``acknowledge_position_lost()``. The agent decides which.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable

from firmware_interface import grbl_protocol as gp
from firmware_interface.errors import (
    FirmwareError,
    PositionLostError,
    SoftLimitError,
    StageAlarm,
    StageError,
    StageProtocolError,
    StageTimeoutError,
)
from firmware_interface.grbl_codes import UNLOCK_MESSAGE, stage_alarm
from firmware_interface.link import GrblLink
from firmware_interface.reconnect import ReconnectingStage
from firmware_interface.stage import FirmwareInfo, Position, Stage

log = logging.getLogger(__name__)

SoftLimitsUm = tuple[tuple[float, float], tuple[float, float], tuple[float, float]]

_AXES = "xyz"
_STOP_TIMEOUT_S = 2.0
_IDENTIFY_ATTEMPT_S = 1.0
_BUSY_STATES = ("Run", "Hold", "Home", "Door", "Check")


class GrblStage(ReconnectingStage, Stage):
    """A GRBL 1.1 stage on a serial port or ``socket://`` URL. Constructing it touches nothing."""

    def __init__(
        self,
        port: str,
        *,
        baudrate: int = 115200,
        reply_timeout_s: float = 5.0,
        soft_limits_um: SoftLimitsUm | None = None,
        z_backlash_um: float = 0.0,
        poll_interval_s: float = 0.02,
        xy_feed_mm_min: float = 300.0,
        z_feed_mm_min: float = 60.0,
        reconnect_attempts: int = 3,
        reconnect_backoff_s: float = 0.5,
    ) -> None:
        if z_backlash_um < 0:
            raise ValueError("z_backlash_um must be >= 0")
        if xy_feed_mm_min <= 0 or z_feed_mm_min <= 0:
            raise ValueError("feed rates must be positive")
        self.port = port
        self.reply_timeout_s = reply_timeout_s
        self.soft_limits_um = soft_limits_um
        self.z_backlash_um = z_backlash_um
        self.poll_interval_s = poll_interval_s
        self.xy_feed_mm_min = xy_feed_mm_min
        self.z_feed_mm_min = z_feed_mm_min
        self._init_reconnect(reconnect_attempts, reconnect_backoff_s)
        self._link = GrblLink(port, baudrate=baudrate, reply_timeout_s=reply_timeout_s)
        self._link.on_banner = self._on_banner
        self._link.on_alarm = self._on_alarm
        self._link.on_message = self._on_message
        self._lost_lock = threading.Lock()
        self._position_lost: str | None = None
        self._connecting = False
        self._commanded_mm: tuple[float, float, float] | None = None
        self._needs_homing = False
        self._planner_blocks = gp.PLANNER_BLOCKS
        self.settings: dict[int, float] = {}
        self.firmware_info: FirmwareInfo | None = None

    # ------------------------------------------------------------------ Stage API
    def move_to(
        self,
        x_um: float | None = None,
        y_um: float | None = None,
        z_um: float | None = None,
        *,
        wait: bool = True,
        timeout_s: float = 30.0,
    ) -> None:
        self._ready()
        target_um = (x_um, y_um, z_um)
        self._check_soft_limits(target_um)
        start = self._current_target_mm()
        end = tuple(s if t is None else t / 1000.0 for s, t in zip(start, target_um))
        try:
            for waypoint in self._waypoints(start, end, z_given=z_um is not None):
                self._send_move(start, waypoint, target_um)
                start = waypoint
        except StageError:
            self._commanded_mm = None  # part of the path may have been planned; ask next time
            raise
        self._commanded_mm = end  # type: ignore[assignment]
        if wait:
            self.wait_idle(timeout_s)

    def wait_idle(self, timeout_s: float = 30.0) -> Position:
        deadline = time.monotonic() + timeout_s
        while True:
            self._ready()
            status = self._status(timeout_s=max(0.05, min(self.reply_timeout_s,
                                                          deadline - time.monotonic())))
            if status.state == "Alarm":
                alarm = self._link.last_alarm
                if alarm is None:
                    raise StageAlarm(0, "controller is in alarm state")
                raise stage_alarm(alarm.code)
            planner_empty = status.planner_free is None or status.planner_free >= self._planner_blocks
            if status.state == "Idle" and planner_empty:
                return _to_position(_mpos(status))
            if time.monotonic() >= deadline:
                raise StageTimeoutError(
                    f"stage {self.port} still {status.state} after {timeout_s:.1f} s")
            time.sleep(self.poll_interval_s)

    def position(self) -> Position:
        self._ready()
        return _to_position(_mpos(self._status()))

    def stop(self) -> None:
        """Halt: jog cancel while jogging, else feed hold, wait for Hold:0, then soft reset.

        Resetting only once the hold is complete keeps GRBL's position valid (no ALARM:3); if the
        hold does not complete in time the reset goes out anyway and the position is marked lost.
        """
        self._ensure_connected()
        if self._link.reset_required:
            self.reset()
            return
        status = self._status()
        if status.state == "Jog":
            self._realtime(gp.RT_JOG_CANCEL)
            self._poll_until(lambda s: s.state != "Jog", _STOP_TIMEOUT_S)
        elif status.state in _BUSY_STATES:
            self._realtime(gp.RT_FEED_HOLD)
            held = self._poll_until(
                lambda s: (s.state, s.substate) == ("Hold", 0) or s.state in ("Idle", "Alarm"),
                _STOP_TIMEOUT_S)
            if not held:
                log.warning("stage %s: feed hold incomplete, resetting in motion", self.port)
            self._guarded("a soft reset", self._link.soft_reset)
        else:
            return
        self._commanded_mm = _mpos(self._status())
        log.info("stage %s stopped at %s um", self.port, _to_position(self._commanded_mm))

    # ------------------------------------------------------------------ GRBL extras
    def home(self, timeout_s: float = 120.0) -> Position:
        """Run the homing cycle ($H); GRBL answers only once it is done. Restores position trust."""
        self._ensure_connected()
        self._command("$H", timeout_s=timeout_s)
        self._needs_homing = False
        with self._lost_lock:
            self._position_lost = None
        status = self._status()
        self._commanded_mm = _mpos(status)
        return _to_position(self._commanded_mm)

    @property
    def needs_homing(self) -> bool:
        """The board is locked in alarm: it booted so (homing enabled, ``[MSG:'$H'|'$X' to
        unlock]``) or an alarm halted it. It moves only after ``home()`` ($H) or ``unlock()``."""
        return self._needs_homing

    def unlock(self) -> None:
        """Clear an alarm lock ($X). Does not restore position trust."""
        self._ensure_connected()
        self._command("$X")
        self._needs_homing = False

    def reset(self) -> None:
        """Soft reset (Ctrl-X): needed after a limit alarm ('Reset to continue')."""
        self._ensure_connected()
        self._guarded("a soft reset", self._link.soft_reset)
        self._commanded_mm = _mpos(self._status())

    def acknowledge_position_lost(self) -> None:
        """Accept the controller's coordinates as they are (the agent chose not to rehome)."""
        with self._lost_lock:
            self._position_lost = None
        self._commanded_mm = None

    @property
    def position_lost(self) -> str | None:
        """Why the position is untrusted, or None."""
        with self._lost_lock:
            return self._position_lost

    def jog(
        self,
        dx_um: float = 0.0,
        dy_um: float = 0.0,
        dz_um: float = 0.0,
        *,
        feed_mm_min: float | None = None,
    ) -> None:
        """Relative jog ($J=); returns at once. Cancel with ``cancel_jog`` or ``stop``."""
        self._ready()
        here = _mpos(self._status())
        deltas = (dx_um, dy_um, dz_um)
        self._check_soft_limits(tuple(h * 1000.0 + d for h, d in zip(here, deltas)))
        if feed_mm_min is None:
            feed_mm_min = self._feed_for(here, tuple(h + d / 1000.0 for h, d in zip(here, deltas)))
        words = [None if d == 0 else d / 1000.0 for d in deltas]
        if all(w is None for w in words):
            return
        self._command(gp.format_jog(*words, feed_mm_min=feed_mm_min))
        self._commanded_mm = None  # a jog may be cancelled anywhere; ask the controller next time

    def cancel_jog(self) -> None:
        self._ensure_connected()
        self._realtime(gp.RT_JOG_CANCEL)
        self._commanded_mm = None

    # ------------------------------------------------------------------ connection
    def _open_and_handshake(self) -> None:
        """Open, identify, read settings. Raw link calls: a failure here is the reconnect's to
        retry, not a vanished port to reconnect from."""
        self._connecting = True
        try:
            self._link.open()
            try:
                info = self._identify()
                self.settings = self._read_settings()
                self._check_travel()
                status = self._link.status()
            except StageError:
                self._link.close()
                raise
        finally:
            self._connecting = False
        # The state is the truth; the unlock message may have come before the port was read.
        self._needs_homing = status.state == "Alarm"
        if self._needs_homing:
            log.warning("stage %s is in alarm: call home() or unlock() before moving", self.port)
        self._commanded_mm = _mpos(status)
        self._vanished = False
        self.firmware_info = info

    def _on_vanished(self) -> None:
        self._commanded_mm = None

    def _status(self, timeout_s: float | None = None) -> gp.StatusReport:
        return self._guarded("a status query", lambda: self._link.status(timeout_s=timeout_s))

    def _command(self, line: str, *, timeout_s: float | None = None) -> list[gp.Reply]:
        return self._guarded(repr(line), lambda: self._link.command(line, timeout_s=timeout_s))

    def _realtime(self, command: bytes) -> None:
        self._guarded(f"real-time {command!r}", lambda: self._link.realtime(command))

    def _ready(self) -> None:
        """Reconnect if the port vanished, then refuse to move on an untrusted position."""
        self._ensure_connected()
        self._check_position()

    # ------------------------------------------------------------------ internals
    def _identify(self) -> FirmwareInfo:
        # A real Arduino reboots when the port opens and ignores input for ~1-2 s; retry $I.
        deadline = time.monotonic() + self.reply_timeout_s
        while True:
            try:
                lines = self._link.command("$I", timeout_s=_IDENTIFY_ATTEMPT_S)
                break
            except (StageTimeoutError, PositionLostError):
                # PositionLostError here is the boot banner interrupting the first $I.
                if time.monotonic() >= deadline:
                    raise
        version = next((r for r in lines if isinstance(r, gp.VersionInfo)), None)
        options = next((r for r in lines if isinstance(r, gp.BuildOptions)), None)
        if version is None:
            raise StageProtocolError(f"{self.port}: no [VER:] in the $I reply; not GRBL 1.1?")
        if not version.version.startswith("1.1"):
            log.warning("stage %s runs GRBL %s; this driver speaks 1.1", self.port, version.version)
        detail = f"build {version.build_date}"
        if options is not None:
            detail += f"; options {options.codes}"
            if options.planner_blocks:
                self._planner_blocks = options.planner_blocks
                detail += f"; {options.planner_blocks} planner blocks; {options.rx_buffer_bytes} B rx"
        return FirmwareInfo(dialect="grbl", version=version.version, detail=detail)

    def _read_settings(self) -> dict[int, float]:
        try:
            lines = self._link.command("$$")
        except FirmwareError as exc:
            if exc.code != 8:
                raise
            log.warning("stage %s busy at connect; settings not read", self.port)
            return {}
        return {r.number: r.as_float() for r in lines if isinstance(r, gp.SettingLine)}

    def _check_travel(self) -> None:
        if self.soft_limits_um is None:
            return
        for i, (low_um, high_um) in enumerate(self.soft_limits_um):
            travel_mm = self.settings.get(130 + i)
            if travel_mm is None:
                continue
            travel_um = travel_mm * 1000.0
            if high_um - low_um > travel_um + 1e-6 or max(abs(low_um), abs(high_um)) > travel_um:
                log.warning(
                    "stage %s: soft limits for %s (%.0f..%.0f um) exceed controller travel $%d=%.3f mm",
                    self.port, _AXES[i], low_um, high_um, 130 + i, travel_mm)

    def _check_soft_limits(self, target_um: tuple[float | None, ...]) -> None:
        for axis, value in zip(_AXES, target_um):
            if value is not None and not math.isfinite(value):
                raise SoftLimitError(f"{axis}={value} um is not a finite target")
        if self.soft_limits_um is None:
            return
        for axis, value, (low, high) in zip(_AXES, target_um, self.soft_limits_um):
            if value is not None and not low <= value <= high:
                raise SoftLimitError(
                    f"{axis}={value:.1f} um outside soft limits [{low:.1f}, {high:.1f}] um; not sent")

    def _current_target_mm(self) -> tuple[float, float, float]:
        if self._commanded_mm is None:
            self._commanded_mm = _mpos(self._status())
        return self._commanded_mm

    def _waypoints(self, start: tuple[float, ...], end: tuple[float, ...], *, z_given: bool
                   ) -> list[tuple[float, ...]]:
        """The move, or overshoot-then-approach so Z always arrives moving upward."""
        backlash_mm = self.z_backlash_um / 1000.0
        if not (z_given and backlash_mm > 0 and end[2] < start[2]):
            return [end]
        over_z = end[2] - backlash_mm
        if self.soft_limits_um is not None:
            over_z = max(over_z, self.soft_limits_um[2][0] / 1000.0)
        if over_z >= end[2]:
            log.debug("z target at the lower soft limit: approached from above")
            return [end]
        return [(end[0], end[1], over_z), end]

    def _send_move(self, start: tuple[float, ...], end: tuple[float, ...],
                   given_um: tuple[float | None, ...]) -> None:
        # Only name the axes that move or were asked for, so an idle axis is never re-commanded.
        words = [e if (g is not None or abs(e - s) > 1e-9) else None
                 for s, e, g in zip(start, end, given_um)]
        if all(w is None for w in words):
            return
        self._command(gp.format_move(*words, feed_mm_min=self._feed_for(start, end)))

    def _feed_for(self, start: tuple[float, ...], end: tuple[float, ...]) -> float:
        """Vector feed such that neither the XY part nor the Z part exceeds its own feed."""
        dxy = math.hypot(end[0] - start[0], end[1] - start[1])
        dz = abs(end[2] - start[2])
        length = math.hypot(dxy, dz)
        limits = [self.xy_feed_mm_min * length / dxy] if dxy > 0 else []
        if dz > 0:
            limits.append(self.z_feed_mm_min * length / dz)
        return min(limits) if limits else self.xy_feed_mm_min

    def _poll_until(self, predicate: Callable[[gp.StatusReport], bool], timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if predicate(self._status()):
                return True
            time.sleep(self.poll_interval_s)
        return False

    def _check_position(self) -> None:
        if self._link.reset_required:
            alarm = self._link.last_alarm
            context = "controller halted on a limit alarm; reset() or stop() first"
            if alarm is None:
                raise StageAlarm(0, context, reset_required=True)
            raise stage_alarm(alarm.code, context)
        with self._lost_lock:
            reason = self._position_lost
        if reason is not None:
            raise PositionLostError(
                f"stage {self.port}: {reason}; home() or acknowledge_position_lost() first")

    def _mark_lost(self, reason: str) -> None:
        with self._lost_lock:
            if self._position_lost is None:
                self._position_lost = reason
        self._commanded_mm = None
        log.error("stage %s position lost: %s", self.port, reason)

    def _on_banner(self, banner: gp.Banner, expected: bool) -> None:
        if not expected and not self._connecting:
            self._mark_lost(f"controller reset unexpectedly (Grbl {banner.version} banner)")

    def _on_message(self, text: str) -> None:
        if text == UNLOCK_MESSAGE:
            # Pushed after the banner when the board boots or resets locked (homing enabled, or
            # an alarm halted it): nothing moves until $H or $X.
            self._needs_homing = True

    def _on_alarm(self, alarm: gp.AlarmReply) -> None:
        log.error("stage %s ALARM:%d %s", self.port, alarm.code, alarm.message)
        if alarm.code in gp.POSITION_LOSING_ALARMS:
            self._mark_lost(f"ALARM:{alarm.code} {alarm.message}")


def _mpos(status: gp.StatusReport) -> tuple[float, float, float]:
    if status.mpos is None:
        raise StageProtocolError(
            "status has WPos but no WCO yet, so machine position is unknown; set $10=1")
    x, y, z = status.mpos[:3]
    return x, y, z


def _to_position(mpos_mm: tuple[float, float, float]) -> Position:
    return Position(x_um=mpos_mm[0] * 1000.0, y_um=mpos_mm[1] * 1000.0, z_um=mpos_mm[2] * 1000.0)

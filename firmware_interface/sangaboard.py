"""``SangaboardStage``: the Stage port for an OpenFlexure Sangaboard (firmware v0.5 and v1.x).

Coordinates: the board counts steps from wherever it was last zeroed; the stage frame in
micrometres is steps / ``steps_per_um`` per axis. The board only moves relatively (``mr dx dy dz``),
so every move reads ``p?`` first and sends the difference; a move the board is still making is
waited for first because a new ``mr`` would replace it rather than queue behind it.

Firmware differences handled: v1 is switched to non-blocking moves (``blocking_moves false``) and
waited on with ``moving?`` plus ``notify_on_stop``; v0.5 knows neither, answers ``mr`` only when the
move is done, and cannot ``stop``. Boards without endstops cannot ``home()``
(UnsupportedOperationError); the scan then works from the position the board reports.

Position trust: a boot line in mid-session (the board reset) or a reconnect after the port vanished
marks the position lost; motion and position calls raise PositionLostError until ``home()``,
``zero()`` or ``acknowledge_position_lost()``.
"""

from __future__ import annotations

import functools
import logging
import math
import threading
import time

from firmware_interface import sangaboard_protocol as sp
from firmware_interface.errors import (
    FirmwareError,
    PositionLostError,
    SoftLimitError,
    StageError,
    StageProtocolError,
    StageTimeoutError,
    UnsupportedOperationError,
)
from firmware_interface.reconnect import ReconnectingStage
from firmware_interface.sangaboard_link import SangaboardLink
from firmware_interface.stage import FirmwareInfo, Position, Stage

log = logging.getLogger(__name__)

SoftLimitsUm = tuple[tuple[float, float], tuple[float, float], tuple[float, float]]
Steps = tuple[int, int, int]

_AXES = "xyz"
_IDENTIFY_ATTEMPT_S = 1.0


class SangaboardStage(ReconnectingStage, Stage):
    """A Sangaboard on a serial port or ``socket://`` URL. Constructing it touches nothing."""

    def __init__(
        self,
        port: str,
        *,
        steps_per_um: tuple[float, float, float] = (1.0, 1.0, 1.0),
        baudrate: int = sp.BAUDRATE,
        reply_timeout_s: float = 5.0,
        soft_limits_um: SoftLimitsUm | None = None,
        z_backlash_um: float = 0.0,
        poll_interval_s: float = 0.25,
        reconnect_attempts: int = 3,
        reconnect_backoff_s: float = 0.5,
    ) -> None:
        if len(steps_per_um) != 3 or not all(math.isfinite(s) and s > 0 for s in steps_per_um):
            raise ValueError(f"steps_per_um needs three positive numbers, got {steps_per_um!r}")
        if z_backlash_um < 0:
            raise ValueError("z_backlash_um must be >= 0")
        self.port = port
        self.steps_per_um = tuple(float(s) for s in steps_per_um)
        self.reply_timeout_s = reply_timeout_s
        self.soft_limits_um = soft_limits_um
        self.z_backlash_um = z_backlash_um
        self.poll_interval_s = poll_interval_s
        self._init_reconnect(reconnect_attempts, reconnect_backoff_s)
        self._link = SangaboardLink(port, baudrate=baudrate, reply_timeout_s=reply_timeout_s)
        self._link.on_banner = self._on_banner
        self._lock = threading.Lock()
        self._position_lost: str | None = None
        self._connecting = False
        self._maybe_moving = False
        self.non_blocking = False
        """True once the firmware accepted ``blocking_moves false`` (v1); False on v0.5."""
        self.endstops: tuple[str, ...] = ()
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
        """Absolute move. On v0.5 firmware the board answers only when done, so it always waits."""
        deadline = time.monotonic() + timeout_s
        self._ready()
        target_um = (x_um, y_um, z_um)
        self._check_soft_limits(target_um)
        if self._maybe_moving:
            self.wait_idle(timeout_s)  # a new 'mr' would replace the running move, not follow it
        here = self._steps()
        end = tuple(h if t is None else round(t * s)
                    for h, t, s in zip(here, target_um, self.steps_per_um))
        legs = self._legs(here, end, z_given=z_um is not None)  # type: ignore[arg-type]
        for i, leg in enumerate(legs):
            delta = tuple(b - a for a, b in zip(here, leg))
            here = leg
            if not any(delta):
                continue
            self._query(sp.format_move(*delta), (sp.Done,),  # type: ignore[arg-type]
                        timeout_s=max(0.05, deadline - time.monotonic()))
            self._maybe_moving = self.non_blocking
            if wait or i < len(legs) - 1:
                self.wait_idle(max(0.05, deadline - time.monotonic()))

    def wait_idle(self, timeout_s: float = 30.0) -> Position:
        """Ask ``moving?``; while moving, arm ``notify_on_stop`` and sleep until its notice (or the
        poll interval, in case the notice is lost or ``stop`` ended the move without one)."""
        deadline = time.monotonic() + timeout_s
        self._ready()
        while self.non_blocking:
            reply = self._query("moving?", (sp.MovingState,))[-1]
            if not reply.moving:  # type: ignore[union-attr]
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise StageTimeoutError(f"stage {self.port} still moving after {timeout_s:.1f} s")
            seq = self._link.stop_seq
            # Guarded too: the port may vanish between the query above and these.
            self._guarded("'notify_on_stop'", lambda: self._link.send("notify_on_stop"))
            wait_s = min(remaining, self.poll_interval_s)
            self._guarded("a wait for the stop notice",
                          functools.partial(self._link.wait_stop_notice, seq, wait_s))
        self._maybe_moving = False
        return self.position()

    def position(self) -> Position:
        self._ready()
        return self._to_position(self._steps())

    def stop(self) -> None:
        """Abort the move in progress (v1 ``stop``). The step counter stays valid: the motors simply
        stop stepping, so the position is kept. v0.5 cannot abort (UnsupportedOperationError)."""
        self._ready(check_lost=False)
        try:
            self._query("stop", (sp.Aborted, sp.Done, sp.Text))
        except UnsupportedOperationError as exc:
            raise UnsupportedOperationError(
                f"stage {self.port}: this firmware cannot abort a move ({exc})") from exc
        self._maybe_moving = False
        log.info("stage %s stopped", self.port)

    # ------------------------------------------------------------------ Sangaboard extras
    def is_moving(self) -> bool:
        self._ready(check_lost=False)
        if not self.non_blocking:
            return False  # v0.5 answers nothing until a move is over
        return self._query("moving?", (sp.MovingState,))[-1].moving  # type: ignore[union-attr]

    def home(self, timeout_s: float = 120.0) -> Position:
        """Home to the min endstops (``home_min``); restores position trust.

        Raises UnsupportedOperationError on a board without endstops: there is nothing to home
        against. Work from the current position, or ``zero()`` where the operator put the stage.
        """
        self._ready(check_lost=False)
        if "min" not in self.endstops:
            raise UnsupportedOperationError(
                f"stage {self.port} has no min endstops (list_modules: "
                f"{' '.join(self.endstops) or 'none'}); cannot home, the scan must work from the "
                "current position")
        self._query("home_min 7", (sp.Done,), timeout_s=timeout_s)
        with self._lock:
            self._position_lost = None
        self._maybe_moving = False
        return self.position()

    def zero(self) -> None:
        """Declare the current position the origin (``zero``). Restores position trust: the
        operator decided where the frame is."""
        self._ready(check_lost=False)
        self._query("zero", (sp.Zeroed, sp.Done))
        with self._lock:
            self._position_lost = None

    def release(self) -> None:
        """De-energise the motor coils (``release``), e.g. to stop them warming the sample."""
        self._ready(check_lost=False)
        self._query("release", (sp.Done, sp.Text))

    def acknowledge_position_lost(self) -> None:
        """Accept the board's step counters as they are (the agent chose not to rehome)."""
        with self._lock:
            self._position_lost = None

    @property
    def position_lost(self) -> str | None:
        with self._lock:
            return self._position_lost

    # ------------------------------------------------------------------ connection
    def _open_and_handshake(self) -> None:
        self._connecting = True
        try:
            self._link.open()
            try:
                self.firmware_info = self._handshake()
            except StageError:
                self._link.close()
                raise
        finally:
            self._connecting = False
        self._vanished = False
        self._maybe_moving = False

    def _handshake(self) -> FirmwareInfo:
        line = self._identify()
        try:
            self._link.query("blocking_moves false", (sp.Done,))
            self.non_blocking = True
        except UnsupportedOperationError:
            self.non_blocking = False
            log.info("stage %s: firmware %s has blocking moves only", self.port, line.text)
        try:
            modules = self._link.query("list_modules", (), multiline=True)
        except UnsupportedOperationError:
            modules = []
        self.endstops = sp.endstops_from_modules(
            [m.text for m in modules if isinstance(m, sp.Text)])
        detail = [line.text, "non-blocking moves" if self.non_blocking else "blocking moves",
                  "endstops: " + (" ".join(self.endstops) or "none")]
        try:
            delay = self._link.query("dt?", (sp.KeyValue,))[-1]
            detail.append(f"step delay {delay.value} us")  # type: ignore[union-attr]
        except UnsupportedOperationError:
            pass
        self._link.query("p?", (sp.StepPosition,))  # the board answers what the driver needs
        return FirmwareInfo(dialect="sangaboard", version=line.version, detail="; ".join(detail))

    def _identify(self) -> sp.VersionLine:
        # An Arduino reboots when the port opens and ignores input for ~1-2 s; retry 'version'.
        deadline = time.monotonic() + self.reply_timeout_s
        while True:
            try:
                reply = self._link.query("version", (sp.VersionLine, sp.Text),
                                         timeout_s=_IDENTIFY_ATTEMPT_S)[-1]
                break
            except StageTimeoutError:
                if time.monotonic() >= deadline:
                    raise
            except (UnsupportedOperationError, FirmwareError) as exc:
                raise StageProtocolError(
                    f"{self.port} does not answer 'version' like a Sangaboard: {exc}") from exc
        if isinstance(reply, sp.Text):
            # A version line in a wording no release used, or another controller (GRBL's banner).
            raise StageProtocolError(
                f"{self.port} does not answer 'version' like a Sangaboard: {reply.text!r}")
        if not reply.is_sangaboard:
            log.warning("stage %s identifies as %r, not a Sangaboard", self.port, reply.text)
        if reply.numbers[:1] not in ((0,), (1,)):
            log.warning("stage %s runs firmware %s; this driver knows v0.5 and v1", self.port,
                        reply.version)
        return reply  # type: ignore[return-value]

    def _on_vanished(self) -> None:
        self._maybe_moving = False

    def _ready(self, *, check_lost: bool = True) -> None:
        self._ensure_connected()
        if not check_lost:
            return
        with self._lock:
            reason = self._position_lost
        if reason is not None:
            raise PositionLostError(
                f"stage {self.port}: {reason}; home(), zero() or acknowledge_position_lost() first")

    def _query(self, line: str, expect: tuple[type, ...], *, timeout_s: float | None = None
               ) -> list[sp.Reply]:
        return self._guarded(repr(line),
                             lambda: self._link.query(line, expect, timeout_s=timeout_s))

    # ------------------------------------------------------------------ internals
    def _steps(self) -> Steps:
        reply = self._query("p?", (sp.StepPosition,))[-1]
        return (reply.x, reply.y, reply.z)  # type: ignore[union-attr]

    def _to_position(self, steps: Steps) -> Position:
        x, y, z = (s / k for s, k in zip(steps, self.steps_per_um))
        return Position(x_um=x, y_um=y, z_um=z)

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

    def _legs(self, start: Steps, end: Steps, *, z_given: bool) -> list[Steps]:
        """The move, or overshoot-then-approach so z always arrives moving upward (backlash)."""
        backlash_steps = round(self.z_backlash_um * self.steps_per_um[2])
        if not (z_given and backlash_steps > 0 and end[2] < start[2]):
            return [end]
        over_z = end[2] - backlash_steps
        if self.soft_limits_um is not None:
            over_z = max(over_z, math.ceil(self.soft_limits_um[2][0] * self.steps_per_um[2]))
        if over_z >= end[2]:
            log.debug("z target at the lower soft limit: approached from above")
            return [end]
        return [(end[0], end[1], over_z), end]

    def _mark_lost(self, reason: str) -> None:
        with self._lock:
            if self._position_lost is None:
                self._position_lost = reason
        log.error("stage %s position lost: %s", self.port, reason)

    def _on_banner(self, line: sp.VersionLine) -> None:
        if not self._connecting:
            self._maybe_moving = False
            self._mark_lost(f"the board restarted (printed {line.text!r})")

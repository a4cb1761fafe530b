"""What the emulated GRBL prints when asked: ``?`` status reports, ``$G`` and ``$#``.

Status reports follow the ``$10`` mask and refresh the intermittent fields as GRBL does.

GRBL 1.1 (interface docs and config.h defaults): ``WCO:`` appears in the first report after a
reset or power-up, in the next report after an offset changed, and otherwise every 10 reports while
idle and every 30 while busy; ``Ov:`` every 10 idle / 20 busy reports, and never in the same report
as ``WCO:`` (it moves to the next one). ``$10`` bit 0 picks MPos (1) or WPos (0), bit 1 adds
``Bf:`` (free planner blocks, free RX bytes).
"""

from __future__ import annotations

from firmware_interface import grbl_protocol as gp

WCO_REFRESH_IDLE = 10
WCO_REFRESH_BUSY = 30
OV_REFRESH_IDLE = 10
OV_REFRESH_BUSY = 20
BUSY_STATES = ("Run", "Hold", "Jog", "Home", "Door")

Vec = tuple[float, float, float]


class ReportRefresh:
    """The two countdowns GRBL keeps for its intermittent status fields."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """After a reset: WCO in the first report, overrides in the second."""
        self._wco = 0
        self._ov = 1

    def offset_changed(self) -> None:
        self._wco = 0

    def take(self, busy: bool) -> tuple[bool, bool]:
        """Whether this report carries (WCO, Ov); advances both countdowns."""
        show_wco = self._wco == 0
        if show_wco:
            self._wco = (WCO_REFRESH_BUSY if busy else WCO_REFRESH_IDLE) - 1
            self._ov = max(self._ov, 1)
        else:
            self._wco -= 1
        show_ov = self._ov == 0
        if show_ov:
            self._ov = (OV_REFRESH_BUSY if busy else OV_REFRESH_IDLE) - 1
        else:
            self._ov -= 1
        return show_wco, show_ov


def status_line(state: str, mpos: Vec, wco: Vec, *, mask: int, refresh: ReportRefresh,
                planner_free: int, rx_free: int, feed_mm_min: float) -> str:
    """The report for ``state`` (e.g. 'Hold:0') with machine position ``mpos`` and offset ``wco``."""
    name, _, sub = state.partition(":")
    show_wco, show_ov = refresh.take(busy=name in BUSY_STATES)
    report = gp.StatusReport(
        state=name,
        substate=int(sub) if sub else None,
        mpos=mpos if mask & 1 else None,
        wpos=None if mask & 1 else tuple(m - o for m, o in zip(mpos, wco)),  # type: ignore[arg-type]
        wco=wco if show_wco else None,
        planner_free=planner_free if mask & 2 else None,
        rx_free=rx_free if mask & 2 else None,
        feed=feed_mm_min,
        spindle=0.0,
        overrides=(100, 100, 100) if show_ov else None,
    )
    return gp.format_status(report)


def parser_state_line(motion_mode: int, inches: bool, incremental: bool,
                      feed_mm_min: float | None) -> str:
    """``[GC:...]``: the modal state (``$G``); the feed in the parser's units."""
    words = [f"G{motion_mode}", "G54", "G17", "G20" if inches else "G21",
             "G91" if incremental else "G90", "G94", "M5", "M9", "T0",
             f"F{(feed_mm_min or 0) / (25.4 if inches else 1):.0f}", "S0"]
    return "[GC:" + " ".join(words) + "]"


def parameter_lines(g92_mm: list[float]) -> list[str]:
    """``$#``: the coordinate systems (all zero here), G92, tool length offset and probe."""
    zero = "0.000,0.000,0.000"
    lines = [f"[{name}:{zero}]" for name in ("G54", "G55", "G56", "G57", "G58", "G59", "G28", "G30")]
    lines.append("[G92:" + ",".join(f"{v:.3f}" for v in g92_mm) + "]")
    lines += ["[TLO:0.000]", f"[PRB:{zero}:0]"]
    return lines

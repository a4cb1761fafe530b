"""The emulator alone, on a hand-driven clock: golden transcripts from the GRBL 1.1 docs and physics."""

from __future__ import annotations

import threading

import pytest
from firmware_interface import grbl_protocol as gp
from firmware_interface.emulator import GrblEmulator, MotionTimings
from firmware_interface.emulator.motion import move_duration_s

BANNER = "Grbl 1.1h ['$' for help]"
UNLOCK_MSG = "[MSG:'$H'|'$X' to unlock]"


class FakeClock:
    """A hand-driven clock, so physics assertions are exact and take no wall time."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


class Board:
    def __init__(self, realtime: bool = True, **kwargs: object) -> None:
        self.clock = FakeClock()
        self.emu = GrblEmulator(MotionTimings(realtime=realtime), clock=self.clock, **kwargs)
        self.boot = self.read()

    def read(self) -> list[str]:
        return self.emu.poll().decode().splitlines()

    def send(self, data: str | bytes) -> list[str]:
        self.emu.feed(data.encode() if isinstance(data, str) else data)
        return self.read()

    def at(self, t: float) -> "Board":
        self.clock.t = t
        return self

    def status(self) -> gp.StatusReport:
        (line,) = self.send("?")
        report = gp.parse_line(line)
        assert isinstance(report, gp.StatusReport), line
        return report


def test_banner_at_power_on() -> None:
    assert Board().boot == [BANNER]


def test_build_info() -> None:
    assert Board().send("$I\n") == ["[VER:1.1h.20190830:]", "[OPT:VZ,15,128]", "ok"]


def test_unsupported_gcode_is_error_20() -> None:
    assert Board().send("G5 X1\n") == ["error:20"]


def test_feed_rate_required_error_22() -> None:
    board = Board()
    assert board.send("G1 X1\n") == ["error:22"]
    assert board.send("$J=X1\n") == ["error:22"]
    assert board.send("G0 X1\n") == ["ok"]  # rapids need no feed


def test_homing_disabled_error_5() -> None:
    assert Board().send("$H\n") == ["error:5"]


def test_other_documented_errors() -> None:
    board = Board()
    assert board.send("X\n") == ["error:2"]
    assert board.send("1\n") == ["error:1"]
    assert board.send("$Q\n") == ["error:3"]
    assert board.send("G0 G1 X1\n") == ["error:21"]
    assert board.send("G0 X1 X2\n") == ["error:25"]
    assert board.send("G1 F-5\n") == ["error:4"]
    assert board.send("$J X1 F10\n") == ["error:16"]
    assert board.send("$J=M3 X1 F10\n") == ["error:16"]
    assert board.send("G0 X" + "1" * 100 + "\n") == ["error:11"]
    assert board.send("\n") == ["ok"]


def test_reset_while_moving_raises_alarm_3_and_locks() -> None:
    board = Board()
    assert board.send("G1 X10 F300\n") == ["ok"]
    board.at(0.5)
    assert board.status().state == "Run"
    assert board.send(b"\x18") == ["ALARM:3", BANNER, UNLOCK_MSG]
    assert board.status().state == "Alarm"
    assert board.send("G0 X0\n") == ["error:9"]
    assert board.send("$X\n") == ["[MSG:Caution: Unlocked]", "ok"]
    assert board.status().state == "Idle"


def test_reset_when_idle_or_held_keeps_position() -> None:
    board = Board()
    board.send("G1 X10 F300\n")
    board.at(0.5).send("!")
    board.at(1.0)
    held = board.status()
    assert (held.state, held.substate) == ("Hold", 0)
    assert board.send(b"\x18") == [BANNER]
    after = board.status()
    assert after.state == "Idle" and after.mpos == held.mpos


def test_homing_enabled_boots_locked_then_homes() -> None:
    board = Board(homing_enabled=True, start_mm=(2.0, 1.0, 0.5))
    assert board.boot == [BANNER, UNLOCK_MSG]
    assert board.status().state == "Alarm"
    assert board.send("G0 X1\n") == ["error:9"]
    assert board.send("$H\n") == []  # ok only once the cycle is done
    assert board.at(0.2).status().state == "Home"
    board.at(5.0)
    assert board.read() == ["ok"]
    report = board.status()
    assert report.state == "Idle" and report.mpos == (0.0, 0.0, 0.0)


def test_soft_limit_alarm_needs_reset() -> None:
    board = Board(homing_enabled=True)
    board.send("$X\n")
    assert board.send("$J=X500 F100\n") == ["error:15"]
    assert board.send("G0 X500\n") == ["ALARM:2", "[MSG:Reset to continue]"]
    assert board.send("?$X\n") == []  # deaf until reset
    assert board.send(b"\x18") == [BANNER, UNLOCK_MSG]


def test_soft_limits_need_homing() -> None:
    assert Board().send("$20=1\n") == ["error:10"]


def test_settings_listing_and_write() -> None:
    board = Board()
    lines = board.send("$$\n")
    assert lines[-1] == "ok"
    settings = {r.number: r.as_float() for r in map(gp.parse_line, lines[:-1])}
    assert settings[10] == 1 and settings[110] == 300.0 and settings[112] == 60.0
    assert (settings[130], settings[131], settings[132]) == (100.0, 75.0, 10.0)
    assert board.send("$110=600\n") == ["ok"]
    assert board.emu.setting(110) == 600.0
    assert board.send("$110=-1\n") == ["error:4"]


def test_status_mask_variants() -> None:
    board = Board()
    assert board.status().mpos is not None
    board.send("$10=0\n")
    report = board.status()
    assert report.mpos is None and report.wpos is not None
    board.send("$10=3\n")
    report = board.status()
    assert report.mpos is not None and (report.planner_free, report.rx_free) == (15, 128)


def test_wco_sent_first_then_intermittently_and_after_change() -> None:
    # GRBL 1.1 docs: WCO in the first report after a reset, in the next report after an offset
    # changed, else every 10 reports while idle and every 30 while busy (config.h defaults).
    board = Board(realtime=False)
    reports = [board.status() for _ in range(31)]
    assert [i for i, r in enumerate(reports) if r.wco is not None] == [0, 10, 20, 30]
    assert reports[1].overrides is not None  # overrides in the second report after reset
    assert not any(r.wco is not None and r.overrides is not None for r in reports)
    board.send("G0 X5\n")
    board.send("G92 X0\n")
    report = board.status()
    assert report.wco == (5.0, 0.0, 0.0)
    assert board.status().wco is None  # then back to the refresh count


def test_wco_refresh_is_slower_while_busy() -> None:
    board = Board()
    board.send("G1 X50 F300\n")
    board.at(0.5)  # the clock stands still mid-move, so every report below is a busy one
    reports = [board.status() for _ in range(61)]
    assert {r.state for r in reports} == {"Run"}
    assert [i for i, r in enumerate(reports) if r.wco is not None] == [0, 30, 60]
    assert not any(r.wco is not None and r.overrides is not None for r in reports)
    assert any(r.overrides is not None for r in reports[1:21])


def test_status_mask_work_position_and_buffer_state() -> None:
    # $10: bit 0 picks MPos (1) or WPos (0); bit 1 adds Bf:<free planner blocks>,<free RX bytes>.
    board = Board(realtime=False)
    board.send("G0 X5 Y2\n")
    board.send("G92 X1 Y0\n")  # work X1 Y0 here: WCO = (4, 2, 0)
    board.send("$10=0\n")
    (line,) = board.send("?")
    assert line.startswith("<Idle|WPos:1.000,0.000,0.000|") and "WCO:4.000,2.000,0.000" in line
    assert "MPos:" not in line and "Bf:" not in line
    board.send("$10=2\n")
    (line,) = board.send("?")
    assert line.startswith("<Idle|WPos:1.000,0.000,0.000|Bf:15,128|")
    board.send("$10=1\n")
    (line,) = board.send("?")
    assert line.startswith("<Idle|MPos:5.000,2.000,0.000|") and "Bf:" not in line


def test_trapezoidal_move_timing_and_interpolation() -> None:
    board = Board()
    board.send("G1 X1 F300\n")
    expected = move_duration_s(1.0, 5.0, 200.0)
    assert expected == pytest.approx(0.225)
    board.at(expected / 2)
    assert board.emu.physical_position_um()[0] == pytest.approx(500.0, abs=1.0)
    assert board.status().state == "Run"
    board.at(expected + 0.01)  # inside the 50 ms settle
    assert board.emu.physical_position_um() == (1000.0, 0.0, 0.0)
    assert board.status().state == "Run"
    board.at(expected + 0.06)
    assert board.status().state == "Idle"


def test_z_uses_its_own_speed() -> None:
    board = Board()
    board.send("G0 Z1\n")
    board.at(0.5)
    assert board.status().state == "Run"  # 1 mm at 1 mm/s takes over a second
    board.at(move_duration_s(1.0, 1.0, 50.0) + 0.02)
    assert board.status().state == "Idle"


def test_feed_hold_decelerates_and_resume_finishes() -> None:
    board = Board()
    board.send("G1 X10 F300\n")
    board.at(0.5).send("!")
    assert board.status().substate == 1
    board.at(0.6)
    stopped = board.emu.physical_position_um()[0]
    assert 2000 < stopped < 3000  # braked from 5 mm/s at 200 mm/s^2: ~62 um past the hold point
    board.send("~")
    board.at(10.0)
    assert board.status().state == "Idle"
    assert board.emu.physical_position_um()[0] == 10000.0


def test_jog_cancel_stops_and_flushes() -> None:
    board = Board()
    assert board.send("$J=G91 X20 F300\n") == ["ok"]
    board.at(0.5)
    assert board.status().state == "Jog"
    assert board.send("G0 X1\n") == ["error:9"]  # g-code locked out while jogging
    board.send(b"\x85")
    board.at(1.0)
    report = board.status()
    assert report.state == "Idle" and 2.0 < report.mpos[0] < 3.0


def test_full_planner_defers_ok() -> None:
    board = Board()
    replies = board.send("".join(f"G0 X{i + 1}\n" for i in range(16)))
    assert replies == ["ok"] * 15
    board.at(move_duration_s(1.0, 5.0, 200.0) + 0.001)
    assert board.read() == ["ok"]


def test_zero_delay_mode_moves_instantly() -> None:
    board = Board(realtime=False)
    board.send("G1 X50 Y20 Z5 F10\n")
    assert board.status().state == "Idle"
    assert board.emu.physical_position_um() == (50000.0, 20000.0, 5000.0)


def test_physical_position_is_thread_safe() -> None:
    emu = GrblEmulator(MotionTimings())
    stop = threading.Event()
    seen: list[tuple[float, float, float]] = []

    def camera() -> None:
        while not stop.is_set():
            seen.append(emu.physical_position_um())

    thread = threading.Thread(target=camera)
    thread.start()
    for i in range(50):
        emu.feed(f"G0 X{i % 3} Y{i % 2}\n?".encode())
        emu.poll()
    stop.set()
    thread.join(timeout=2)
    assert seen and all(0 <= x <= 2000 and 0 <= y <= 1000 for x, y, _ in seen)


def test_fault_hooks() -> None:
    board = Board(realtime=False)
    board.emu.faults.drop_replies()
    assert board.send("G0 X1\n") == []
    board.emu.faults.garble_replies()
    assert board.emu.poll() == b""
    board.emu.feed(b"G0 X2\n")
    assert board.emu.poll() == b"o\xffk\r\n"
    board.emu.faults.delay_replies(0.5)
    assert board.send("$I\n") == []
    assert board.at(0.6).read()[-1] == "ok"
    board.emu.faults.clear()
    board.emu.faults.reset()
    assert board.read() == [BANNER]


def test_power_cycle_boots_without_alarm_and_restarts_machine_position() -> None:
    board = Board()
    board.send("G1 X10 F300\n")
    board.at(0.5)
    board.emu.faults.power_cycle()
    assert board.read() == [BANNER]  # power loss is no reset in motion: no ALARM:3 at boot
    report = board.status()
    assert (report.state, report.mpos, report.wco) == ("Idle", (0.0, 0.0, 0.0), (0.0, 0.0, 0.0))
    assert 2_000.0 < board.emu.physical_position_um()[0] < 3_000.0  # the stage stayed put


def test_power_cycle_with_homing_boots_locked_and_homing_realigns() -> None:
    board = Board(realtime=False, homing_enabled=True)
    board.send("$X\n")
    board.send("G0 X5 Y3 Z1\n")
    board.emu.faults.power_cycle()
    assert board.read() == [BANNER, UNLOCK_MSG]
    assert board.status().state == "Alarm"
    assert board.send("$H\n") == ["ok"]
    assert board.status().mpos == (0.0, 0.0, 0.0)
    assert board.emu.physical_position_um() == (0.0, 0.0, 0.0)
    board.send("G0 X1\n")
    assert board.emu.physical_position_um() == (1_000.0, 0.0, 0.0)


def test_spontaneous_reset_while_moving() -> None:
    board = Board()
    board.send("G0 X5\n")
    board.at(0.3).emu.faults.reset()
    assert board.read() == ["ALARM:3", BANNER, UNLOCK_MSG]

"""GrblStage driving the emulator through a real pseudo-terminal with pyserial, as on the Pi."""

from __future__ import annotations

import os
import time

import pytest

from firmware_interface.emulator import GrblEmulator, MotionTimings, TcpEmulatorServer
from firmware_interface.emulator.pty_server import PtyEmulatorServer
from firmware_interface.errors import (
    FirmwareError,
    PositionLostError,
    SoftLimitError,
    StageAlarm,
    StageBusyError,
    StageConnectionError,
    StageProtocolError,
    StageTimeoutError,
)
from firmware_interface.grbl import GrblStage
from firmware_interface.stage import Position

LIMITS_UM = ((0.0, 100_000.0), (0.0, 75_000.0), (0.0, 10_000.0))


def test_connect_identifies_grbl(stage: GrblStage) -> None:
    info = stage.firmware_info
    assert info is not None
    assert (info.dialect, info.version) == ("grbl", "1.1h")
    assert "20190830" in info.detail
    assert stage.settings[130] == 100.0


def test_move_wait_position_zero_delay(stage: GrblStage, emulator: GrblEmulator) -> None:
    stage.move_to(12_345.0, 6_789.0, 1_500.0)
    assert stage.position() == Position(12_345.0, 6_789.0, 1_500.0)
    stage.move_to(y_um=100.0)
    assert stage.position() == Position(12_345.0, 100.0, 1_500.0)
    assert emulator.physical_position_um() == (12_345.0, 100.0, 1_500.0)


def test_move_sends_documented_gcode(stage: GrblStage, wire) -> None:
    stage.move_to(1_000.0, 2_000.0)
    assert "G90 G1 X1.0000 Y2.0000 F300.0" in wire.lines()


def test_combined_move_respects_both_feeds(stage: GrblStage, wire) -> None:
    stage.move_to(3_000.0, 0.0, 4_000.0)
    # 5 mm vector: XY part 3 mm at <= 300 mm/min allows F500, Z part 4 mm at <= 60 allows F75.
    assert "G90 G1 X3.0000 Y0.0000 Z4.0000 F75.0" in wire.lines()


def test_travel_mismatch_is_logged(server: PtyEmulatorServer, caplog) -> None:
    stage = GrblStage(server.path or "", soft_limits_um=((0.0, 200_000.0), (0.0, 1.0), (0.0, 1.0)))
    with caplog.at_level("WARNING", logger="firmware_interface.grbl"):
        stage.connect()
    stage.close()
    assert any("$130" in r.getMessage() for r in caplog.records)


def test_realtime_move_takes_physical_time(rt_stage: GrblStage) -> None:
    started = time.monotonic()
    rt_stage.move_to(1_000.0, 0.0, 0.0, timeout_s=5.0)
    elapsed = time.monotonic() - started
    assert elapsed >= 0.2  # 1 mm at 5 mm/s plus ramps and settle; no upper bound on a busy CI box
    assert rt_stage.position() == Position(1_000.0, 0.0, 0.0)


def test_wait_false_then_wait_idle(rt_stage: GrblStage, rt_emulator: GrblEmulator) -> None:
    rt_stage.move_to(x_um=500.0, wait=False)
    assert rt_emulator.state() in ("Run", "Idle")
    assert rt_stage.wait_idle(timeout_s=5.0) == Position(500.0, 0.0, 0.0)


def test_wait_timeout(rt_stage: GrblStage) -> None:
    with pytest.raises(StageTimeoutError):
        rt_stage.move_to(x_um=20_000.0, timeout_s=0.1)
    rt_stage.stop()


def test_second_driver_on_same_port_is_busy(stage: GrblStage, server: PtyEmulatorServer) -> None:
    other = GrblStage(server.path or "")
    with pytest.raises(StageBusyError, match="busy") as caught:
        other.connect()
    assert server.path in str(caught.value)
    other.close()
    stage.move_to(x_um=10.0)  # the first holder is unaffected


def test_missing_port_is_connection_error(tmp_path) -> None:
    with pytest.raises(StageConnectionError):
        GrblStage(str(tmp_path / "ttyNOPE")).connect()


def test_soft_limit_refused_before_sending(stage: GrblStage, wire) -> None:
    with pytest.raises(SoftLimitError):
        stage.move_to(x_um=100_001.0)
    with pytest.raises(SoftLimitError):
        stage.move_to(z_um=-1.0)
    with pytest.raises(SoftLimitError):
        stage.move_to(x_um=float("nan"))
    assert wire.sent == b""


def test_z_backlash_approaches_from_below(server: PtyEmulatorServer, wire) -> None:
    stage = GrblStage(server.path or "", soft_limits_um=LIMITS_UM, z_backlash_um=50.0)
    stage.connect()
    try:
        stage.move_to(z_um=5_000.0)
        assert [ln for ln in wire.lines() if ln.startswith("G90")] == ["G90 G1 Z5.0000 F60.0"]
        wire.sent.clear()
        stage.move_to(z_um=4_000.0)
        moves = [ln for ln in wire.lines() if ln.startswith("G90")]
        assert moves == ["G90 G1 Z3.9500 F60.0", "G90 G1 Z4.0000 F60.0"]
        assert stage.position().z_um == 4_000.0
        wire.sent.clear()
        stage.move_to(z_um=20.0)  # overshoot clipped at the lower soft limit
        assert [ln for ln in wire.lines() if ln.startswith("G90")][0] == "G90 G1 Z0.0000 F60.0"
    finally:
        stage.close()


def test_firmware_error_is_typed(stage: GrblStage) -> None:
    with pytest.raises(FirmwareError) as caught:
        stage.home()
    assert caught.value.code == 5


def test_reply_timeout_leaves_port_usable(stage: GrblStage, emulator: GrblEmulator) -> None:
    emulator.faults.drop_replies()
    with pytest.raises(StageTimeoutError):
        stage.move_to(x_um=1_000.0)
    stage.move_to(x_um=2_000.0)
    assert stage.position().x_um == 2_000.0


def test_late_reply_is_not_taken_for_the_next_command(stage: GrblStage,
                                                      emulator: GrblEmulator) -> None:
    emulator.faults.delay_replies(0.7)
    with pytest.raises(StageTimeoutError):
        stage.move_to(x_um=1_000.0)
    emulator.faults.delay_replies(0.0)
    stage.move_to(x_um=3_000.0)
    assert stage.position().x_um == 3_000.0


def test_garbled_ok_is_not_success(stage: GrblStage, emulator: GrblEmulator) -> None:
    assert stage.serial_errors == 0
    emulator.faults.garble_replies()
    with pytest.raises(StageProtocolError, match="garbled"):
        stage.move_to(x_um=1_000.0)
    stage.move_to(x_um=4_000.0)
    assert stage.position().x_um == 4_000.0
    assert stage.serial_errors == 1  # counted for telemetry


def test_garbled_status_is_retried(stage: GrblStage, emulator: GrblEmulator) -> None:
    emulator.faults.garble_status()
    assert stage.position() == Position(0.0, 0.0, 0.0)


def test_unexpected_reset_marks_position_lost(stage: GrblStage, emulator: GrblEmulator) -> None:
    emulator.faults.reset()
    time.sleep(0.1)
    with pytest.raises(PositionLostError):
        stage.move_to(x_um=1_000.0)
    with pytest.raises(PositionLostError):
        stage.position()
    stage.acknowledge_position_lost()
    stage.move_to(x_um=1_000.0)


def test_stop_mid_move_keeps_position(rt_stage: GrblStage, rt_emulator: GrblEmulator) -> None:
    rt_stage.move_to(x_um=50_000.0, wait=False)
    time.sleep(0.3)
    rt_stage.stop()
    assert rt_stage.position_lost is None
    here = rt_stage.position()
    assert 500.0 < here.x_um < 10_000.0
    assert rt_emulator.physical_position_um()[0] == pytest.approx(here.x_um, abs=1.0)
    rt_stage.move_to(x_um=here.x_um + 100.0)


def test_stop_while_jogging(rt_stage: GrblStage, rt_emulator: GrblEmulator) -> None:
    rt_stage.jog(dx_um=20_000.0)
    time.sleep(0.2)
    rt_stage.stop()
    assert rt_emulator.state() == "Idle"
    assert 0.0 < rt_stage.position().x_um < 5_000.0


def test_firmware_soft_limit_alarm(server_homing) -> None:
    stage = GrblStage(server_homing.path or "", reply_timeout_s=1.0)
    stage.connect()
    try:
        with pytest.raises(FirmwareError) as locked:
            stage.move_to(x_um=1_000.0)
        assert locked.value.code == 9
        assert stage.home() == Position(0.0, 0.0, 0.0)
        with pytest.raises(StageAlarm) as caught:
            stage.move_to(x_um=500_000.0)
        assert caught.value.code == 2
        with pytest.raises(StageAlarm):
            stage.position()
        stage.stop()  # resets; GRBL keeps the position after a soft-limit alarm
        stage.unlock()
        stage.move_to(x_um=1_000.0)
        assert stage.position().x_um == 1_000.0
    finally:
        stage.close()


def test_board_booting_locked_needs_homing(server_homing) -> None:
    # Homing enabled: GRBL boots in alarm and pushes [MSG:'$H'|'$X' to unlock] after its banner.
    stage = GrblStage(server_homing.path or "", reply_timeout_s=1.0)
    try:
        stage.connect()
        assert stage.needs_homing
        with pytest.raises(FirmwareError) as locked:
            stage.move_to(x_um=1_000.0)
        assert locked.value.code == 9 and "locked" in str(locked.value)
        stage.home()
        assert not stage.needs_homing
        stage.move_to(x_um=1_000.0)
    finally:
        stage.close()


def test_stage_without_homing_does_not_need_it(stage: GrblStage) -> None:
    assert not stage.needs_homing


def test_reset_while_moving_locks_and_loses_position(rt_stage: GrblStage,
                                                     rt_emulator: GrblEmulator) -> None:
    rt_stage.move_to(x_um=20_000.0, wait=False)
    rt_emulator.faults.reset()  # watchdog/brown-out mid-move: ALARM:3, banner, unlock message
    deadline = time.monotonic() + 10.0
    while not (rt_stage.needs_homing and rt_stage.position_lost) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert rt_stage.needs_homing  # from the pushed message alone: no status was asked
    assert "ALARM:3" in (rt_stage.position_lost or "") or "reset" in (rt_stage.position_lost or "")
    with pytest.raises(PositionLostError):
        rt_stage.move_to(x_um=0.0)


@pytest.fixture
def server_homing():
    server = PtyEmulatorServer(GrblEmulator(MotionTimings(realtime=False), homing_enabled=True))
    server.start()
    yield server
    server.stop()
    server.stop()


def test_disconnect_is_connection_error(stage: GrblStage, emulator: GrblEmulator) -> None:
    emulator.faults.disconnect()
    time.sleep(0.1)
    with pytest.raises(StageConnectionError):
        stage.position()


def test_close_twice_and_server_gone(server: PtyEmulatorServer) -> None:
    stage = GrblStage(server.path or "")
    stage.connect()
    stage.close()
    stage.close()
    path = server.path or ""
    server.stop()
    server.stop()
    assert not os.path.exists(path)


def test_constructor_touches_nothing() -> None:
    stage = GrblStage("/dev/does-not-exist")
    stage.close()


def test_tcp_socket_url() -> None:
    with TcpEmulatorServer(GrblEmulator(MotionTimings(realtime=False))) as server:
        assert server.url is not None and server.url.startswith("socket://127.0.0.1:")
        stage = GrblStage(server.url, reply_timeout_s=1.0)
        assert stage.connect().version == "1.1h"
        stage.move_to(1_000.0, 2_000.0, 3_000.0)
        assert stage.position() == Position(1_000.0, 2_000.0, 3_000.0)
        stage.close()

"""SangaboardStage driving the Sangaboard emulator through a real pty with pyserial."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from firmware_interface.emulator import PtyEmulatorServer, SangaboardEmulator, TcpEmulatorServer
from firmware_interface.errors import (
    PositionLostError,
    SoftLimitError,
    StageBusyError,
    StageConnectionError,
    StageProtocolError,
    StageTimeoutError,
    UnsupportedOperationError,
)
from firmware_interface.sangaboard import SangaboardStage
from firmware_interface.stage import Position

SPU = (2.0, 2.0, 10.0)
LIMITS_UM = ((0.0, 10_000.0), (0.0, 10_000.0), (0.0, 2_000.0))


class Wire:
    """Records every command line the host sends to the emulator."""

    def __init__(self, emulator: SangaboardEmulator) -> None:
        self.sent = bytearray()
        self._feed = emulator.feed
        emulator.feed = self._record  # type: ignore[method-assign]

    def _record(self, data: bytes) -> None:
        self.sent += data
        self._feed(data)

    def lines(self) -> list[str]:
        return [line for line in self.sent.decode().split("\n") if line]

    def moves(self) -> list[str]:
        return [line for line in self.lines() if line.startswith("mr")]


@pytest.fixture
def emulator() -> SangaboardEmulator:
    return SangaboardEmulator(realtime=False, steps_per_um=SPU)


@pytest.fixture
def server(emulator: SangaboardEmulator) -> Iterator[PtyEmulatorServer]:
    with PtyEmulatorServer(emulator) as srv:
        yield srv


@pytest.fixture
def wire(emulator: SangaboardEmulator) -> Wire:
    return Wire(emulator)


def _stage(path: str | None, **kwargs) -> SangaboardStage:
    options = dict(steps_per_um=SPU, soft_limits_um=LIMITS_UM, reply_timeout_s=0.5,
                   poll_interval_s=0.02)
    options.update(kwargs)
    return SangaboardStage(path or "", **options)  # type: ignore[arg-type]


@pytest.fixture
def stage(server: PtyEmulatorServer) -> Iterator[SangaboardStage]:
    driver = _stage(server.path)
    driver.connect()
    try:
        yield driver
    finally:
        driver.close()


def test_connect_reports_version_and_switches_to_non_blocking(stage: SangaboardStage) -> None:
    info = stage.firmware_info
    assert info is not None and (info.dialect, info.version) == ("sangaboard", "1.0.4")
    assert "Sangaboard Firmware v1.0.4" in info.detail and "endstops: none" in info.detail
    assert stage.non_blocking


def test_move_converts_um_to_steps(stage: SangaboardStage, emulator: SangaboardEmulator,
                                   wire: Wire) -> None:
    stage.move_to(100.0, 50.5, 20.0)
    assert wire.moves() == ["mr 200 101 200"]
    assert stage.position() == Position(100.0, 50.5, 20.0)
    assert emulator.reported_steps() == (200, 101, 200)
    stage.move_to(y_um=0.0)
    assert wire.moves()[-1] == "mr 0 -101 0"  # relative, from the position the board reports
    assert emulator.physical_position_um() == (100.0, 0.0, 20.0)


def test_soft_limits_checked_before_sending(stage: SangaboardStage, wire: Wire) -> None:
    for bad in ({"x_um": 10_001.0}, {"z_um": -1.0}, {"y_um": float("inf")}):
        with pytest.raises(SoftLimitError):
            stage.move_to(**bad)
    assert wire.sent == b""


def test_z_backlash_approaches_from_below(server: PtyEmulatorServer, wire: Wire) -> None:
    stage = _stage(server.path, z_backlash_um=5.0)
    stage.connect()
    try:
        stage.move_to(z_um=100.0)
        stage.move_to(z_um=50.0)
        assert wire.moves() == ["mr 0 0 1000", "mr 0 0 -550", "mr 0 0 50"]
        assert stage.position().z_um == 50.0
        stage.move_to(z_um=2.0)  # the overshoot is clipped at the lower soft limit
        assert wire.moves()[-2:] == ["mr 0 0 -500", "mr 0 0 20"]
    finally:
        stage.close()


def test_realtime_move_takes_time_and_moving_reflects_it() -> None:
    emulator = SangaboardEmulator(min_step_delay_us=500, steps_per_um=SPU)  # 2000 steps/s
    with PtyEmulatorServer(emulator) as server:
        stage = _stage(server.path)
        stage.connect()
        try:
            started = time.monotonic()
            stage.move_to(x_um=200.0, wait=False)  # 400 steps: 0.2 s
            assert stage.is_moving()
            assert stage.wait_idle(timeout_s=5.0) == Position(200.0, 0.0, 0.0)
            assert time.monotonic() - started >= 0.18
            assert not stage.is_moving()
        finally:
            stage.close()


def test_wait_timeout_then_stop_keeps_position() -> None:
    emulator = SangaboardEmulator(min_step_delay_us=500, steps_per_um=SPU)
    with PtyEmulatorServer(emulator) as server:
        stage = _stage(server.path)
        stage.connect()
        try:
            with pytest.raises(StageTimeoutError):
                stage.move_to(x_um=5_000.0, timeout_s=0.1)
            stage.stop()
            assert not emulator.moving()
            here = stage.position()
            assert 0.0 < here.x_um < 5_000.0
            assert emulator.physical_position_um()[0] == pytest.approx(here.x_um, abs=0.5)
            assert stage.position_lost is None
            stage.move_to(x_um=here.x_um + 10.0)
        finally:
            stage.close()


def test_new_move_waits_for_the_running_one() -> None:
    emulator = SangaboardEmulator(min_step_delay_us=500, steps_per_um=SPU)
    wire = Wire(emulator)
    with PtyEmulatorServer(emulator) as server:
        stage = _stage(server.path)
        stage.connect()
        try:
            stage.move_to(x_um=50.0, wait=False)
            stage.move_to(y_um=50.0)  # would replace the first move if sent at once
            assert stage.position() == Position(50.0, 50.0, 0.0)
            assert wire.moves() == ["mr 100 0 0", "mr 0 100 0"]
        finally:
            stage.close()


def test_home_without_endstops_refuses(stage: SangaboardStage, wire: Wire) -> None:
    with pytest.raises(UnsupportedOperationError, match="no min endstops"):
        stage.home()
    assert not any(line.startswith("home") for line in wire.lines())
    stage.move_to(x_um=10.0)  # the scan carries on from where the board is


def test_home_with_endstops() -> None:
    emulator = SangaboardEmulator(realtime=False, steps_per_um=SPU, endstops=True,
                                  start_steps=(500.0, 300.0, 100.0))
    with PtyEmulatorServer(emulator) as server:
        stage = _stage(server.path)
        stage.connect()
        try:
            assert stage.endstops == ("min", "soft")
            assert stage.home() == Position(0.0, 0.0, 0.0)
            assert emulator.physical_steps() == (0.0, 0.0, 0.0)
        finally:
            stage.close()


def test_legacy_firmware_blocks_and_cannot_stop() -> None:
    emulator = SangaboardEmulator(firmware="0.5.1", min_step_delay_us=200, steps_per_um=SPU)
    with PtyEmulatorServer(emulator) as server:
        stage = _stage(server.path)
        info = stage.connect()
        try:
            assert info.version == "0.5.1" and not stage.non_blocking
            started = time.monotonic()
            stage.move_to(x_um=100.0, wait=False)  # 200 steps: answered only when done
            assert time.monotonic() - started >= 0.035
            assert stage.position() == Position(100.0, 0.0, 0.0)
            assert not stage.is_moving()
            with pytest.raises(UnsupportedOperationError, match="cannot abort"):
                stage.stop()
        finally:
            stage.close()


def test_zero_and_release(stage: SangaboardStage, emulator: SangaboardEmulator) -> None:
    stage.move_to(10.0, 20.0, 30.0)
    stage.zero()
    assert stage.position() == Position(0.0, 0.0, 0.0)
    assert emulator.physical_position_um() == (10.0, 20.0, 30.0)
    stage.release()


def test_second_driver_is_busy(stage: SangaboardStage, server: PtyEmulatorServer) -> None:
    other = _stage(server.path)
    with pytest.raises(StageBusyError, match="device busy"):
        other.connect()
    other.close()
    stage.move_to(x_um=1.0)


def test_missing_port(tmp_path) -> None:
    with pytest.raises(StageConnectionError):
        _stage(str(tmp_path / "ttyNOPE"), reconnect_attempts=0).connect()


def test_dropped_reply_times_out_and_port_stays_usable(stage: SangaboardStage,
                                                       emulator: SangaboardEmulator) -> None:
    emulator.faults.drop_replies()
    with pytest.raises(StageTimeoutError):
        stage.position()
    stage.move_to(x_um=20.0)
    assert stage.position().x_um == 20.0


def test_late_reply_is_not_taken_for_the_next(stage: SangaboardStage,
                                              emulator: SangaboardEmulator) -> None:
    stage.move_to(x_um=5.0)
    emulator.faults.delay_replies(0.7)
    with pytest.raises(StageTimeoutError):
        stage.position()
    emulator.faults.delay_replies(0.0)
    stage.move_to(x_um=30.0)
    assert stage.position() == Position(30.0, 0.0, 0.0)


def test_garbled_reply_is_protocol_error(stage: SangaboardStage,
                                         emulator: SangaboardEmulator) -> None:
    emulator.faults.garble_replies()
    with pytest.raises(StageProtocolError, match="garbled"):
        stage.position()
    stage.move_to(x_um=40.0)
    assert stage.position().x_um == 40.0


def test_board_reset_marks_position_lost(stage: SangaboardStage,
                                         emulator: SangaboardEmulator) -> None:
    stage.move_to(x_um=50.0)
    emulator.faults.reset()
    deadline = time.monotonic() + 3.0
    while stage.position_lost is None and time.monotonic() < deadline:
        time.sleep(0.01)  # the boot line arrives through the reader thread
    with pytest.raises(PositionLostError, match="restarted"):
        stage.move_to(x_um=60.0)
    with pytest.raises(PositionLostError):
        stage.position()
    stage.acknowledge_position_lost()
    assert stage.position() == Position(0.0, 0.0, 0.0)  # counters restarted from the saved zero


def test_not_a_sangaboard(tmp_path) -> None:
    from firmware_interface.emulator import GrblEmulator, MotionTimings

    with PtyEmulatorServer(GrblEmulator(MotionTimings(realtime=False))) as server:
        stage = _stage(server.path)
        with pytest.raises(StageProtocolError, match="Sangaboard"):
            stage.connect()
        stage.close()


def test_constructor_touches_nothing_and_close_twice() -> None:
    stage = SangaboardStage("/dev/does-not-exist")
    stage.close()
    stage.close()
    with pytest.raises(ValueError):
        SangaboardStage("/dev/null", steps_per_um=(1.0, 0.0, 1.0))


def test_tcp_socket_url() -> None:
    with TcpEmulatorServer(SangaboardEmulator(realtime=False, steps_per_um=SPU)) as server:
        stage = _stage(server.url)
        assert stage.connect().version == "1.0.4"
        stage.move_to(1.0, 2.0, 3.0)
        assert stage.position() == Position(1.0, 2.0, 3.0)
        stage.close()

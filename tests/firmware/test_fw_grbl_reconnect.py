"""GRBL port vanishing (USB unplug) and coming back under its stable name, through a real pty.

As in test_fw_reconnect.py (the Sangaboard): the pty server drops the pty on the injected
disconnect, re-creates it behind the same symlink and power-cycles the board, which boots with its
machine position at 0 wherever the stage is. Timeouts are generous and nothing asserts on timing,
so a loaded machine only makes these slower.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator

import pytest

from firmware_interface.emulator import GrblEmulator, MotionTimings, PtyEmulatorServer
from firmware_interface.errors import PositionLostError, StageConnectionError
from firmware_interface.factory import build_stage
from firmware_interface.grbl import GrblStage
from firmware_interface.reconnect import ReconnectPolicy
from firmware_interface.stage import Position
from tests.firmware.conftest import wait_gone


def _wait_gone(path: str) -> None:
    wait_gone(path, timeout_s=10.0)


def _stage(path: str, **kwargs: object) -> GrblStage:
    options: dict[str, object] = {"reply_timeout_s": 3.0, "poll_interval_s": 0.01,
                                  "reconnect_attempts": 8, "reconnect_backoff_s": 0.05}
    options.update(kwargs)
    return GrblStage(path, **options)  # type: ignore[arg-type]


@pytest.fixture
def board() -> GrblEmulator:
    return GrblEmulator(MotionTimings(realtime=False))


@pytest.fixture
def replug_server(board: GrblEmulator, tmp_path) -> Iterator[PtyEmulatorServer]:
    with PtyEmulatorServer(board, link_path=str(tmp_path / "wbcscope-stage"),
                           reappear_after_s=0.2) as server:
        yield server


def test_unplug_reconnects_and_position_is_lost(replug_server: PtyEmulatorServer,
                                                board: GrblEmulator) -> None:
    link = replug_server.path or ""
    stage = _stage(link)
    stage.connect()
    try:
        stage.move_to(1_000.0, 2_000.0, 300.0)
        board.faults.disconnect()
        _wait_gone(link)
        with pytest.raises(PositionLostError, match="reopened|vanished"):
            stage.position()
        assert os.path.realpath(link) == replug_server.pty_path  # re-pointed at the new pty
        assert stage.firmware_info is not None and stage.firmware_info.version == "1.1h"
        assert stage.position_lost is not None
        with pytest.raises(PositionLostError):
            stage.move_to(x_um=0.0)
        with pytest.raises(PositionLostError):
            stage.jog(dx_um=10.0)
        stage.acknowledge_position_lost()
        assert stage.position() == Position(0.0, 0.0, 0.0)  # MPos restarts at power-up
        assert board.physical_position_um() == (1_000.0, 2_000.0, 300.0)  # nothing moved
        stage.move_to(x_um=10.0)
        assert stage.position().x_um == 10.0
        assert board.physical_position_um()[0] == 1_010.0
    finally:
        stage.close()
        stage.close()


def test_unplug_during_a_move(tmp_path) -> None:
    moving = GrblEmulator(MotionTimings())  # real time: 20 mm at 5 mm/s is still running
    with PtyEmulatorServer(moving, link_path=str(tmp_path / "stage"),
                           reappear_after_s=0.1) as server:
        stage = _stage(server.path or "")
        stage.connect()
        try:
            stage.move_to(x_um=20_000.0, wait=False)
            moving.faults.disconnect()
            with pytest.raises(PositionLostError):
                stage.wait_idle(timeout_s=30.0)
            assert stage.position_lost is not None
            stage.acknowledge_position_lost()
            assert stage.position() == Position(0.0, 0.0, 0.0)
            assert 0.0 < moving.physical_position_um()[0] < 20_000.0  # stopped dead mid-move
        finally:
            stage.close()


def test_replugged_board_with_homing_boots_locked(tmp_path) -> None:
    homing = GrblEmulator(MotionTimings(realtime=False), homing_enabled=True)
    with PtyEmulatorServer(homing, link_path=str(tmp_path / "stage"),
                           reappear_after_s=0.1) as server:
        stage = _stage(server.path or "")
        stage.connect()
        try:
            assert stage.needs_homing
            stage.home()
            assert not stage.needs_homing
            stage.move_to(5_000.0, 5_000.0, 1_000.0)
            homing.faults.disconnect()
            _wait_gone(server.path or "")
            with pytest.raises(PositionLostError):
                stage.position()
            assert stage.needs_homing  # the board booted locked again
            assert stage.home() == Position(0.0, 0.0, 0.0)  # homing restores trust
            assert stage.position_lost is None and not stage.needs_homing
            assert homing.physical_position_um() == (0.0, 0.0, 0.0)  # frames agree again
            stage.move_to(x_um=2_000.0)
            assert homing.physical_position_um()[0] == 2_000.0
        finally:
            stage.close()


def test_attempts_are_bounded(board: GrblEmulator, tmp_path) -> None:
    with PtyEmulatorServer(board, link_path=str(tmp_path / "stage")) as server:  # never comes back
        stage = _stage(server.path or "", reconnect_attempts=3, reconnect_backoff_s=0.02)
        stage.connect()
        try:
            board.faults.disconnect()
            _wait_gone(server.path or "")
            with pytest.raises(StageConnectionError, match="3 attempt"):
                stage.position()
            with pytest.raises(StageConnectionError):  # each later call tries again
                stage.move_to(x_um=1.0)
        finally:
            stage.close()


def test_no_reconnect_when_disabled(board: GrblEmulator, tmp_path) -> None:
    with PtyEmulatorServer(board, link_path=str(tmp_path / "stage"),
                           reappear_after_s=0.05) as server:
        stage = _stage(server.path or "", reconnect_attempts=0)
        stage.connect()
        try:
            board.faults.disconnect()
            _wait_gone(server.path or "")
            with pytest.raises(StageConnectionError, match="0 attempt"):
                stage.position()
        finally:
            stage.close()


def test_close_interrupts_a_reconnect_backoff(board: GrblEmulator, tmp_path) -> None:
    with PtyEmulatorServer(board, link_path=str(tmp_path / "stage")) as server:
        stage = _stage(server.path or "", reconnect_attempts=2, reconnect_backoff_s=60.0)
        stage.connect()
        board.faults.disconnect()
        _wait_gone(server.path or "")
        caught: list[BaseException] = []

        def scan() -> None:
            try:
                stage.position()
            except StageConnectionError as exc:
                caught.append(exc)

        thread = threading.Thread(target=scan)
        thread.start()
        time.sleep(0.05)
        stage.close()
        thread.join(timeout=30.0)  # the backoff alone is 60 s: only close() can end it sooner
        assert not thread.is_alive()
        assert caught and isinstance(caught[0], StageConnectionError)


def test_closed_stage_is_not_reopened_behind_the_callers_back(server_path: str) -> None:
    stage = _stage(server_path)
    stage.connect()
    stage.close()
    with pytest.raises(StageConnectionError):
        stage.position()
    assert not stage._link.opened


@pytest.fixture
def server_path(board: GrblEmulator) -> Iterator[str]:
    with PtyEmulatorServer(board) as server:
        yield server.path or ""


def test_factory_passes_reconnect_settings() -> None:
    stage = build_stage("grbl", "/dev/does-not-exist", reconnect_attempts=5,
                        reconnect_backoff_s=0.25, move_timeout_s=10.0)
    assert isinstance(stage, GrblStage)
    assert stage.reconnect == ReconnectPolicy(attempts=5, backoff_s=0.25)
    assert GrblStage("/dev/does-not-exist").reconnect == ReconnectPolicy()
    stage.close()

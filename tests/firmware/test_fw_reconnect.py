"""Port vanishing (USB unplug) and coming back under its stable name, through a real pty.

The emulator's pty server re-creates the pty after the injected disconnect and re-points a symlink
at it, as udev does for /dev/wbcscope-stage; the replugged board boots again.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from firmware_interface.emulator import PtyEmulatorServer, SangaboardEmulator
from firmware_interface.errors import PositionLostError, StageConnectionError
from firmware_interface.reconnect import ReconnectPolicy
from firmware_interface.sangaboard import SangaboardStage
from firmware_interface.stage import Position
from tests.firmware.conftest import wait_gone


def _wait_gone(path: str) -> None:
    wait_gone(path, timeout_s=3.0)


@pytest.fixture
def board() -> SangaboardEmulator:
    return SangaboardEmulator(realtime=False)


@pytest.fixture
def replug_server(board: SangaboardEmulator, tmp_path) -> Iterator[PtyEmulatorServer]:
    server = PtyEmulatorServer(board, link_path=str(tmp_path / "wbcscope-stage"),
                               reappear_after_s=0.2)
    server.start()
    yield server
    server.stop()


def _stage(path: str, **kwargs) -> SangaboardStage:
    # Generous reply timeout: a loaded CI machine must not turn a slow reboot into a failed reconnect.
    options = dict(reply_timeout_s=3.0, poll_interval_s=0.02, reconnect_attempts=8,
                   reconnect_backoff_s=0.05)
    options.update(kwargs)
    return SangaboardStage(path, **options)  # type: ignore[arg-type]


def test_unplug_reconnects_and_position_is_lost(replug_server: PtyEmulatorServer,
                                                board: SangaboardEmulator) -> None:
    link = replug_server.path or ""
    stage = _stage(link)
    stage.connect()
    try:
        stage.move_to(100.0, 200.0, 30.0)
        board.faults.disconnect()
        _wait_gone(link)
        with pytest.raises(PositionLostError, match="reopened|vanished"):
            stage.position()
        assert os.path.realpath(link) == replug_server.pty_path  # re-pointed at the new pty
        assert stage.firmware_info is not None and stage.non_blocking  # handshake redone
        with pytest.raises(PositionLostError):
            stage.move_to(x_um=0.0)
        stage.acknowledge_position_lost()
        assert stage.position() == Position(0.0, 0.0, 0.0)  # the rebooted board counts from 0
        assert board.physical_position_um() == (100.0, 200.0, 30.0)  # the stage did not move
        stage.move_to(x_um=10.0)
        assert stage.position().x_um == 10.0
    finally:
        stage.close()
        stage.close()


def test_unplug_during_a_move(board: SangaboardEmulator, tmp_path) -> None:
    slow = SangaboardEmulator(min_step_delay_us=1000)
    with PtyEmulatorServer(slow, link_path=str(tmp_path / "stage"), reappear_after_s=0.1) as server:
        stage = _stage(server.path or "")
        stage.connect()
        try:
            stage.move_to(x_um=300.0, wait=False)
            slow.faults.disconnect()
            with pytest.raises(PositionLostError):
                stage.wait_idle(timeout_s=5.0)
            assert stage.position_lost is not None
        finally:
            stage.close()


def test_attempts_are_bounded(board: SangaboardEmulator, tmp_path) -> None:
    with PtyEmulatorServer(board, link_path=str(tmp_path / "stage")) as server:  # never comes back
        stage = _stage(server.path or "", reconnect_attempts=3, reconnect_backoff_s=0.02)
        stage.connect()
        try:
            board.faults.disconnect()
            _wait_gone(server.path or "")
            with pytest.raises(StageConnectionError, match="3 attempt"):
                stage.position()
            with pytest.raises(StageConnectionError):  # each later call tries again
                stage.position()
        finally:
            stage.close()


def test_no_reconnect_when_disabled(board: SangaboardEmulator, tmp_path) -> None:
    with PtyEmulatorServer(board, link_path=str(tmp_path / "stage"), reappear_after_s=0.05) as server:
        stage = _stage(server.path or "", reconnect_attempts=0)
        stage.connect()
        try:
            board.faults.disconnect()
            _wait_gone(server.path or "")
            with pytest.raises(StageConnectionError, match="0 attempt"):
                stage.position()
        finally:
            stage.close()


def test_backoff_policy() -> None:
    assert list(ReconnectPolicy(attempts=5, backoff_s=0.5, max_backoff_s=3.0).delays_s()) == [
        0.5, 1.0, 2.0, 3.0, 3.0]
    assert list(ReconnectPolicy(attempts=0).delays_s()) == []
    with pytest.raises(ValueError):
        ReconnectPolicy(attempts=-1)


def test_link_path_needs_symlink_for_reappear(board: SangaboardEmulator) -> None:
    with pytest.raises(ValueError):
        PtyEmulatorServer(board, reappear_after_s=0.1)

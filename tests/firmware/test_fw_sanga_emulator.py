"""The Sangaboard emulator on its own, with a fake clock: timing, dialects, faults."""

from __future__ import annotations

import pytest

from firmware_interface import sangaboard_protocol as sp
from firmware_interface.emulator import SangaboardEmulator, make_emulator
from firmware_interface.errors import StageProtocolError


class Board:
    def __init__(self, **kwargs) -> None:
        self.t = 0.0
        self.emu = SangaboardEmulator(clock=lambda: self.t, **kwargs)
        self.read()  # the boot line

    def at(self, t: float) -> "Board":
        self.t = t
        return self

    def send(self, line: str) -> list[str]:
        self.emu.feed(line.encode() + b"\n")
        return self.read()

    def read(self) -> list[str]:
        data = self.emu.poll()
        assert data == b"" or data.endswith(b"\r\n")
        return [ln.decode() for ln in data.split(b"\r\n") if ln]


def test_boot_line_and_version() -> None:
    emu = SangaboardEmulator(clock=lambda: 0.0)
    assert emu.poll() == b"Sangaboard Firmware v1.0.4\r\n"
    board = Board()
    assert board.send("version") == ["Sangaboard Firmware v1.0.4"]
    assert board.send("list_modules") == ["--END--"]
    assert board.send("bogus") == ["Type 'help' for a list of commands."]


def test_move_takes_time_from_distance_and_step_delay() -> None:
    board = Board(min_step_delay_us=1000)  # 1000 steps/s on the longest axis
    assert board.send("blocking_moves false") == ["done."]
    assert board.send("mr 500 -250 0") == ["done."]
    assert board.at(0.25).send("moving?") == ["true"]
    x, y, _ = board.emu.physical_steps()
    assert x == pytest.approx(250.0) and y == pytest.approx(-125.0)
    assert board.at(0.51).send("moving?") == ["false"]
    assert board.send("p?") == ["500 -250 0"]


def test_blocking_move_answers_when_done() -> None:
    board = Board(min_step_delay_us=1000)
    assert board.send("mr 100 0 0") == []
    assert board.at(0.05).read() == []
    assert board.at(0.11).read() == ["done."]


def test_notify_on_stop() -> None:
    board = Board(min_step_delay_us=1000)
    board.send("blocking_moves false")
    assert board.send("notify_on_stop") == ["Error: stage is not moving"]
    board.send("mrz 100")
    assert board.send("notify_on_stop") == []
    assert board.at(0.2).read() == ["stopped"]


def test_stop_aborts_without_notice() -> None:
    board = Board(min_step_delay_us=1000)
    board.send("blocking_moves false")
    board.send("mr 1000 0 0")
    board.send("notify_on_stop")
    assert board.at(0.3).send("stop") == ["Move aborted"]
    assert board.at(2.0).read() == []
    assert board.send("p?") == ["300 0 0"]


def test_ramp_time_slows_short_moves() -> None:
    board = Board(min_step_delay_us=1000, ramp_time_us=200_000)
    board.send("blocking_moves false")
    board.send("mr 100 0 0")  # 0.1 s at full speed, but a 0.2 s ramp never gets there
    assert board.at(0.15).send("moving?") == ["true"]


def test_legacy_dialect() -> None:
    board = Board(firmware="0.5.1", min_step_delay_us=1000)
    assert board.send("blocking_moves false") == ["Invalid command"]
    assert board.send("ramp_time?") == ["ramp time 0"]
    assert board.send("mr 100 0 0") == []
    assert board.send("p?") == []  # not read until the move is over
    assert board.at(0.2).read() == ["done.", "100 0 0"]


def test_reset_fault_reboots() -> None:
    board = Board(min_step_delay_us=1000)
    board.send("blocking_moves false")
    board.send("mr 100 0 0")
    board.at(0.05).emu.faults.reset()
    assert board.read() == ["Sangaboard Firmware v1.0.4"]
    assert board.send("p?") == ["0 0 0"]
    assert board.send("blocking_moves?") == ["blocking_moves true"]
    assert board.emu.physical_steps()[0] == pytest.approx(50.0)


def test_drop_garble_delay_faults() -> None:
    board = Board()
    board.emu.faults.drop_replies()
    assert board.send("p?") == []
    board.emu.faults.garble_replies()
    data = board.emu.feed(b"p?\n") or board.emu.poll()
    with pytest.raises(StageProtocolError):
        sp.parse_reply(data.rstrip(b"\r\n"))
    board.emu.faults.delay_replies(0.5)
    assert board.send("p?") == []
    assert board.at(0.6).read() == ["0 0 0"]


def test_make_emulator_dialects() -> None:
    assert isinstance(make_emulator("sangaboard"), SangaboardEmulator)
    with pytest.raises(ValueError):
        make_emulator("marlin")

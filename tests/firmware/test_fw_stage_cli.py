"""``wbcscope stage ...`` bench commands against emulators on real ptys."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator

import pytest

from agent import stage_cli
from firmware_interface.emulator import (
    GrblEmulator,
    MotionTimings,
    PtyEmulatorServer,
    SangaboardEmulator,
)
from firmware_interface.errors import SoftLimitError, UnsupportedOperationError


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="wbcscope")
    sub = parser.add_subparsers(dest="command", required=True)
    stage_cli.add_parser(sub)
    return parser.parse_args(argv)


def _run(argv: list[str]) -> int:
    args = _parse(argv)
    return args.handler(args)


@pytest.fixture
def sanga() -> Iterator[tuple[SangaboardEmulator, str]]:
    board = SangaboardEmulator(realtime=False)
    with PtyEmulatorServer(board) as server:
        yield board, server.path or ""


@pytest.fixture
def grbl() -> Iterator[tuple[GrblEmulator, str]]:
    board = GrblEmulator(MotionTimings(realtime=False))
    with PtyEmulatorServer(board) as server:
        yield board, server.path or ""


def test_info_json_sangaboard(sanga, capsys) -> None:
    _, port = sanga
    assert _run(["stage", "info", "--port", port, "--dialect", "sangaboard", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["dialect"] == "sangaboard" and info["version"] == "1.0.4"
    assert info["position_um"] == {"x_um": 0.0, "y_um": 0.0, "z_um": 0.0}


def test_move_pos_jog_sangaboard(sanga, capsys) -> None:
    board, port = sanga
    common = ["--port", port, "--dialect", "sangaboard"]
    assert _run(["stage", "move", *common, "--x", "100", "--z", "20"]) == 0
    assert "x 100.0 um" in capsys.readouterr().out
    assert _run(["stage", "jog", *common, "--dy", "5", "--dx", "-50"]) == 0
    capsys.readouterr()
    assert _run(["stage", "pos", *common, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"x_um": 50.0, "y_um": 5.0, "z_um": 20.0}
    assert board.reported_steps() == (50, 5, 20)
    assert _run(["stage", "stop", *common]) == 0
    assert "stopped at" in capsys.readouterr().out


def test_home_without_endstops_is_typed_error(sanga) -> None:
    _, port = sanga
    with pytest.raises(UnsupportedOperationError):
        _run(["stage", "home", "--port", port, "--dialect", "sangaboard"])


def test_grbl_from_config_file(grbl, tmp_path, capsys) -> None:
    board, port = grbl
    config = tmp_path / "c.toml"
    config.write_text(f'[stage]\ndialect = "grbl"\nport = "{port}"\n', encoding="utf-8")
    assert _run(["stage", "move", "--config", str(config), "--x", "1000", "--y", "2000"]) == 0
    assert _run(["stage", "pos", "--config", str(config)]) == 0
    assert "x 1000.0 um, y 2000.0 um" in capsys.readouterr().out
    assert board.physical_position_um()[:2] == (1000.0, 2000.0)
    with pytest.raises(SoftLimitError):  # stage.travel_um from the config's defaults
        _run(["stage", "move", "--config", str(config), "--x", "-5"])


def test_move_needs_an_axis(sanga, capsys) -> None:
    _, port = sanga
    assert _run(["stage", "move", "--port", port, "--dialect", "sangaboard"]) == 2


def test_in_process_emulator(capsys, tmp_path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('[stage]\ndialect = "sangaboard"\nport = "emulator"\n'
                      '[simulation]\nrealtime = false\n', encoding="utf-8")
    assert _run(["stage", "info", "--config", str(config)]) == 0
    assert "sangaboard controller" in capsys.readouterr().out

"""Bad inputs give one line naming the problem, no traceback, a non-zero exit, and nothing written."""

from __future__ import annotations

import subprocess
import sys

import pytest
import serial

from tests.conftest import REPO, run_cli


def assert_one_line_error(result: subprocess.CompletedProcess, *words: str) -> None:
    assert result.returncode != 0
    err = result.stderr.strip()
    assert "Traceback" not in err, err
    assert len(err.splitlines()) == 1, err
    for word in words:
        assert word in err, err


@pytest.mark.parametrize(
    "toml, words",
    [
        ("[scan]\nfeilds = 3\n", ["unknown setting", "scan.feilds"]),
        ("[stack]\nplanes = 'many'\n", ["stack.planes", "integer"]),
    ],
)
def test_bad_config_writes_nothing(tmp_path, toml, words):
    config = tmp_path / "bad.toml"
    config.write_text(toml)
    out = tmp_path / "out"
    result = run_cli("scan", "--simulate", "--zero-delay", "--config", str(config), "--out", str(out))
    assert_one_line_error(result, str(config), *words)
    assert not out.exists()


def test_missing_config_file(tmp_path):
    result = run_cli("scan", "--config", str(tmp_path / "absent.toml"), "--out", str(tmp_path / "out"))
    assert_one_line_error(result, "absent.toml", "not found")
    assert not (tmp_path / "out").exists()


def test_bad_test_id(tmp_path):
    result = run_cli("scan", "--simulate", "--zero-delay", "--test-id", "../escape", "--out", str(tmp_path))
    assert_one_line_error(result, "test id")
    assert list(tmp_path.iterdir()) == []


def test_unwritable_output(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = run_cli("scan", "--simulate", "--zero-delay", "--fields", "1", "--out", str(blocker / "out"))
    assert_one_line_error(result, "cannot write")


def test_analyze_directory_without_usable_stack(tmp_path):
    source = tmp_path / "in"
    source.mkdir()
    (source / "notes.txt").write_text("not an image")
    (source / "0001_10_10_000_5.jpg").write_bytes(b"\xff\xd8 this is not a jpeg")
    result = run_cli("analyze", str(source), "--out", str(tmp_path / "out"))
    assert_one_line_error(result, "no usable stack")


def test_analyze_empty_directory(tmp_path):
    result = run_cli("analyze", str(tmp_path), "--out", str(tmp_path.parent / (tmp_path.name + "-out")))
    assert_one_line_error(result, "no miLab-named images")


def test_analyze_refuses_to_write_into_its_input(tmp_path):
    result = run_cli("analyze", str(tmp_path), "--out", str(tmp_path / "results"))
    assert_one_line_error(result, "inside the input")
    assert list(tmp_path.iterdir()) == []


def test_busy_stage_port(tmp_path):
    emulator = subprocess.Popen([sys.executable, "-m", "agent", "stage-emulator", "--zero-delay"],
                                cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        line = emulator.stdout.readline()
        port = line.split(" on ")[1].split()[0]
        with serial.Serial(port, exclusive=True):  # another program owns the controller
            result = run_cli("scan", "--zero-delay", "--stage-port", port, "--fields", "1", "--out", str(tmp_path))
        assert_one_line_error(result, "busy", port)
    finally:
        emulator.terminate()
        emulator.wait(timeout=10)

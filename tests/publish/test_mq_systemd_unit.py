"""The service unit passes `systemd-analyze verify` and scores <= 2.5 on `systemd-analyze security`."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from tests.publish.conftest import REPO

UNIT = REPO / "systemd" / "wbcscope.service"
ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze missing (apt package: systemd)")
EXEC = "/opt/wbcscope/venv/bin/wbcscope"


@needs_analyze
def test_unit_verifies(tmp_path):
    # verify insists that ExecStart= exists; point it at a stand-in, leaving every other line as shipped.
    stub = tmp_path / "wbcscope"
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    text = UNIT.read_text()
    assert EXEC in text
    unit = tmp_path / "wbcscope.service"
    unit.write_text(text.replace(EXEC, str(stub)))
    done = subprocess.run([ANALYZE, "verify", "--man=no", str(unit)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "wbcscope.service" not in done.stderr, done.stderr  # no warnings about our unit either


@needs_analyze
def test_unit_exposure_at_most_2_5():
    done = subprocess.run([ANALYZE, "security", "--offline=yes", "--no-pager", str(UNIT)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    score = float(re.search(r"Overall exposure level for \S+: ([0-9.]+)", done.stdout).group(1))
    assert score <= 2.5, done.stdout


def test_unit_has_what_the_daemon_relies_on():
    text = UNIT.read_text()
    for line in ("Type=notify", "WatchdogSec=", "Restart=on-failure", "User=wbcscope", "SupplementaryGroups=video dialout",
                 "StateDirectory=wbcscope", "CacheDirectory=wbcscope", "LogsDirectory=wbcscope",
                 "ConfigurationDirectory=wbcscope", "DevicePolicy=closed", "DeviceAllow=char-video4linux rw",
                 "DeviceAllow=char-ttyACM rw", "DeviceAllow=char-ttyUSB rw", "ProtectSystem=strict"):
        assert line in text, line
    # SIGTERM may wait SHUTDOWN_SCAN_WAIT_S for the current field, plus a flush: systemd must wait longer.
    from agent.daemon import FLUSH_TIMEOUT_S, SHUTDOWN_SCAN_WAIT_S

    stop_s = int(re.search(r"^TimeoutStopSec=(\d+)$", text, re.M).group(1))
    assert stop_s > SHUTDOWN_SCAN_WAIT_S + 2 * FLUSH_TIMEOUT_S

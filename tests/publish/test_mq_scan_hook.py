"""A command-line scan with [mqtt]: results queue while no broker answers, and the disk floor stops it."""

from __future__ import annotations

import json
import sqlite3

import pytest

from agent.config import load_settings
from agent.publish.hooks import ScanPublisher
from agent.publish.outbox import DiskFloorError
from agent.session import ScanSession
from tests.publish.conftest import WAIT_S, DaemonProc, fields_of, wait_until, write_config


def _depth(path) -> int:
    db = sqlite3.connect(path)
    try:
        return db.execute("SELECT COUNT(*) FROM messages").fetchone()[0]
    finally:
        db.close()


def test_scan_without_broker_queues_everything_for_the_daemon(tmp_path, broker, subscribers):
    config = write_config(tmp_path / "dev.toml", broker.port, device="hook-dev", fields=3)
    settings = load_settings(config)
    broker.stop()  # configured, but nobody answers
    test_dir = tmp_path / "out" / "T-hook"
    with ScanPublisher(settings, test_dir, flush_timeout_s=0.5) as publisher:
        ScanSession(settings, test_dir, on_record=publisher.on_record).run()
    outbox = tmp_path / "state-hook-dev" / "outbox.sqlite3"
    assert _depth(outbox) == 4  # three fields and the summary, nothing lost

    broker.start()
    sub = subscribers(broker.port, ["wbcscope/v1/hook-dev/#"])
    daemon = DaemonProc(config)  # the daemon drains what the scan left behind
    try:
        wait_until(lambda: sub.on("/tests/T-hook/summary"), WAIT_S, "the queued summary")
        merged = {}
        for m in fields_of(sub, "hook-dev", "T-hook"):
            merged.update(m.json())
        assert merged == json.loads((test_dir / "analyze_result.json").read_text())
        wait_until(lambda: _depth(outbox) == 0, WAIT_S, "the outbox to drain")
    finally:
        daemon.kill()


def test_disk_floor_stops_a_command_line_scan(tmp_path):
    settings = load_settings(overrides={"daemon.disk_floor_mb": 9_000_000.0, "simulation.realtime": False})
    with pytest.raises(DiskFloorError, match="disk_floor_mb"):
        ScanPublisher(settings, tmp_path / "T").open()

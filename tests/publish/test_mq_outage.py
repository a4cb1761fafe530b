"""Broker outages and daemon crashes during a scan lose no field."""

from __future__ import annotations

import json
import sqlite3
import time
from collections import defaultdict

from tests.publish.conftest import WAIT_S, fields_of, scans_dir, wait_until, write_config

DEV = "outage-dev"


def _check_complete(sub, config, device):
    scans = [p for p in scans_dir(config, device).iterdir() if p.is_dir()]
    assert len(scans) == 1
    test_dir = scans[0]
    lines = (test_dir / "fields.jsonl").read_text().splitlines()
    on_disk = {json.loads(line)["image_index"] for line in lines}
    document = json.loads((test_dir / "analyze_result.json").read_text())
    wait_until(lambda: {int(m.topic.rsplit("/", 1)[1]) for m in fields_of(sub, device, test_dir.name)} >= on_disk,
               WAIT_S, "every field written to disk to arrive")
    copies = defaultdict(list)
    for m in fields_of(sub, device, test_dir.name):
        copies[m.topic.rsplit("/", 1)[1]].append(m)
    for index, msgs in copies.items():
        # QoS 1 may deliver twice: every copy carries the same message id and the same result.
        assert len({m.props["msg_id"] for m in msgs}) == 1
        assert all(m.json() == {index: document[index]} for m in msgs)
    assert len({msgs[0].props["msg_id"] for msgs in copies.values()}) == len(copies)
    return test_dir, on_disk


def test_broker_restarted_twice_during_a_scan(tmp_path, persistent_broker, subscribers, daemons):
    broker = persistent_broker
    sub = subscribers(broker.port, [f"wbcscope/v1/{DEV}/tests/#"], client_id="ingest", persistent=True)
    config = write_config(tmp_path / "dev.toml", broker.port, device=DEV, fields=40, scan_on_start=True)
    daemon = daemons(config)
    seen = 3
    on_disk_at_outage = []
    for _ in range(2):
        wait_until(lambda: len(sub.on("")) >= seen, WAIT_S, f"{seen} messages")
        broker.stop()
        test_dir = next(p for p in scans_dir(config, DEV).iterdir() if p.is_dir())
        on_disk_at_outage.append(len((test_dir / "fields.jsonl").read_text().splitlines()))
        time.sleep(1.5)  # fields keep coming and wait in the outbox
        broker.start()
        seen = len(sub.on("")) + 3
    wait_until(lambda: sub.on("/summary"), WAIT_S, "the summary")
    assert on_disk_at_outage[0] < 40  # the broker went away while the scan was still running
    _, on_disk = _check_complete(sub, config, DEV)
    assert on_disk == set(range(40))
    assert sub.on("/summary")[-1].json()["fields"] == 40
    assert daemon.proc.poll() is None


def test_sigkilled_daemon_drains_its_outbox_on_restart(tmp_path, persistent_broker, subscribers, daemons):
    broker = persistent_broker
    sub = subscribers(broker.port, [f"wbcscope/v1/{DEV}/tests/#"], client_id="ingest2", persistent=True)
    config = write_config(tmp_path / "dev.toml", broker.port, device=DEV, fields=40, scan_on_start=True)
    first = daemons(config)
    wait_until(lambda: len(sub.on("")) >= 3, WAIT_S, "the first fields")
    broker.stop()  # from here fields pile up in the outbox
    outbox = config.parent / f"state-{DEV}" / "outbox.sqlite3"
    wait_until(lambda: _depth(outbox) >= 3, WAIT_S, "results piling up in the outbox")
    first.kill()
    assert _depth(outbox) >= 3  # results that had no PUBACK survived the kill
    broker.start()
    restart_config = write_config(tmp_path / "dev.toml", broker.port, device=DEV, fields=40, scan_on_start=False)
    daemons(restart_config)
    _check_complete(sub, config, DEV)
    wait_until(lambda: _depth(outbox) == 0, WAIT_S, "the outbox to drain")


def _depth(path) -> int:
    db = sqlite3.connect(path)
    try:
        return db.execute("SELECT COUNT(*) FROM messages").fetchone()[0]
    finally:
        db.close()

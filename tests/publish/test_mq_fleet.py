"""`wbcscope fleet --once --json` lists every device with its state; a killed one shows offline."""

from __future__ import annotations

import json

from tests.publish.conftest import WAIT_S, run_tool, wait_until, write_config


def _fleet(config):
    done = run_tool("agent", "fleet", "--config", str(config), "--once", "--json", "--wait-s", "1")
    assert done.returncode == 0, done.stderr
    return {row["device"]: row for row in json.loads(done.stdout)}


def test_two_devices_in_the_fleet_view(tmp_path, broker, subscribers, daemons):
    sub = subscribers(broker.port, ["wbcscope/v1/+/telemetry", "wbcscope/v1/+/status"])
    a = write_config(tmp_path / "a.toml", broker.port, device="fleet-a")
    b = write_config(tmp_path / "b.toml", broker.port, device="fleet-b")
    daemons(a)
    killed = daemons(b)
    wait_until(lambda: {m.topic.split("/")[2] for m in sub.on("/telemetry")} == {"fleet-a", "fleet-b"}, WAIT_S,
               "telemetry from both devices")
    rows = _fleet(a)
    assert set(rows) == {"fleet-a", "fleet-b"}
    for row in rows.values():
        assert row["online"] is True and row["state"] == "idle" and row["last_seen"]
        assert {"test_id", "fields_done", "fields_planned", "fields_per_min", "wbc", "counts"} <= set(row)

    killed.kill()
    wait_until(lambda: any(m.topic == "wbcscope/v1/fleet-b/status" and not m.json()["online"]
                           for m in sub.messages), WAIT_S, "fleet-b's will")
    rows = _fleet(a)
    assert rows["fleet-b"]["online"] is False and rows["fleet-b"]["state"] == "offline"
    assert rows["fleet-a"]["online"] is True

"""Fields travel from a daemon scan to a subscriber exactly as analyze_result.json has them."""

from __future__ import annotations

import json
import signal
import socket
import sqlite3
import threading

from tests.publish.conftest import WAIT_S, cli_env, fields_of, run_tool, scans_dir, wait_until, write_config

DEV = "rt-dev"


def _notify_listener(path):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(0.2)
    got: list[str] = []
    stop = threading.Event()

    def loop():
        while not stop.is_set():
            try:
                got.append(sock.recv(4096).decode())
            except socket.timeout:
                continue
    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    return got, stop, sock, thread


def test_fields_round_trip_then_sigterm(tmp_path, broker, subscribers, daemons):
    sub = subscribers(broker.port, [f"wbcscope/v1/{DEV}/#"])
    config = write_config(tmp_path / "dev.toml", broker.port, device=DEV, fields=5, scan_on_start=True)
    got, stop, sock, thread = _notify_listener(tmp_path / "notify.sock")
    daemon = daemons(config, env=cli_env(NOTIFY_SOCKET=str(tmp_path / "notify.sock"), WATCHDOG_USEC="1000000"))
    try:
        wait_until(lambda: sub.matching(lambda m: m.topic.endswith("/summary")), WAIT_S, "the summary")
        summary_msg = sub.matching(lambda m: m.topic.endswith("/summary"))[0]
        summary = summary_msg.json()
        test_id = summary["test_id"]
        assert summary["fields"] == 5 and summary["fields_planned"] == 5 and summary["status"] == "complete"
        assert set(summary) >= {"counts", "differential_pct", "duration_s", "flagged_fields", "wbc"}

        test_dir = scans_dir(config, DEV) / test_id
        document = json.loads((test_dir / "analyze_result.json").read_text())
        fields = fields_of(sub, DEV, test_id)
        merged = {}
        for m in fields:
            index = m.topic.rsplit("/", 1)[1]
            body = m.json()
            assert list(body) == [index]  # payload is exactly {"<image_index>": {...}}
            assert set(body[index]) == {"img_name", "cell_prediction"}
            assert m.props["device"] == DEV and m.props["test_id"] == test_id
            assert m.props["software"] and "detector=" in m.props["models"] and m.props["msg_id"]
            merged.update(body)
        assert merged == document
        assert len({m.props["msg_id"] for m in fields}) == len(document)

        status = sub.on(f"{DEV}/status")
        assert status and status[0].json()["online"] is True
        birth = status[0].json()
        assert birth["software"] and birth["models"]["detector"] and birth["hardware"]["firmware"]
        wait_until(lambda: any(m.json().get("outbox_depth") == 0 and m.json()["state"] == "idle"
                               for m in sub.on("/telemetry")), WAIT_S, "telemetry with an empty outbox")
        telemetry = sub.on("/telemetry")[-1].json()
        assert set(telemetry) >= {"state", "test_id", "fields_done", "fields_planned", "fields_per_min",
                                  "autofocus_success_rate", "outbox_depth", "disk_free_mb", "cpu_temp_c",
                                  "serial_errors"}
        with sqlite3.connect(config.parent / f"state-{DEV}" / "outbox.sqlite3") as db:
            assert db.execute("SELECT COUNT(*) FROM messages").fetchone()[0] == 0

        daemon.signal(signal.SIGTERM)
        assert daemon.wait() == 0, daemon.log()
        wait_until(lambda: sub.on(f"{DEV}/status")[-1].json()["online"] is False, WAIT_S, "offline status")
        joined = "\n".join(got)
        assert "READY=1" in joined and "WATCHDOG=1" in joined and "STATUS=" in joined and "STOPPING=1" in joined
    finally:
        stop.set()
        thread.join(2)
        sock.close()


def test_publish_an_offline_scan_afterwards(tmp_path, broker, subscribers):
    config = write_config(tmp_path / "dev.toml", broker.port, device="offline-dev", fields=4)
    out = tmp_path / "out"
    scan = run_tool("agent", "scan", "--config", str(config), "--out", str(out), "--test-id", "T1", "--no-progress")
    assert scan.returncode == 0, scan.stderr
    broker.stop()
    refused = run_tool("agent", "publish", str(out / "T1"), "--config", str(config), "--timeout-s", "2")
    assert refused.returncode == 1 and "stay in" in refused.stderr
    broker.start()
    sub_after = subscribers(broker.port, ["wbcscope/v1/offline-dev/#"])

    done = run_tool("agent", "publish", str(out / "T1"), "--config", str(config), "--timeout-s", "30")
    assert done.returncode == 0, done.stderr
    wait_until(lambda: sub_after.on("/summary"), WAIT_S, "the summary")
    document = json.loads((out / "T1" / "analyze_result.json").read_text())
    merged = {}
    for m in fields_of(sub_after, "offline-dev", "T1"):
        merged.update(m.json())
    assert merged == document
    assert sub_after.on("/summary")[0].json()["fields"] == 4

"""Remote commands: hostile input gets an error reply and the daemon carries on."""

from __future__ import annotations

import json

import pytest

from tests.publish.conftest import WAIT_S, scans_dir, wait_until, write_config

DEV = "cmd-dev"
CMD = f"wbcscope/v1/{DEV}/cmd"
REPLIES = "client/replies"

HOSTILE = [
    b"not json",
    b"\xff\xfe\x00",
    b"[1, 2, 3]",
    b"null",
    b'{"cmd": 5}',
    b'{"cmd": "reboot"}',
    b'{"cmd": "ping", "extra": 1}',
    b'{"cmd": "start_scan", "params": {"test_id": "../../etc/evil"}}',
    b'{"cmd": "start_scan", "params": {"test_id": "/tmp/abs"}}',
    b'{"cmd": "start_scan", "params": {"test_id": "a/b"}}',
    b'{"cmd": "start_scan", "params": {"fields": "10"}}',
    b'{"cmd": "start_scan", "params": {"fields": true}}',
    b'{"cmd": "start_scan", "params": {"fields": -1}}',
    b'{"cmd": "start_scan", "params": {"fields": 1e400}}',
    b'{"cmd": "start_scan", "params": {"sample_id": "a\\u0000b"}}',
    b'{"cmd": "start_scan", "params": {"stage.port": "/dev/sda"}}',
    b'{"cmd": "start_scan", "params": [1]}',
    b'{"cmd": "stop", "id": {"nested": 1}}',
    b"[" * 5000 + b"]" * 5000,
    b'{"cmd": "ping", "pad": "' + b"x" * 100_000 + b'"}',
]


@pytest.fixture
def device(tmp_path, broker, subscribers, daemons):
    sub = subscribers(broker.port, [REPLIES, f"wbcscope/v1/{DEV}/#"])
    config = write_config(tmp_path / "dev.toml", broker.port, device=DEV, fields=2)
    daemon = daemons(config)
    wait_until(lambda: sub.on(f"{DEV}/status"), WAIT_S, "the birth message")
    return sub, config, daemon


def _ask(sub, payload: bytes, key: str, *, response_topic: str = REPLIES):
    sub.publish(CMD, payload, response_topic=response_topic, correlation=key.encode())
    def replies():
        return sub.matching(lambda m: m.correlation == key.encode() and m.topic != CMD)
    wait_until(replies, WAIT_S, f"the reply to {key}")
    return replies()[0]


def test_hostile_commands_get_error_replies(device):
    sub, config, daemon = device
    for n, payload in enumerate(HOSTILE):
        answer = _ask(sub, payload, f"bad-{n}")
        assert answer.topic == REPLIES
        body = answer.json()
        assert body["ok"] is False and body["error"], (payload[:80], body)
    assert not (config.parent / "etc").exists() and not (config.parent.parent / "etc" / "evil").exists()
    assert daemon.proc.poll() is None

    # A wildcard response topic is refused, on the device's own reply topic.
    sub.publish(CMD, b'{"cmd": "ping"}', response_topic="#", correlation=b"wild")
    wait_until(lambda: sub.on(f"{DEV}/cmd/reply"), WAIT_S, "the default reply")
    assert sub.on(f"{DEV}/cmd/reply")[0].json()["ok"] is False

    # ...and it still does its job.
    pong = _ask(sub, b'{"cmd": "ping", "id": "r1"}', "ping").json()
    assert pong["ok"] is True and pong["id"] == "r1" and pong["result"]["pong"] is True
    started = _ask(sub, b'{"cmd": "start_scan", "params": {"test_id": "T-cmd", "fields": 2}}', "start").json()
    assert started["ok"] is True and started["result"] == {"test_id": "T-cmd", "fields_planned": 2}
    wait_until(lambda: sub.on("/tests/T-cmd/summary"), WAIT_S, "the summary")
    assert sub.on("/tests/T-cmd/summary")[0].json()["fields"] == 2
    assert (scans_dir(config, DEV) / "T-cmd" / "analyze_result.json").exists()
    again = _ask(sub, b'{"cmd": "start_scan", "params": {"test_id": "T-cmd"}}', "again").json()
    assert again["ok"] is False and "exists" in again["error"]
    status = _ask(sub, b'{"cmd": "status"}', "status").json()
    assert status["ok"] is True and status["result"]["state"] == "idle"
    assert _ask(sub, b'{"cmd": "stop"}', "stop").json()["ok"] is True


def test_disk_floor_pauses_scanning(tmp_path, broker, subscribers, daemons):
    sub = subscribers(broker.port, [REPLIES, f"wbcscope/v1/{DEV}/#"])
    config = write_config(tmp_path / "dev.toml", broker.port, device=DEV, fields=2)
    config.write_text(config.read_text().replace("disk_floor_mb = 1", "disk_floor_mb = 9000000"))
    daemons(config)
    wait_until(lambda: sub.on(f"{DEV}/status"), WAIT_S, "the birth message")
    answer = _ask(sub, b'{"cmd": "start_scan"}', "floor").json()
    assert answer["ok"] is False and "floor" in answer["error"]
    wait_until(lambda: sub.on(f"{DEV}/status")[-1].json()["state"] == "paused_disk_floor", WAIT_S,
               "the paused state")
    assert not any(p.is_dir() for p in scans_dir(config, DEV).iterdir())


def test_mqtt_311_replies_on_the_reply_topic(tmp_path, broker, subscribers, daemons):
    sub = subscribers(broker.port, [f"wbcscope/v1/{DEV}/#"])
    # A retained command would run again after every reconnect: the daemon ignores it.
    sub.publish(CMD, b'{"cmd": "ping", "id": "retained"}', retain=True)
    daemons(write_config(tmp_path / "dev.toml", broker.port, device=DEV, protocol="3.1.1"))
    wait_until(lambda: sub.on(f"{DEV}/status"), WAIT_S, "the birth message")
    sub.publish(CMD, b"{broken")
    sub.publish(CMD, b'{"cmd": "ping", "id": 7}')
    wait_until(lambda: any(json.loads(m.payload)["id"] == 7 for m in sub.on(f"{DEV}/cmd/reply")), WAIT_S,
               "the reply to ping 7")
    bodies = [json.loads(m.payload) for m in sub.on(f"{DEV}/cmd/reply")]
    assert len(bodies) == 2  # nothing for the retained command
    assert bodies[0]["ok"] is False and bodies[1] == {"ok": True, "cmd": "ping", "id": 7,
                                                      "result": bodies[1]["result"]}

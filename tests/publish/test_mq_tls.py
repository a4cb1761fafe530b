"""TLS (mutual) and username/password against a real Mosquitto: the login from the config file or the
environment, a refused login keeps every result in the outbox, a broker certificate from the wrong CA or
a missing client certificate is refused with one clear line."""

from __future__ import annotations

import os
import signal
import sqlite3

import pytest

from tests.publish.conftest import WAIT_S, cli_env, fields_of, run_tool, wait_until, write_config
from tests.publish.test_mq_roundtrip import _notify_listener
from tests.publish.tls_broker import PASSWORD, USER, mqtt_tls_section, tls_broker

DEV = "tls-dev"


@pytest.fixture
def mtls_broker(tmp_path):
    b = tls_broker(tmp_path, require_certificate=True)
    yield b
    b.stop()


def _env(**extra: str) -> dict[str, str]:
    env = cli_env(**extra)
    for name in ("WBCSCOPE_MQTT_USERNAME", "WBCSCOPE_MQTT_PASSWORD"):
        if name not in extra:
            env.pop(name, None)  # whatever the developer's shell has must not decide the test
    return env


def _depth(path) -> int:
    if not os.path.exists(path):
        return -1
    db = sqlite3.connect(path)
    try:
        return db.execute("SELECT COUNT(*) FROM messages").fetchone()[0]
    finally:
        db.close()


def test_daemon_over_mutual_tls_with_the_login_from_the_config_file(tmp_path, mtls_broker, subscribers, daemons):
    b = mtls_broker
    sub = subscribers(b.port, [f"wbcscope/v1/{DEV}/#"])
    config = write_config(tmp_path / "dev.toml", b.tls_port, device=DEV, fields=3, scan_on_start=True,
                          mqtt_extra=mqtt_tls_section(b, client_cert=True, username=USER, password=PASSWORD))
    daemon = daemons(config, env=_env())
    wait_until(lambda: sub.on("/summary"), WAIT_S, "the summary, sent over TLS")
    test_id = sub.on("/summary")[0].json()["test_id"]
    assert len(fields_of(sub, DEV, test_id)) == 3
    assert sub.on(f"{DEV}/status")[0].json()["online"] is True
    daemon.signal(signal.SIGTERM)
    assert daemon.wait() == 0, daemon.log()
    assert "Traceback" not in daemon.log()


def test_refused_login_keeps_results_queued_until_the_environment_brings_the_right_one(
        tmp_path, mtls_broker, subscribers, daemons):
    b = mtls_broker
    sub = subscribers(b.port, [f"wbcscope/v1/{DEV}/#"])
    config = write_config(tmp_path / "dev.toml", b.tls_port, device=DEV, fields=3, scan_on_start=True,
                          mqtt_extra=mqtt_tls_section(b, client_cert=True, username=USER, password="wrong"))
    outbox = config.parent / f"state-{DEV}" / "outbox.sqlite3"
    got, stop, sock, thread = _notify_listener(tmp_path / "notify.sock")
    try:
        daemon = daemons(config, env=_env(NOTIFY_SOCKET=str(tmp_path / "notify.sock")))
        wait_until(lambda: _depth(outbox) == 4, WAIT_S, "3 fields and the summary waiting in the outbox")
        wait_until(lambda: any("refused the login" in g for g in got), WAIT_S, "a STATUS= naming the refusal")
        status = next(g for g in got if "refused the login" in g)
        assert "WBCSCOPE_MQTT_PASSWORD" in status and "outbox" in status
        daemon.signal(signal.SIGTERM)
        assert daemon.wait() == 0, daemon.log()
    finally:
        stop.set()
        thread.join(2)
        sock.close()
    errors = [line for line in daemon.log().splitlines() if "refused the login" in line]
    assert len(errors) == 1, daemon.log()  # one line, not one per reconnect attempt
    assert "Traceback" not in daemon.log()
    assert _depth(outbox) == 4 and not sub.on("/summary")  # nothing sent, nothing lost

    # The environment wins over the (still wrong) password in the file.
    daemons(config, env=_env(WBCSCOPE_MQTT_USERNAME=USER, WBCSCOPE_MQTT_PASSWORD=PASSWORD))
    wait_until(lambda: sub.on("/summary"), WAIT_S, "the queued summary")
    wait_until(lambda: _depth(outbox) == 0, WAIT_S, "the outbox to drain")
    assert len(fields_of(sub, DEV, sub.on("/summary")[0].json()["test_id"])) == 3


def test_wrong_ca_is_refused_clearly_and_the_right_one_publishes(tmp_path, mtls_broker, subscribers):
    b = mtls_broker
    wrong = write_config(tmp_path / "wrong.toml", b.tls_port, device="pub-dev", fields=2,
                         mqtt_extra=mqtt_tls_section(b, ca=b.pki.wrong_ca, client_cert=True))
    out = tmp_path / "out"
    scan = run_tool("agent", "scan", "--config", str(wrong), "--out", str(out), "--test-id", "T1", "--no-progress",
                    env=_env())
    assert scan.returncode == 0, scan.stderr
    login = _env(WBCSCOPE_MQTT_USERNAME=USER, WBCSCOPE_MQTT_PASSWORD=PASSWORD)
    refused = run_tool("agent", "publish", str(out / "T1"), "--config", str(wrong), "--timeout-s", "60", env=login)
    assert refused.returncode == 1
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and "certificate" in lines[0] and "mqtt.ca_file" in lines[0], refused.stderr
    assert "stay in" in lines[0]
    fleet = run_tool("agent", "fleet", "--config", str(wrong), "--once", "--json", env=login)
    assert fleet.returncode == 1 and "mqtt.ca_file" in fleet.stderr and "Traceback" not in fleet.stderr
    no_cert = write_config(tmp_path / "no-cert.toml", b.tls_port, device="pub-dev",
                           mqtt_extra=mqtt_tls_section(b))  # the broker has require_certificate true
    fleet = run_tool("agent", "fleet", "--config", str(no_cert), "--once", "--json", env=login)
    assert fleet.returncode == 1 and "mqtt.cert_file" in fleet.stderr and "Traceback" not in fleet.stderr

    sub = subscribers(b.port, ["wbcscope/v1/pub-dev/#"])
    right = write_config(tmp_path / "right.toml", b.tls_port, device="pub-dev", fields=2,
                         mqtt_extra=mqtt_tls_section(b, client_cert=True))
    done = run_tool("agent", "publish", str(out / "T1"), "--config", str(right), "--timeout-s", "60", env=login)
    assert done.returncode == 0, done.stderr
    wait_until(lambda: sub.on("/summary"), WAIT_S, "the summary")
    assert len(fields_of(sub, "pub-dev", "T1")) == 2

"""The watchdog proves the scan thread alive; serial-error telemetry comes from the stage driver; the
MQTT login and TLS settings are checked before connecting."""

from __future__ import annotations

import os
import ssl
import threading

import pytest

from agent.config import MqttSettings, load_settings
from agent.errors import ConfigError
from agent.publish.health import ScanState, SerialErrorTally, stage_serial_errors
from agent.publish.mqtt import ENV_PASSWORD, ENV_USERNAME, MqttLink, credentials, describe_connect_error
from agent.publish.sdnotify import Notifier
from agent.scan import ScanProgress
from tests.publish.conftest import WAIT_S, wait_until, write_config
from tests.publish.test_mq_roundtrip import _notify_listener


def test_a_scan_stuck_in_a_hardware_call_stops_the_watchdog_pings(tmp_path, broker, monkeypatch):
    import agent.session
    from agent.daemon import Daemon

    released = threading.Event()
    real = agent.session.ScanSession

    class StuckAfterFirstField(real):
        """The call after the first field never returns until the test says so (a hung camera, say)."""

        def __init__(self, *args, on_record, **kwargs):
            def on_record_then_hang(record):
                on_record(record)
                released.wait(WAIT_S)
            super().__init__(*args, on_record=on_record_then_hang, **kwargs)

    monkeypatch.setattr(agent.session, "ScanSession", StuckAfterFirstField)
    config = write_config(tmp_path / "dev.toml", broker.port, device="stall-dev", fields=3, scan_on_start=True,
                          extra="scan_stall_s = 1")
    got, stop, sock, thread = _notify_listener(tmp_path / "notify.sock")
    notifier = Notifier({"NOTIFY_SOCKET": str(tmp_path / "notify.sock"), "WATCHDOG_USEC": "200000",
                         "WATCHDOG_PID": str(os.getpid())})
    daemon = Daemon(load_settings(config), config_path=config, notifier=notifier)
    runner = threading.Thread(target=daemon.run, name="daemon-under-test")
    runner.start()
    try:
        wait_until(lambda: any(g.startswith("STATUS=scan_stalled") for g in got), WAIT_S, "the stall")
        stalled_at = next(i for i, g in enumerate(got) if g.startswith("STATUS=scan_stalled"))
        # While stalled, many watchdog periods (0.1 s) pass: systemd would see no ping and restart us.
        wait_until(lambda: daemon.scan.silent_s() > 2.0, WAIT_S, "a few silent watchdog periods")
        assert daemon.state == "scan_stalled" and "stall" in daemon.telemetry()["last_error"]
        released.set()  # the hardware call returns: the scan goes on, the pings come back
        wait_until(lambda: daemon.state == "idle", WAIT_S, "the scan to finish")
        wait_until(lambda: "WATCHDOG=1" in got[-3:], WAIT_S, "pings after the scan")
    finally:
        released.set()
        daemon.stop.set()
        runner.join(WAIT_S)
        stop.set()
        thread.join(2)
        sock.close()
    assert not runner.is_alive()
    resumed_at = got.index("STATUS=scanning", stalled_at)
    assert "WATCHDOG=1" in got[:stalled_at]
    assert "WATCHDOG=1" not in got[stalled_at:resumed_at]
    assert "watchdog pings stopped" in got[stalled_at] and "daemon.scan_stall_s" in got[stalled_at]
    assert "WATCHDOG=1" in got[resumed_at:]


def test_scan_heartbeat():
    now = [100.0]
    state = ScanState(clock=lambda: now[0])
    assert state.silent_s() == 0.0  # no scan
    state.reset("T")
    now[0] += 5
    assert state.silent_s() == 5.0
    state.progress(ScanProgress(1, 3, 0, 1.0))
    assert state.silent_s() == 0.0
    now[0] += 2
    state.finish()
    now[0] += 100
    assert state.silent_s() == 0.0  # a finished scan is not a stalled one


class _Stage:
    def __init__(self, errors):
        if errors is not None:
            self.serial_errors = errors


def test_serial_errors_come_from_the_stage_driver():
    assert stage_serial_errors(_Stage(None)) is None and stage_serial_errors(_Stage(True)) is None
    tally = SerialErrorTally()
    tally.add_final(_Stage(None))
    assert tally.total() is None  # a driver without the counter: unknown, not zero
    tally.add_final(_Stage(2))
    live = {"stage": None}
    tally.watch(lambda: live["stage"])
    assert tally.total() == 2  # the scan's stage is not open yet
    live["stage"] = _Stage(3)
    assert tally.total() == 5
    live["stage"].serial_errors = 4
    tally.retire()
    live["stage"] = _Stage(100)  # no longer watched
    assert tally.total() == 6


def test_login_and_tls_settings(monkeypatch, tmp_path):
    monkeypatch.delenv(ENV_USERNAME, raising=False)
    monkeypatch.delenv(ENV_PASSWORD, raising=False)
    settings = MqttSettings(host="127.0.0.1", username="file-user", password="file-pass")
    assert credentials(settings) == ("file-user", "file-pass")
    monkeypatch.setenv(ENV_USERNAME, "env-user")
    monkeypatch.setenv(ENV_PASSWORD, "")  # empty: the file's password still counts
    assert credentials(settings) == ("env-user", "file-pass")
    monkeypatch.delenv(ENV_USERNAME)
    with pytest.raises(ConfigError, match="no username"):
        MqttLink(MqttSettings(host="127.0.0.1", password="x"), "c", None)
    with pytest.raises(ConfigError, match="mqtt.tls = false"):
        MqttLink(MqttSettings(host="127.0.0.1", ca_file=str(tmp_path)), "c", None)
    with pytest.raises(ConfigError, match="no such file"):
        MqttLink(MqttSettings(host="127.0.0.1", tls=True, ca_file=str(tmp_path / "missing.pem")), "c", None)
    line, fatal = describe_connect_error(ConnectionRefusedError(111, "refused"), "h", 1)
    assert "refused" in line and not fatal
    line, fatal = describe_connect_error(ssl.SSLError(1, "wrong version number"), "h", 8883)
    assert "TLS handshake with h:8883 failed" in line and fatal


def test_broker_problems_taking_turns_are_logged_once_each(tmp_path, caplog):
    from agent.daemon import Daemon

    config = write_config(tmp_path / "dev.toml", 1883, device="turns-dev")
    daemon = Daemon(load_settings(config), config_path=config, notifier=Notifier({}))
    with caplog.at_level("WARNING", logger="agent.daemon"):
        for line in ("broker refused the login", "no answer (timed out)", "broker refused the login"):
            daemon._broker_trouble(line)
    logged = [r.getMessage() for r in caplog.records if r.getMessage().startswith("MQTT:")]
    assert logged == ["MQTT: broker refused the login; results wait in the outbox",
                      "MQTT: no answer (timed out); results wait in the outbox"]
    assert daemon._broker_problem == "broker refused the login"  # STATUS= says the latest, logged or not

"""A real Mosquitto broker per test, MQTT subscribers, and the daemon as a subprocess."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).absolute().parents[2]
MOSQUITTO = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if os.path.exists("/usr/sbin/mosquitto") else None)
WAIT_S = 60.0
"""Generous bound for anything the tests wait for (a shared 2-core machine can be slow)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout_s: float = WAIT_S, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


class Broker:
    def __init__(self, directory: Path, *, persistence: bool = False) -> None:
        self.directory = directory
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        lines = [f"listener {self.port} 127.0.0.1", "allow_anonymous true"]
        if persistence:
            # Only the outage tests: a subscriber's session and its queued messages survive a restart.
            lines += ["persistence true", f"persistence_location {directory}/"]
        else:
            lines.append("persistence false")
        if os.geteuid() == 0:
            lines.append("user root")  # as root mosquitto would switch to a user that cannot read tmp
        self.conf = directory / "mosquitto.conf"
        self.conf.write_text("\n".join(lines) + "\n")

    def start(self) -> None:
        log = open(self.directory / "mosquitto.log", "ab")
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=log, stderr=log)
        log.close()

        def accepting() -> bool:
            assert self.proc.poll() is None, (self.directory / "mosquitto.log").read_text()
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return True
            except OSError:
                return False
        wait_until(accepting, 20, "mosquitto to accept connections")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM: mosquitto saves its persistence file on the way out
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None


def _broker(tmp_path: Path, persistence: bool):
    if MOSQUITTO is None:
        pytest.skip("mosquitto binary not installed")
    directory = tmp_path / "broker"
    directory.mkdir()
    broker = Broker(directory, persistence=persistence)
    broker.start()
    return broker


@pytest.fixture
def broker(tmp_path):
    b = _broker(tmp_path, persistence=False)
    yield b
    b.stop()


@pytest.fixture
def persistent_broker(tmp_path):
    b = _broker(tmp_path, persistence=True)
    yield b
    b.stop()


@dataclass
class Received:
    topic: str
    payload: bytes
    props: dict[str, str] = field(default_factory=dict)
    retain: bool = False
    correlation: bytes | None = None

    def json(self):
        return json.loads(self.payload)


class Subscriber:
    """A paho v5 client recording every message; ``persistent`` keeps its session across broker restarts."""

    def __init__(self, port: int, topics: list[str], *, client_id: str = "", persistent: bool = False) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        self.messages: list[Received] = []
        self.lock = threading.Lock()
        self.topics = topics
        self.subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id or f"t-{time.monotonic_ns()}",
                                  protocol=mqtt.MQTTv5)
        self.client.reconnect_delay_set(1, 1)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *a: self.subscribed.set()
        props = None
        if persistent:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = 600
        self.client.connect("127.0.0.1", port, keepalive=10, clean_start=not persistent, properties=props)
        self.client.loop_start()
        assert self.subscribed.wait(20), "subscriber never got its SUBACK"

    def _on_connect(self, client, _ud, _flags, _rc, _props) -> None:
        for t in self.topics:
            client.subscribe(t, qos=1)

    def _on_message(self, _client, _ud, msg) -> None:
        props = {}
        corr = None
        if msg.properties is not None:
            props = dict(getattr(msg.properties, "UserProperty", []) or [])
            corr = getattr(msg.properties, "CorrelationData", None)
        with self.lock:
            self.messages.append(Received(msg.topic, bytes(msg.payload), props, bool(msg.retain), corr))

    def matching(self, predicate) -> list[Received]:
        with self.lock:
            return [m for m in self.messages if predicate(m)]

    def on(self, suffix: str) -> list[Received]:
        return self.matching(lambda m: m.topic.endswith(suffix))

    def publish(self, topic: str, payload: bytes, *, response_topic: str | None = None,
                correlation: bytes | None = None, retain: bool = False) -> None:
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        props = None
        if response_topic is not None or correlation is not None:
            props = Properties(PacketTypes.PUBLISH)
            if response_topic is not None:
                props.ResponseTopic = response_topic
            if correlation is not None:
                props.CorrelationData = correlation
        self.client.publish(topic, payload, qos=1, retain=retain, properties=props).wait_for_publish(20)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def subscribers():
    made: list[Subscriber] = []

    def make(*args, **kwargs) -> Subscriber:
        s = Subscriber(*args, **kwargs)
        made.append(s)
        return s
    yield make
    for s in made:
        s.close()


def write_config(path: Path, port: int, *, device: str, fields: int = 6, scan_on_start: bool = False,
                 protocol: str = "5", extra: str = "", mqtt_extra: str = "") -> Path:
    state = path.parent / f"state-{device}"
    path.write_text(f"""
[device]
id = "{device}"
[simulation]
realtime = false
[output]
fsync = false
[camera]
width_px = 640
height_px = 400
[stack]
planes = 3
[scan]
fields = {fields}
[mqtt]
host = "127.0.0.1"
port = {port}
protocol = "{protocol}"
keepalive_s = 5
reconnect_min_s = 1
reconnect_max_s = 2
{mqtt_extra}
[daemon]
state_dir = "{state}"
out_dir = "{state}/scans"
telemetry_interval_s = 0.5
disk_floor_mb = 1
scan_on_start = {"true" if scan_on_start else "false"}
{extra}
""")
    return path


def cli_env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1", **extra}


class DaemonProc:
    def __init__(self, config: Path, *, env: dict[str, str] | None = None) -> None:
        self.config = config
        self.log_path = config.with_suffix(f".{time.monotonic_ns()}.log")
        log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "agent", "run", "--config", str(config)],
                                     cwd=REPO, env=env or cli_env(), stdout=log, stderr=log)
        log.close()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout_s: float = WAIT_S) -> int:
        return self.proc.wait(timeout_s)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)


@pytest.fixture
def daemons():
    made: list[DaemonProc] = []

    def make(*args, **kwargs) -> DaemonProc:
        d = DaemonProc(*args, **kwargs)
        made.append(d)
        return d
    yield make
    for d in made:
        d.kill()


def run_tool(*args: str, timeout_s: float = 120, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=REPO, env=env or cli_env(), capture_output=True,
                          text=True, timeout=timeout_s)


def fields_of(sub: Subscriber, device: str, test_id: str) -> list[Received]:
    return sub.matching(lambda m: m.topic.startswith(f"wbcscope/v1/{device}/tests/{test_id}/fields/"))


def scans_dir(config: Path, device: str) -> Path:
    return config.parent / f"state-{device}" / "scans"

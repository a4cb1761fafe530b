"""``wbcscope run``: the long-running edge daemon.

Threads: paho's network thread (only enqueues events), one scan thread at a time (ScanSession; commits
each field to the outbox and enqueues an event), and the main thread, which owns everything else: it
reads the event queue, publishes (status, telemetry, outbox rows, command replies), pings the systemd
watchdog and decides what to do on SIGTERM. Only the main thread calls the MQTT link, so the outbox's
Forwarder sees every PUBACK after the publish call that produced it.

The watchdog pings prove both threads alive: the main thread sends them, and only while the scan thread
(if one runs) has beaten its heartbeat within ``daemon.scan_stall_s``. A scan stuck in a hardware call
thus stops the pings and systemd restarts the service (``WatchdogSec=``, ``Restart=on-failure``).
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from pathlib import Path
from typing import Any

from agent import __version__
from agent.config import Settings, load_settings
from agent.errors import ConfigError, WbcscopeError
from agent.publish.control import Command, CommandError, parse_command, reply, reply_topic_ok, request_id_of
from agent.publish.health import ScanState, SerialErrorTally, cpu_temp_c
from agent.publish.messages import SUMMARY_INDEX, ResultQueue, read_manifest
from agent.publish.mqtt import Event, MqttLink, topic
from agent.publish.outbox import (OUTBOX_FILE, DiskFloorError, Forwarder, Outbox, check_disk_floor,
                                  default_state_dir, free_mb)
from agent.publish.sdnotify import Notifier
from agent.results.record import FieldRecord
from firmware_interface.errors import StageError

log = logging.getLogger(__name__)

MAX_CORRELATION_BYTES = 256
SHUTDOWN_SCAN_WAIT_S = 60.0
"""How long SIGTERM waits for the current field (systemd's TimeoutStopSec= must be longer)."""
FLUSH_TIMEOUT_S = 5.0


class Daemon:
    def __init__(self, settings: Settings, *, config_path: Path | None = None,
                 overrides: dict[str, Any] | None = None, stop: threading.Event | None = None,
                 notifier: Notifier | None = None) -> None:
        from agent.session import device_id

        if not settings.mqtt.host:
            raise ConfigError("wbcscope run needs a broker: set mqtt.host in the config file")
        self.settings = settings
        self.config_path = config_path
        self.overrides = dict(overrides or {})
        self.device = device_id(settings)
        self.stop = stop or threading.Event()
        self.notifier = notifier or Notifier()
        self.events: queue.Queue[Event] = queue.Queue()
        d = settings.daemon
        self.state_dir = Path(d.state_dir) if d.state_dir else default_state_dir()
        self.out_dir = Path(d.out_dir) if d.out_dir else self.state_dir / "scans"
        self.state = "starting"
        self.last_error = ""
        self.serial = SerialErrorTally()
        """Serial-link errors counted by the stage drivers (``stage.serial_errors``), None if they keep none."""
        self._broker_problem = ""
        self._logged_problems: set[str] = set()  # broker problems already in the log since the last connect
        self.hardware: dict[str, Any] = {}
        self.models: dict[str, str] = {}
        self.scan = ScanState()
        self.scan_stop = threading.Event()
        self._scan_thread: threading.Thread | None = None
        self._started = time.monotonic()
        self.outbox: Outbox | None = None
        self.link: MqttLink | None = None
        self.forwarder: Forwarder | None = None
        self._offline_mid: int | None = None
        self._offline_acked = False
        self._next_watchdog = 0.0

    # -- lifecycle -------------------------------------------------------------------------------------
    def run(self) -> int:
        try:
            self._start()
            self._loop()
        finally:
            self._shutdown()
        return 0

    def _start(self) -> None:
        self.notifier.status("starting: outbox, camera, stage, models")
        stall_s = self.settings.daemon.scan_stall_s
        if 0 < stall_s <= self.settings.stage.move_timeout_s:
            log.warning("daemon.scan_stall_s = %g is not above stage.move_timeout_s = %g: a slow but healthy "
                        "field may be taken for a stuck scan", stall_s, self.settings.stage.move_timeout_s)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.outbox = Outbox(self.state_dir / OUTBOX_FILE)
        self._probe_hardware()
        queued = self._reconcile()
        will = json.dumps({"online": False, "state": "offline", "device": self.device}).encode()
        self.link = MqttLink(self.settings.mqtt, self.device, self.events, will=(topic(self.device, "status"), will))
        self.forwarder = Forwarder(self.link, self.outbox, window=self.settings.mqtt.max_inflight)
        self.link.start()
        self.state = "idle"
        self._check_disk()
        self.notifier.ready(f"{self.state}; outbox {self.outbox.depth()} ({queued} recovered)")
        if self.settings.daemon.scan_on_start:
            try:
                self._start_scan({})
            except WbcscopeError as exc:
                self.last_error = str(exc)
                log.error("scan on start refused: %s", exc)

    def _probe_hardware(self) -> None:
        """Open camera and stage once and load the models, so READY=1 means they work."""
        from agent.assembly import build_analyzer, open_microscope

        analyzer = build_analyzer(self.settings)
        self.models = {"detector": analyzer.detector.name, "classifier": analyzer.classifier.name}
        with open_microscope(self.settings) as scope:
            cam = self.settings.camera
            self.hardware = {
                "camera": cam.backend, "frame_px": [cam.width_px, cam.height_px], "um_per_px": cam.um_per_px,
                "stage": self.settings.stage.dialect,
                "firmware": f"{scope.firmware.dialect} {scope.firmware.version}",
                "simulated": self.settings.stage.port == "emulator",
            }
            self.serial.add_final(scope.stage)

    def _reconcile(self) -> int:
        """Queue results written to disk but never committed to the outbox (killed between the two)."""
        queued = 0
        for test_dir in sorted(p for p in self.out_dir.iterdir() if p.is_dir()):
            if SUMMARY_INDEX in self.outbox.enqueued_indexes(test_dir.name):
                continue  # the summary goes in last, so everything before it is queued
            try:
                status = read_manifest(test_dir).get("status")
                rq = ResultQueue(self.outbox, test_dir)
                queued += rq.add_missing()
                if status in ("complete", "interrupted", "failed"):
                    rq.add_summary()
                    queued += 1
            except WbcscopeError as exc:
                log.warning("skipping %s while recovering results: %s", test_dir, exc)
        return queued

    def _loop(self) -> None:
        interval = self.settings.daemon.telemetry_interval_s
        next_telemetry = self._next_watchdog = time.monotonic()
        while not self.stop.is_set():
            now = time.monotonic()
            due = min(next_telemetry, self._next_watchdog if self.notifier.watchdog_interval_s else next_telemetry)
            try:
                event = self.events.get(timeout=min(0.5, max(0.0, due - now)))
            except queue.Empty:
                event = None
            if event is not None:
                self._handle(event)
            now = time.monotonic()
            self._tick_watchdog(now)
            if now >= next_telemetry:
                self._check_disk()
                self._publish(topic(self.device, "telemetry"), self.telemetry(), retain=True)
                next_telemetry = now + interval

    def _shutdown(self) -> None:
        self.notifier.stopping("stopping: finishing the current field")
        self.stop.set()
        self.scan_stop.set()
        self._set_state("stopping")
        thread = self._scan_thread
        if thread is not None:
            self._serve_until(lambda: not thread.is_alive(), SHUTDOWN_SCAN_WAIT_S)
            thread.join(timeout=1.0)
        if self.forwarder is not None and self.link is not None and self.link.connected:
            self.forwarder.pump()
            self._serve_until(lambda: self.outbox.depth() == 0, FLUSH_TIMEOUT_S)
            offline = {"online": False, "state": "offline", "device": self.device, "time": _utc()}
            self._offline_mid = self._publish(topic(self.device, "status"), offline, retain=True, qos=1)
            # Wait for its PUBACK: disconnecting at once could drop it from paho's send buffer.
            self._serve_until(lambda: self._offline_acked, FLUSH_TIMEOUT_S)
        if self.link is not None:
            self.link.close()
        if self.outbox is not None:
            self.outbox.close()
        self.notifier.close()

    def _serve_until(self, done, timeout_s: float) -> None:
        """Keep handling events (PUBACKs, scan completion) until ``done()`` or the timeout."""
        deadline = time.monotonic() + timeout_s
        while not done() and time.monotonic() < deadline:
            self._tick_watchdog(time.monotonic())
            try:
                event = self.events.get(timeout=0.1)
            except queue.Empty:
                continue
            if event.kind != "message":  # no new commands while stopping
                self._handle(event)

    # -- watchdog ----------------------------------------------------------------------------------------
    def _tick_watchdog(self, now: float) -> None:
        """Ping systemd's watchdog when due, unless the scan thread has stalled."""
        alive = self._scan_alive()
        interval = self.notifier.watchdog_interval_s
        if interval and alive and now >= self._next_watchdog:
            self.notifier.watchdog()
            self._next_watchdog = now + interval

    def _scan_alive(self) -> bool:
        """False while the running scan has shown no sign of life for longer than daemon.scan_stall_s."""
        bound = self.settings.daemon.scan_stall_s
        silent = self.scan.silent_s() if self._scan_thread is not None else 0.0
        stalled = bound > 0 and silent > bound
        if stalled and self.state == "scanning":
            restart = ("watchdog pings stopped, systemd restarts the service" if self.notifier.watchdog_interval_s
                       else "no systemd watchdog is set to restart the service")
            self.last_error = (f"scan {self.scan.snapshot()['test_id']} stalled: no progress for {silent:.0f} s "
                               f"(daemon.scan_stall_s = {bound:g}); {restart}")
            log.error("%s", self.last_error)
            self._set_state("scan_stalled")
        elif not stalled and self.state == "scan_stalled":
            log.warning("scan %s is making progress again", self.scan.snapshot()["test_id"])
            self._set_state("scanning")
        return not stalled

    # -- events ------------------------------------------------------------------------------------------
    def _handle(self, event: Event) -> None:
        if event.kind == "connected" and event.ok:
            if self._broker_problem:
                log.warning("MQTT: connected to %s:%s again", self.settings.mqtt.host, self.settings.mqtt.port)
                self._broker_problem = ""
                self.notifier.status(self._status_line())
            self._logged_problems.clear()
            # Birth first, then the backlog (the Forwarder pumps on the same event below).
            self.link.subscribe(topic(self.device, "cmd"), qos=1)
            self._publish_status()
        self.forwarder.on_event(event)
        if event.kind == "puback" and event.mid == self._offline_mid:
            self._offline_acked = True
        if event.connection_trouble:
            self._broker_trouble(event.reason)
        elif event.kind == "disconnected" and not self._broker_problem:
            # (after a refused connect the broker hangs up too: the refusal is the news, not this)
            m = self.settings.mqtt
            self._broker_trouble(f"connection to {m.host}:{m.port} lost ({event.reason}), reconnecting",
                                 level=logging.WARNING)
        elif event.kind == "outbox":
            self.forwarder.pump()
        elif event.kind == "message":
            self._on_command(event)
        elif event.kind == "scan_done":
            self._scan_thread = None
            if self.state in ("scanning", "scan_stalled"):
                self._set_state("idle")
            self.forwarder.pump()
        elif event.kind == "disk_floor":
            self.last_error = event.reason
            self._set_state("paused_disk_floor")

    def _broker_trouble(self, line: str, *, level: int = logging.ERROR) -> None:
        """A failed connect or a lost connection: one log line per problem until the next successful connect
        (two problems taking turns, e.g. a refused login and a slow handshake, do not fill the journal);
        systemd's STATUS= says the latest until then."""
        if line not in self._logged_problems:
            self._logged_problems.add(line)
            log.log(level, "MQTT: %s; results wait in the outbox", line)
        self._broker_problem = line  # not last_error: that would hide a stall or the disk floor
        self.notifier.status(self._status_line())

    def _status_line(self) -> str:
        line = self.state
        if self.state in ("paused_disk_floor", "scan_stalled"):
            line += f": {self.last_error}"
        if self._broker_problem and self.outbox is not None:
            line += f"; MQTT: {self._broker_problem}; outbox {self.outbox.depth()} waiting"
        return line

    def _on_command(self, event: Event) -> None:
        if event.retain:
            log.warning("ignoring a retained command on %s", event.topic)  # it would replay on every connect
            return
        default_reply = topic(self.device, "cmd", "reply")
        reply_to, correlation = default_reply, None
        command: Command | None = None
        try:
            if self.link.v5:
                if event.correlation is not None and len(event.correlation) > MAX_CORRELATION_BYTES:
                    raise CommandError(f"correlation data longer than {MAX_CORRELATION_BYTES} bytes")
                correlation = event.correlation
                if event.response_topic and not reply_topic_ok(event.response_topic):
                    raise CommandError("response topic must be a plain topic name (no wildcards, <= 256 bytes)")
                reply_to = event.response_topic or default_reply
            command = parse_command(event.payload, max_bytes=self.settings.daemon.command_max_bytes)
            body = reply(command, ok=True, result=self._execute(command))
        except (WbcscopeError, StageError) as exc:
            rid = request_id_of(event.payload) if len(event.payload) <= self.settings.daemon.command_max_bytes else None
            body = reply(command, ok=False, error=str(exc)[:500], request_id=rid)
        self.link.publish(reply_to, body, qos=1, correlation=correlation)

    def _execute(self, command: Command) -> dict[str, Any]:
        if command.name == "ping":
            return {"pong": True, "time": _utc()}
        if command.name == "status":
            return self.telemetry()
        if command.name == "stop":
            scanning = self._scan_thread is not None
            self.scan_stop.set()
            return {"stopping": self.scan.snapshot()["test_id"] if scanning else None}
        return self._start_scan(command.params)

    # -- scans -------------------------------------------------------------------------------------------
    def _start_scan(self, params: dict[str, Any]) -> dict[str, Any]:
        from agent.session import TEST_ID, default_test_id, load_resume, plan_for

        if self._scan_thread is not None:
            raise CommandError(f"busy: scanning {self.scan.snapshot()['test_id']}")
        try:
            check_disk_floor(self.out_dir, self.settings.daemon.disk_floor_mb)
        except DiskFloorError as exc:
            self.last_error = str(exc)
            self._set_state("paused_disk_floor")
            raise CommandError(str(exc)) from None
        test_id = params.get("test_id", "")
        if test_id and not TEST_ID.match(test_id):
            raise CommandError("test_id must match [A-Za-z0-9_-]{1,64}")
        if params.get("resume"):
            if not test_id:
                raise CommandError("resume needs a test_id")
            settings, manifest = load_resume(self.out_dir / test_id)
        else:
            overrides = dict(self.overrides)
            for key, setting in (("fields", "scan.fields"), ("wbc_target", "scan.wbc_target"),
                                 ("sample_id", "test.sample_id"), ("operator", "test.operator")):
                if key in params:
                    overrides[setting] = params[key]
            settings = load_settings(self.config_path, overrides)
            test_id = test_id or default_test_id(settings)
            if (self.out_dir / test_id / "manifest.json").exists():
                raise CommandError(f"test {test_id} already exists; use resume or another test_id")
            manifest = None
        test_dir = self.out_dir / test_id
        planned = len(plan_for(settings))
        self.scan_stop.clear()
        self.scan.reset(test_id)
        self._scan_thread = threading.Thread(target=self._scan_worker, name="scan", daemon=True,
                                             args=(settings, test_dir, manifest))
        self._set_state("scanning")
        self._scan_thread.start()
        return {"test_id": test_id, "fields_planned": planned}

    def _scan_worker(self, settings: Settings, test_dir: Path, manifest: dict | None) -> None:
        from agent.session import ScanSession

        results = ResultQueue(self.outbox, test_dir)
        floor_mb = self.settings.daemon.disk_floor_mb

        def on_record(record: FieldRecord) -> None:
            results.add_field(record)  # committed before anyone tries to publish it
            self.scan.add(record)
            self.events.put(Event("outbox"))
            try:
                check_disk_floor(test_dir, floor_mb)
            except DiskFloorError as exc:
                self.scan_stop.set()  # pause after this field rather than risk the next one
                self.events.put(Event("disk_floor", reason=str(exc)))

        reason, duration_s = "", None
        session = ScanSession(settings, test_dir, manifest=manifest, stop_event=self.scan_stop,
                              on_progress=self.scan.progress, on_record=on_record)
        # The stage is opened inside run(); a ScanSession exposing it as ``.stage`` lets telemetry count
        # its serial-link errors live (read defensively: None until the driver keeps the counter).
        self.serial.watch(lambda: getattr(session, "stage", None))
        try:
            summary = session.run()
            reason, duration_s = summary.stop_reason, summary.elapsed_s
        except StageError as exc:
            reason = self.last_error = f"stage: {exc}"
        except WbcscopeError as exc:
            reason = self.last_error = str(exc)
        finally:
            self.serial.retire()
            self.scan.finish()
            try:
                results.add_summary(duration_s=duration_s, stop_reason=reason)
            except WbcscopeError as exc:
                log.error("no summary for %s: %s", test_dir.name, exc)
            self.events.put(Event("scan_done", reason=reason))

    # -- publishing --------------------------------------------------------------------------------------
    def telemetry(self) -> dict[str, Any]:
        return {
            "device": self.device, "state": self.state, **self.scan.snapshot(),
            "outbox_depth": self.outbox.depth() if self.outbox else 0,
            "disk_free_mb": round(free_mb(self.out_dir), 1), "cpu_temp_c": cpu_temp_c(),
            "serial_errors": self.serial.total(), "last_error": self.last_error or None,
            "uptime_s": round(time.monotonic() - self._started, 1), "time": _utc(),
        }

    def _check_disk(self) -> None:
        try:
            check_disk_floor(self.out_dir, self.settings.daemon.disk_floor_mb)
        except DiskFloorError as exc:
            self.last_error = str(exc)
            if self._scan_thread is None:
                self._set_state("paused_disk_floor")
            return
        if self.state == "paused_disk_floor":
            self._set_state("idle")

    def _set_state(self, state: str) -> None:
        if state == self.state:
            return
        self.state = state
        self.notifier.status(self._status_line())
        self._publish_status()

    def _publish_status(self) -> None:
        if self.state == "stopping":
            return  # the offline message follows; a retained "stopping" would outlive us
        body = {"online": True, "state": self.state, "device": self.device, "software": __version__,
                "models": self.models, "hardware": self.hardware, "test_id": self.scan.snapshot()["test_id"],
                "time": _utc()}
        self._publish(topic(self.device, "status"), body, retain=True, qos=1)

    def _publish(self, topic_name: str, body: dict[str, Any], *, retain: bool = False, qos: int = 0) -> int | None:
        if self.link is None or not self.link.connected:
            return None  # state, not results: the next connect publishes a fresh one
        return self.link.publish(topic_name, json.dumps(body, separators=(",", ":")).encode(), qos=qos,
                                 retain=retain)


def _utc() -> str:
    from agent.session import utc_now

    return utc_now()

"""MQTT and the disk-space floor for a command-line ``wbcscope scan``.

``ScanPublisher`` gives ``ScanSession`` an ``on_record`` hook. Without ``[mqtt]`` it only enforces the
disk floor. With ``[mqtt]`` every field is committed to the device's outbox and a background thread
publishes while the scan runs; whatever the broker has not acknowledged when the scan ends stays in the
outbox for the daemon (``wbcscope run``) to send. An unreachable broker therefore only delays results.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from pathlib import Path

from agent.config import Settings
from agent.errors import WbcscopeError
from agent.publish.outbox import OUTBOX_FILE, Forwarder, Outbox, check_disk_floor, default_state_dir
from agent.results.record import FieldRecord

log = logging.getLogger(__name__)


class ScanPublisher:
    def __init__(self, settings: Settings, test_dir: Path, *, flush_timeout_s: float = 5.0) -> None:
        self.settings = settings
        self.test_dir = Path(test_dir)
        self.flush_timeout_s = flush_timeout_s
        self.outbox: Outbox | None = None
        self._results = None
        self._link = None
        self._forwarder: Forwarder | None = None
        self._events: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False

    def open(self) -> "ScanPublisher":
        """Refuse to start below the disk floor; connect in the background when a broker is configured."""
        check_disk_floor(self.test_dir, self.settings.daemon.disk_floor_mb)
        if not self.settings.mqtt.host:
            return self
        from agent.publish.messages import ResultQueue
        from agent.publish.mqtt import MqttLink
        from agent.session import device_id

        d = self.settings.daemon
        state_dir = Path(d.state_dir) if d.state_dir else default_state_dir()
        self.outbox = Outbox(state_dir / OUTBOX_FILE)
        self._results = ResultQueue(self.outbox, self.test_dir)
        # Its own client id: reusing the daemon's would make the broker disconnect the daemon.
        self._link = MqttLink(self.settings.mqtt, f"{device_id(self.settings)}-scan", self._events)
        self._forwarder = Forwarder(self._link, self.outbox, window=self.settings.mqtt.max_inflight)
        self._link.start()
        self._thread = threading.Thread(target=self._pump_loop, name="mqtt-publish", daemon=True)
        self._thread.start()
        return self

    def on_record(self, record: FieldRecord) -> None:
        """ScanSession's hook (scan thread): commit, wake the publisher, then check the floor."""
        if self._results is not None:
            self._results.add_field(record)
            self._events.put(_wake())
        # Raising here stops the scan after this (already durable) field with a clear message.
        check_disk_floor(self.test_dir, self.settings.daemon.disk_floor_mb)

    def _pump_loop(self) -> None:
        # The Forwarder's pump and its PUBACK handling must share one thread: this one.
        problem = ""
        while not self._stop.is_set():
            try:
                event = self._events.get(timeout=0.2)
            except queue.Empty:
                continue
            if event.connection_trouble and event.reason != problem:
                problem = event.reason
                log.warning("MQTT: %s; results wait in the outbox", problem)
            try:
                if event.kind == "outbox":
                    self._forwarder.pump()
                else:
                    self._forwarder.on_event(event)
            except WbcscopeError as exc:
                log.error("publishing paused: %s", exc)  # results stay in the outbox

    def close(self) -> None:
        """Queue the summary, give the broker a moment to take what is waiting, disconnect. Safe twice."""
        if self._closed:
            return
        self._closed = True
        if self._results is not None:
            try:
                self._results.add_summary()
            except WbcscopeError as exc:
                log.error("no summary queued for %s: %s", self.test_dir.name, exc)
            self._events.put(_wake())
            deadline = time.monotonic() + self.flush_timeout_s
            while self.outbox.depth() > 0 and self._link.connected and time.monotonic() < deadline:
                time.sleep(0.05)
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        if self._link is not None:
            self._link.close()
        if self.outbox is not None:
            left = self.outbox.depth()
            if left:
                log.warning("%d result message(s) wait in %s for the daemon or `wbcscope publish`", left,
                            self.outbox.path)
            self.outbox.close()

    def __enter__(self) -> "ScanPublisher":
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()


def _wake():
    from agent.publish.mqtt import Event

    return Event("outbox")

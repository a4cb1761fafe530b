"""``wbcscope fleet``: every device under a broker, from their retained status and telemetry messages.

The view only subscribes; it never publishes, so any number of operators can watch at once. Devices
are discovered from ``wbcscope/v1/+/status`` (retained birth or will) and ``wbcscope/v1/+/telemetry``
(retained, refreshed every telemetry interval). The live view subscribes again after every reconnect
(the broker keeps no session for it) and says in its header while the broker is unreachable.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import queue
import sys
import threading
import time
from typing import Any

from agent.config import MqttSettings
from agent.publish.mqtt import PREFIX, MqttError, MqttLink

CONNECT_TIMEOUT_S = 10.0


class FleetView:
    """Folds status and telemetry messages into one row per device."""

    def __init__(self) -> None:
        self.devices: dict[str, dict[str, Any]] = {}
        self.broker_problem = ""
        """Empty while connected; else why not (shown in the live view's header)."""

    def update(self, topic_name: str, payload: bytes) -> None:
        parts = topic_name.split("/")
        if len(parts) != 4 or "/".join(parts[:2]) != PREFIX or parts[3] not in ("status", "telemetry"):
            return
        try:
            body = json.loads(payload.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            return  # someone else's junk on our topics must not break the view
        if not isinstance(body, dict):
            return
        row = self.devices.setdefault(parts[2], {"device": parts[2]})
        if parts[3] == "status":
            row["online"] = bool(body.get("online"))
            row["software"] = body.get("software")
            row["state"] = body.get("state") if row["online"] else "offline"
        else:
            row["telemetry"] = body
            if row.get("online", True):
                row["state"] = body.get("state", row.get("state"))
        stamp = body.get("time")
        if isinstance(stamp, str) and stamp > row.get("last_seen", ""):
            row["last_seen"] = stamp

    def rows(self) -> list[dict[str, Any]]:
        out = []
        now = dt.datetime.now(dt.timezone.utc)
        for name in sorted(self.devices):
            row = self.devices[name]
            tel = row.get("telemetry", {})
            planned = tel.get("fields_planned") or 0
            done = tel.get("fields_done") or 0
            out.append({
                "device": name, "online": row.get("online", False), "state": row.get("state", "unknown"),
                "software": row.get("software"), "test_id": tel.get("test_id"),
                "fields_done": done, "fields_planned": planned,
                "progress_pct": round(100.0 * done / planned, 1) if planned else None,
                "fields_per_min": tel.get("fields_per_min"), "wbc": tel.get("wbc"),
                "counts": tel.get("counts", {}), "outbox_depth": tel.get("outbox_depth"),
                "last_seen": row.get("last_seen"), "last_seen_s_ago": _age_s(row.get("last_seen"), now),
            })
        return out


def _age_s(stamp: str | None, now: dt.datetime) -> float | None:
    if not stamp:
        return None
    try:
        then = dt.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return None
    return round((now - then).total_seconds(), 1)


def _subscribe(link: MqttLink) -> None:
    link.subscribe(f"{PREFIX}/+/status", qos=1)
    link.subscribe(f"{PREFIX}/+/telemetry", qos=0)


def _connect(settings: MqttSettings, events: queue.Queue) -> MqttLink:
    """Connect and subscribe; a refused login or certificate fails at once, anything else after a while."""
    link = MqttLink(settings, f"wbcscope-fleet-{os.getpid()}", events)
    link.start()
    deadline = time.monotonic() + CONNECT_TIMEOUT_S
    problem = ""
    while time.monotonic() < deadline:
        try:
            event = events.get(timeout=0.2)
        except queue.Empty:
            continue
        if event.kind == "connected" and event.ok:
            _subscribe(link)
            return link
        if event.connection_trouble:
            problem = event.reason
            if event.fatal:
                link.close()
                raise MqttError(problem)
    link.close()
    raise MqttError(f"cannot reach the broker {settings.host}:{settings.port} within {CONNECT_TIMEOUT_S:.0f} s"
                    + (f" ({problem})" if problem else ""))


def _drain(events: queue.Queue, view: FleetView, until: float, link: MqttLink | None = None) -> None:
    while True:
        remaining = until - time.monotonic()
        if remaining <= 0:
            return
        try:
            event = events.get(timeout=remaining)
        except queue.Empty:
            return
        if event.kind == "message":
            view.update(event.topic, event.payload)
        elif event.kind == "connected" and event.ok:
            view.broker_problem = ""
            if link is not None:
                _subscribe(link)  # a reconnect starts without our subscriptions
        elif event.connection_trouble:
            view.broker_problem = event.reason
        elif event.kind == "disconnected":
            view.broker_problem = f"connection lost ({event.reason}), reconnecting"


def collect(settings: MqttSettings, *, wait_s: float = 1.5) -> list[dict[str, Any]]:
    """One snapshot: subscribe, take the retained messages that arrive within ``wait_s``, disconnect."""
    if not settings.host:
        raise MqttError("fleet needs a broker: set mqtt.host in the config file")
    events: queue.Queue = queue.Queue()
    link = _connect(settings, events)
    view = FleetView()
    try:
        _drain(events, view, time.monotonic() + wait_s)
    finally:
        link.close()
    return view.rows()


def render(rows: list[dict[str, Any]]) -> str:
    head = f"{'device':<24} {'online':<7} {'state':<18} {'test':<28} {'fields':>11} {'f/min':>6} {'WBC':>5}  last seen"
    lines = [head, "-" * len(head)]
    for r in rows:
        fields = f"{r['fields_done']}/{r['fields_planned']}" if r["fields_planned"] else "-"
        age = f"{r['last_seen_s_ago']:.0f} s ago" if r["last_seen_s_ago"] is not None else "-"
        lines.append(f"{r['device'][:24]:<24} {'yes' if r['online'] else 'no':<7} {str(r['state'])[:18]:<18} "
                     f"{str(r['test_id'] or '-')[:28]:<28} {fields:>11} {r['fields_per_min'] or 0:>6} "
                     f"{r['wbc'] if r['wbc'] is not None else '-':>5}  {age}")
        if r["counts"]:
            lines.append(" " * 26 + "  ".join(f"{k} {v}" for k, v in sorted(r["counts"].items())))
    if not rows:
        lines.append("(no wbcscope devices seen on this broker)")
    return "\n".join(lines)


def header(settings: MqttSettings, view: FleetView) -> str:
    state = f"broker trouble: {view.broker_problem}" if view.broker_problem else "connected"
    return (f"wbcscope fleet - {settings.host}:{settings.port} {state} - {len(view.devices)} device(s) - "
            f"{dt.datetime.now().strftime('%H:%M:%S')} - Ctrl-C quits")


def watch(settings: MqttSettings, *, refresh_s: float = 1.0, stop: threading.Event | None = None) -> int:
    """The live view: redraw every ``refresh_s`` until Ctrl-C (or ``stop``); returns 0 either way."""
    if not settings.host:
        raise MqttError("fleet needs a broker: set mqtt.host in the config file")
    stop = stop or threading.Event()
    events: queue.Queue = queue.Queue()
    link = _connect(settings, events)
    view = FleetView()
    try:
        while not stop.is_set():
            _drain(events, view, time.monotonic() + refresh_s, link)
            # Clear the screen and home the cursor: a full redraw keeps the view simple and correct.
            sys.stdout.write("\x1b[2J\x1b[H" + header(settings, view) + "\n\n" + render(view.rows()) + "\n")
            sys.stdout.flush()
    except KeyboardInterrupt:
        sys.stdout.write("\n")
    finally:
        link.close()
    return 0


"""Store-and-forward: every result is committed to SQLite before it is published, and deleted only when
the broker has acknowledged it (PUBACK).

A kill, a power cut or a broker outage therefore never loses a result; it may send one twice, which
QoS 1 allows and the message id user property makes recognisable. Rows are published in insertion order;
paho itself retransmits what it was handed if the connection drops, so within one process each row is
handed over once, and after a restart whatever is still in the table is handed over again.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path

from agent.errors import OutputError, WbcscopeError

log = logging.getLogger(__name__)

OUTBOX_FILE = "outbox.sqlite3"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    qos INTEGER NOT NULL,
    retain INTEGER NOT NULL,
    user_properties TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS enqueued (
    test_id TEXT NOT NULL,
    image_index INTEGER NOT NULL,
    PRIMARY KEY (test_id, image_index)
);
"""


class DiskFloorError(WbcscopeError, OSError):
    """Free disk space is below the configured floor; scanning pauses rather than risking results."""


def free_mb(path: Path) -> float:
    """Free space for unprivileged writers on the file system holding ``path`` (or its nearest parent)."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free / 1e6


def check_disk_floor(path: Path, floor_mb: float) -> float:
    """Raise DiskFloorError when less than ``floor_mb`` is free where ``path`` lives; else return free MB."""
    free = free_mb(path)
    if floor_mb > 0 and free < floor_mb:
        raise DiskFloorError(
            f"only {free:.0f} MB free on the disk holding {path} (floor: daemon.disk_floor_mb = {floor_mb:.0f} MB);"
            " scanning paused, free some space"
        )
    return free


@dataclass(frozen=True)
class OutboxMessage:
    id: int
    topic: str
    payload: bytes
    qos: int
    retain: bool
    user_properties: dict[str, str]


class Outbox:
    """The SQLite (WAL) queue. Thread-safe: the scan thread adds, the publishing thread reads and deletes."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # isolation_level=None: we issue BEGIN/COMMIT ourselves so each put is one durable transaction.
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=10.0)
            self._db.execute("PRAGMA journal_mode=WAL")
            # FULL: a committed result survives a power cut, not only a crash of this process.
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
        except (sqlite3.Error, OSError) as exc:
            raise OutputError(f"cannot open the outbox {self.path}: {exc}") from None
        self._lock = threading.Lock()
        self._closed = False

    def put(self, topic_name: str, payload: bytes, *, qos: int = 1, retain: bool = False,
            user_properties: dict[str, str] | None = None, field_key: tuple[str, int] | None = None) -> int:
        """Commit one message (and, for a field, its ledger row) in one transaction; returns its row id."""
        props = json.dumps(user_properties or {}, separators=(",", ":"))
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                cur = self._db.execute(
                    "INSERT INTO messages (topic, payload, qos, retain, user_properties) VALUES (?, ?, ?, ?, ?)",
                    (topic_name, payload, qos, int(retain), props))
                if field_key is not None:
                    self._db.execute("INSERT OR IGNORE INTO enqueued (test_id, image_index) VALUES (?, ?)", field_key)
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback()
                raise OutputError(f"cannot write to the outbox {self.path}: {exc}") from None
            return int(cur.lastrowid)

    def pending(self, after_id: int = 0, limit: int = 100) -> list[OutboxMessage]:
        with self._lock:
            rows = self._query(
                "SELECT id, topic, payload, qos, retain, user_properties FROM messages WHERE id > ? ORDER BY id LIMIT ?",
                (after_id, limit))
        return [OutboxMessage(r[0], r[1], bytes(r[2]), r[3], bool(r[4]), json.loads(r[5])) for r in rows]

    def delete(self, row_id: int) -> None:
        with self._lock:
            try:
                self._db.execute("DELETE FROM messages WHERE id = ?", (row_id,))
            except sqlite3.Error as exc:
                raise OutputError(f"cannot update the outbox {self.path}: {exc}") from None

    def depth(self) -> int:
        with self._lock:
            return int(self._query("SELECT COUNT(*) FROM messages", ())[0][0])

    def enqueued_indexes(self, test_id: str) -> set[int]:
        """Image indexes of ``test_id`` already committed here (published or still waiting)."""
        with self._lock:
            rows = self._query("SELECT image_index FROM enqueued WHERE test_id = ?", (test_id,))
        return {int(r[0]) for r in rows}

    def _query(self, sql: str, params: tuple) -> list[tuple]:
        try:
            return self._db.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise OutputError(f"cannot read the outbox {self.path}: {exc}") from None

    def _rollback(self) -> None:
        try:
            self._db.execute("ROLLBACK")
        except sqlite3.Error:
            pass  # no transaction was open; the original error is reported

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._db.close()

    def __enter__(self) -> "Outbox":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Forwarder:
    """Moves outbox rows to the MQTT link and deletes them on PUBACK.

    ``pump`` and ``on_event`` must run in the same thread (the owner's event loop): a PUBACK event is
    only read after the ``publish`` call that produced its mid has returned and been recorded.
    """

    def __init__(self, link, outbox: Outbox, *, window: int = 20) -> None:
        self.link = link
        self.outbox = outbox
        self.window = max(1, window)
        self._inflight: dict[int, int] = {}  # paho mid -> outbox row id
        self._last_id = 0  # highest row handed to paho by this process
        self.acked = 0
        self.rejected = 0

    def pump(self) -> None:
        """Hand waiting rows to paho, in order, keeping at most ``window`` unacknowledged."""
        if not self.link.connected:
            return  # paho would only queue them in memory; the outbox is the better queue
        while len(self._inflight) < self.window:
            rows = self.outbox.pending(self._last_id, self.window - len(self._inflight))
            if not rows:
                return
            for row in rows:
                mid = self.link.publish(row.topic, row.payload, qos=row.qos, retain=row.retain,
                                        user_properties=row.user_properties)
                self._last_id = row.id
                if row.qos == 0:
                    self.outbox.delete(row.id)  # no acknowledgement will ever come
                else:
                    self._inflight[mid] = row.id

    def on_event(self, event) -> None:
        if event.kind == "connected" and event.ok:
            self.pump()
        elif event.kind == "puback":
            row_id = self._inflight.pop(event.mid, None)
            if row_id is None:
                return  # a message published outside the outbox (status, replies)
            if event.ok:
                self.outbox.delete(row_id)
                self.acked += 1
            else:
                # The broker refused it (e.g. not authorised): keep it for the next start, never drop it.
                self.rejected += 1
                log.warning("broker refused outbox message %d: %s", row_id, event.reason)
            self.pump()

    @property
    def inflight(self) -> int:
        return len(self._inflight)


def default_state_dir() -> Path:
    """systemd's StateDirectory= when set, else the XDG-style per-user location."""
    env = os.environ.get("STATE_DIRECTORY")
    if env:
        return Path(env.split(":")[0])
    return Path.home() / ".local" / "state" / "wbcscope"

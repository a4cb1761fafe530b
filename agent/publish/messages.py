"""What goes on the wire for results: per-field messages and the end-of-test summary, and the code that
commits them to the outbox (used by the daemon, by ``wbcscope publish`` and by a command-line scan).

A field's payload is exactly its miLab entry keyed by image index, so a consumer can merge messages
into an ``analyze_result.json``. Everything else (device, test, versions, message id) travels as MQTT v5
user properties. The message id is derived from device, test and field, so every copy of one result,
whether a QoS 1 retransmission or a later ``wbcscope publish``, carries the same id.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from pathlib import Path
from typing import Any, Iterable

from agent import __version__
from agent.errors import InputError
from agent.inference.base import CODE_NAMES
from agent.publish.mqtt import topic
from agent.publish.outbox import Outbox
from agent.results.record import FieldRecord
from agent.results.writer import FIELDS_FILE, MANIFEST_FILE, parse_records

_ID_NAMESPACE = uuid.UUID("5f0c4d0e-8a51-4c8e-9a55-3d0b7f6f2a10")
SUMMARY_INDEX = -1
"""Ledger key of a test's summary in the outbox (field indexes are >= 0)."""


def message_id(device: str, test_id: str, key: str) -> str:
    return str(uuid.uuid5(_ID_NAMESPACE, f"{device}/{test_id}/{key}"))


def models_label(manifest: dict[str, Any]) -> str:
    models = manifest.get("models", {})
    return ";".join(f"{role}={info.get('name', '?')}" for role, info in sorted(models.items()))


def _props(device: str, test_id: str, manifest: dict[str, Any], key: str) -> dict[str, str]:
    return {"device": device, "test_id": test_id, "software": manifest.get("software", {}).get("version", __version__),
            "models": models_label(manifest), "msg_id": message_id(device, test_id, key)}


def field_message(device: str, test_id: str, image_index: int, entry: dict[str, Any],
                  manifest: dict[str, Any]) -> tuple[str, bytes, dict[str, str]]:
    payload = json.dumps({str(image_index): entry}, separators=(",", ":")).encode("utf-8")
    props = _props(device, test_id, manifest, f"field/{image_index}")
    return topic(device, "tests", test_id, "fields", str(image_index)), payload, props


def summary_document(test_id: str, device: str, records: Iterable[FieldRecord], *, fields_planned: int,
                     duration_s: float, status: str, stop_reason: str = "") -> dict[str, Any]:
    counts: Counter = Counter()
    fields, flagged = 0, []
    for record in records:
        fields += 1
        counts.update(CODE_NAMES[c.prediction] for c in record.cells)
        if record.flags:
            flagged.append(record.image_index)
    wbc = sum(counts.values())
    return {
        "test_id": test_id, "device": device, "status": status, "stop_reason": stop_reason,
        "fields": fields, "fields_planned": fields_planned, "wbc": wbc,
        "counts": dict(sorted(counts.items())),
        "differential_pct": {k: round(100.0 * v / wbc, 2) for k, v in sorted(counts.items())} if wbc else {},
        "duration_s": round(duration_s, 3), "flagged_fields": flagged,
    }


def summary_message(document: dict[str, Any], manifest: dict[str, Any]) -> tuple[str, bytes, dict[str, str]]:
    device, test_id = document["device"], document["test_id"]
    payload = json.dumps(document, separators=(",", ":")).encode("utf-8")
    return topic(device, "tests", test_id, "summary"), payload, _props(device, test_id, manifest, "summary")


def read_manifest(test_dir: Path) -> dict[str, Any]:
    try:
        return json.loads((Path(test_dir) / MANIFEST_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{test_dir} has no {MANIFEST_FILE} (is it a wbcscope test directory?)") from None
    except (OSError, ValueError) as exc:
        raise InputError(f"unreadable {Path(test_dir) / MANIFEST_FILE}: {exc}") from None


def read_records(test_dir: Path) -> list[FieldRecord]:
    """Complete lines of fields.jsonl, read only (a torn last line of a killed scan is ignored)."""
    path = Path(test_dir) / FIELDS_FILE
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc}") from None
    return parse_records(raw)[0]


class ResultQueue:
    """Commits one test's results to the outbox. Its methods run in the scan's thread."""

    def __init__(self, outbox: Outbox, test_dir: Path) -> None:
        self.outbox = outbox
        self.test_dir = Path(test_dir)
        self.test_id = self.test_dir.name
        self._manifest: dict[str, Any] | None = None

    @property
    def manifest(self) -> dict[str, Any]:
        # Read lazily: the session writes the manifest just before the first field.
        if self._manifest is None:
            self._manifest = read_manifest(self.test_dir)
        return self._manifest

    @property
    def device(self) -> str:
        return str(self.manifest.get("device_id", "unknown"))

    def add_field(self, record: FieldRecord) -> int:
        topic_name, payload, props = field_message(self.device, self.test_id, record.image_index,
                                                   record.milab_entry(), self.manifest)
        return self.outbox.put(topic_name, payload, qos=1, user_properties=props,
                               field_key=(self.test_id, record.image_index))

    def add_missing(self) -> int:
        """Queue fields on disk that never reached the outbox (a kill between the two writes)."""
        known = self.outbox.enqueued_indexes(self.test_id)
        missing = [r for r in read_records(self.test_dir) if r.image_index not in known]
        for record in missing:
            self.add_field(record)
        return len(missing)

    def add_all(self) -> int:
        records = read_records(self.test_dir)
        for record in records:
            self.add_field(record)
        return len(records)

    def add_summary(self, *, duration_s: float | None = None, status: str | None = None,
                    stop_reason: str = "") -> dict[str, Any]:
        manifest = read_manifest(self.test_dir)  # re-read: the session updates status and end time
        self._manifest = manifest
        document = summary_document(
            self.test_id, self.device, read_records(self.test_dir),
            fields_planned=int(manifest.get("fields_planned", 0)),
            duration_s=duration_s if duration_s is not None else _manifest_duration_s(manifest),
            status=status or str(manifest.get("status", "unknown")), stop_reason=stop_reason)
        topic_name, payload, props = summary_message(document, manifest)
        self.outbox.put(topic_name, payload, qos=1, user_properties=props,
                        field_key=(self.test_id, SUMMARY_INDEX))
        return document


def _manifest_duration_s(manifest: dict[str, Any]) -> float:
    import datetime as dt

    try:
        start = dt.datetime.fromisoformat(str(manifest["started_utc"]).replace("Z", "+00:00"))
        end = dt.datetime.fromisoformat(str(manifest["ended_utc"]).replace("Z", "+00:00"))
    except (KeyError, ValueError, TypeError):
        return 0.0
    return max(0.0, (end - start).total_seconds())

"""Writes a test directory so that a crash, a kill or a full disk never leaves a torn file.

Order per field: plane JPEGs (each written to a temporary name, then renamed), then one line appended to
``fields.jsonl`` (flushed and fsynced), then ``analyze_result.json`` rewritten whole through a temporary
file and an atomic rename. A field therefore counts as done exactly when its ``fields.jsonl`` line is
complete; ``analyze_result.json`` is always a complete document of the fields done before it.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from agent.errors import DeviceBusyError, OutputError
from agent.results.record import FieldRecord

RESULT_FILE = "analyze_result.json"
FIELDS_FILE = "fields.jsonl"
MANIFEST_FILE = "manifest.json"
LOCK_FILE = ".wbcscope.lock"


def _describe(exc: OSError, path: Path) -> str:
    if exc.errno == errno.ENOSPC:
        return f"disk full while writing {path}"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"cannot write {path}: permission denied"
    return f"cannot write {path}: {exc.strerror or exc}"


def parse_records(raw: bytes) -> tuple[list[FieldRecord], int]:
    """The complete records at the start of a ``fields.jsonl`` and how many bytes they span; parsing
    stops at the first torn or unreadable line (a kill in the middle of an append)."""
    records, good_bytes = [], 0
    for line in raw.splitlines(keepends=True):
        if not line.endswith(b"\n"):
            break
        try:
            records.append(FieldRecord.from_jsonl(json.loads(line)))
        except (ValueError, KeyError, TypeError):
            break
        good_bytes += len(line)
    return records, good_bytes


class ResultWriter:
    """Owns one output directory. ``open`` creates and locks it; ``close`` is safe twice."""

    def __init__(self, directory: Path, *, fsync: bool = True) -> None:
        self.directory = Path(directory)
        self._fsync = fsync
        self._lock_fd: int | None = None
        self._document: dict[str, Any] = {}

    # -- lifecycle -------------------------------------------------------------------------------
    def open(self) -> None:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise OutputError(_describe(exc, self.directory)) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise DeviceBusyError(f"output directory {self.directory} is in use by another wbcscope process") from None
        self._lock_fd = fd

    def close(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None

    def __enter__(self) -> "ResultWriter":
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- state on disk ----------------------------------------------------------------------------
    def load_records(self) -> list[FieldRecord]:
        """Completed fields from ``fields.jsonl``; a torn last line (killed mid-append) is cut off."""
        path = self.directory / FIELDS_FILE
        if not path.exists():
            return []
        raw = path.read_bytes()
        records, good_bytes = parse_records(raw)
        if good_bytes != len(raw):
            with open(path, "r+b") as handle:
                handle.truncate(good_bytes)
        self._document = {str(r.image_index): r.milab_entry() for r in records if not r.failed}
        return records

    def remove_partial_images(self, done_numbers: set[int]) -> list[Path]:
        """Delete plane files of fields that never completed (and temporary files) before resuming."""
        from agent.results.names import parse_name

        removed = []
        for path in self.directory.iterdir():
            parsed = parse_name(path.name)
            stale_tmp = path.name.endswith(".tmp")
            if stale_tmp or (parsed is not None and parsed.image_number not in done_numbers):
                path.unlink()
                removed.append(path)
        return removed

    # -- writes -------------------------------------------------------------------------------------
    def write_plane(self, filename: str, image: np.ndarray, jpeg_quality: int) -> None:
        ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)])
        if not ok:
            raise OutputError(f"JPEG encoding failed for {filename}")
        self._atomic_write(self.directory / filename, encoded.tobytes())

    def add_field(self, record: FieldRecord) -> None:
        line = json.dumps(record.jsonl_record(), separators=(",", ":")) + "\n"
        path = self.directory / FIELDS_FILE
        try:
            with open(path, "ab") as handle:
                handle.write(line.encode("utf-8"))
                handle.flush()
                if self._fsync:
                    os.fsync(handle.fileno())
        except OSError as exc:
            raise OutputError(_describe(exc, path)) from None
        if not record.failed:  # a field without images has nothing a miLab tool could look up
            self._document[str(record.image_index)] = record.milab_entry()
            self.write_result_document()

    def write_result_document(self) -> None:
        ordered = dict(sorted(self._document.items(), key=lambda kv: int(kv[0])))
        # Compact: the document is rewritten after every field, so its size is paid again each time.
        self.write_json(RESULT_FILE, ordered, indent=None)

    def write_json(self, name: str, data: Any, *, indent: int | None = 1) -> None:
        text = json.dumps(data, indent=indent, separators=None if indent else (",", ":"))
        self._atomic_write(self.directory / name, (text + "\n").encode("utf-8"))

    def _atomic_write(self, path: Path, data: bytes) -> None:
        tmp = path.with_name(path.name + ".tmp")
        try:
            with open(tmp, "wb") as handle:
                handle.write(data)
                handle.flush()
                if self._fsync:
                    os.fsync(handle.fileno())
            os.replace(tmp, path)
        except OSError as exc:
            try:
                tmp.unlink()
            except OSError:
                pass  # the original error is the one worth reporting
            raise OutputError(_describe(exc, path)) from None

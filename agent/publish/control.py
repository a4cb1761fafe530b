"""Remote commands: parsing and validation of what arrives on ``wbcscope/v1/<device>/cmd``.

Anything on that topic is untrusted. A command is accepted only if it is a small UTF-8 JSON object with
known keys and correctly typed, bounded parameters; everything else becomes a ``CommandError`` whose
message is sent back as an error reply, and the daemon carries on.

Wire format: ``{"cmd": "start_scan", "params": {...}, "id": "optional request id"}``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from agent.errors import WbcscopeError

COMMANDS = ("start_scan", "stop", "status", "ping")
TEST_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_TEXT = re.compile(r"^[^\x00-\x1f\x7f]{0,128}$")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
MAX_TOPIC_BYTES = 256


class CommandError(WbcscopeError, ValueError):
    """A remote command was malformed, unknown or not allowed now."""


@dataclass(frozen=True)
class Command:
    name: str
    params: dict[str, Any] = field(default_factory=dict)
    request_id: str | int | None = None


def _int(name: str, lo: int, hi: int):
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise CommandError(f"parameter {name!r} must be an integer")
        if not lo <= value <= hi:
            raise CommandError(f"parameter {name!r} must be between {lo} and {hi}")
        return value
    return check


def _text(name: str, pattern: re.Pattern, what: str):
    def check(value: Any) -> str:
        if not isinstance(value, str) or not pattern.match(value):
            raise CommandError(f"parameter {name!r} must be {what}")
        return value
    return check


def _bool(name: str):
    def check(value: Any) -> bool:
        if not isinstance(value, bool):
            raise CommandError(f"parameter {name!r} must be true or false")
        return value
    return check


_PARAMS = {
    "start_scan": {
        # The test id names a directory: the pattern leaves no room for '/', '..' or absolute paths.
        "test_id": _text("test_id", TEST_ID, "1-64 characters of A-Z a-z 0-9 _ -"),
        "fields": _int("fields", 1, 1_000_000),
        "wbc_target": _int("wbc_target", 0, 10_000_000),
        "sample_id": _text("sample_id", _TEXT, "up to 128 printable characters"),
        "operator": _text("operator", _TEXT, "up to 128 printable characters"),
        "resume": _bool("resume"),
    },
    "stop": {},
    "status": {},
    "ping": {},
}


def parse_command(payload: bytes, *, max_bytes: int) -> Command:
    if len(payload) > max_bytes:
        raise CommandError(f"command too large ({len(payload)} bytes, limit {max_bytes})")
    try:
        data = json.loads(payload.decode("utf-8"))
    except UnicodeDecodeError:
        raise CommandError("command is not UTF-8") from None
    except RecursionError:
        raise CommandError("command nests too deeply") from None
    except ValueError as exc:
        raise CommandError(f"command is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise CommandError("command must be a JSON object")
    unknown = set(data) - {"cmd", "params", "id"}
    if unknown:
        raise CommandError(f"unknown key(s) in command: {', '.join(sorted(map(str, unknown)))[:200]}")
    request_id = data.get("id")
    if request_id is not None and not (
        (isinstance(request_id, int) and not isinstance(request_id, bool) and abs(request_id) < 2**53)
        or (isinstance(request_id, str) and _REQUEST_ID.match(request_id))
    ):
        raise CommandError("'id' must be a short string ([A-Za-z0-9_.:-]) or an integer")
    name = data.get("cmd")
    if not isinstance(name, str):
        raise CommandError("'cmd' must be a string naming the command")
    if name not in COMMANDS:
        raise CommandError(f"unknown command {name[:64]!r} (known: {', '.join(COMMANDS)})")
    params = data.get("params", {})
    if not isinstance(params, dict):
        raise CommandError("'params' must be a JSON object")
    schema = _PARAMS[name]
    checked = {}
    for key, value in params.items():
        if key not in schema:
            raise CommandError(f"unknown parameter {str(key)[:64]!r} for {name}")
        checked[key] = schema[key](value)
    return Command(name, checked, request_id)


def request_id_of(payload: bytes) -> str | int | None:
    """Best effort: the request id of a command that failed validation, so the reply can carry it."""
    try:
        data = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    if isinstance(data, dict):
        rid = data.get("id")
        if isinstance(rid, str) and _REQUEST_ID.match(rid):
            return rid
        if isinstance(rid, int) and not isinstance(rid, bool) and abs(rid) < 2**53:
            return rid
    return None


def reply_topic_ok(name: str) -> bool:
    """A v5 response topic we are willing to publish to: a plain topic name, no wildcards, bounded."""
    return (bool(name) and len(name.encode("utf-8")) <= MAX_TOPIC_BYTES
            and not any(ch in name for ch in "+#\x00") and not name.startswith("$"))


def reply(command: Command | None, *, ok: bool, result: dict[str, Any] | None = None,
          error: str = "", request_id: str | int | None = None) -> bytes:
    body: dict[str, Any] = {"ok": ok, "cmd": command.name if command else None,
                            "id": command.request_id if command else request_id}
    if ok:
        body["result"] = result or {}
    else:
        body["error"] = error
    return json.dumps(body, separators=(",", ":")).encode("utf-8")

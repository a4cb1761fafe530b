"""The miLab ``analyze_result.json`` format: its JSON Schema and the checks a schema cannot express."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

from agent.results.names import parse_name

SCHEMA_FILE = "analyze_result.schema.json"


@cache
def load_schema() -> dict[str, Any]:
    text = resources.files("agent.results").joinpath(SCHEMA_FILE).read_text(encoding="utf-8")
    return json.loads(text)


def consistency_errors(doc: dict[str, Any]) -> list[str]:
    """What the schema cannot say: each key equals its file's image number - 1; w and h are positive."""
    errors = []
    for key, entry in doc.items():
        parsed = parse_name(entry.get("img_name", ""))
        if parsed is None:
            errors.append(f"{key}: img_name {entry.get('img_name')!r} is not a miLab name")
        elif parsed.image_index != int(key):
            errors.append(f"{key}: img_name {entry['img_name']} belongs to image index {parsed.image_index}")
        for cell_key, cell in entry.get("cell_prediction", {}).items():
            x, y, w, h = cell["location"]
            if w <= 0 or h <= 0:
                errors.append(f"{key}/{cell_key}: empty box {cell['location']}")
    return errors

"""Pick the stage driver for a dialect in one place.

``build_stage`` only constructs (nothing is opened, so the caller can register ``close`` before
``connect``); ``open_stage`` also connects and closes again if that fails. Settings use the names
of the ``stage.*`` configuration keys; keys meant for the agent rather than a driver are accepted
and ignored, keys for the other dialect are ignored too, anything else is a TypeError.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from firmware_interface.errors import StageError
from firmware_interface.stage import Stage

DIALECTS = ("grbl", "sangaboard")

_COMMON = {"baudrate", "reply_timeout_s", "z_backlash_um", "poll_interval_s",
           "reconnect_attempts", "reconnect_backoff_s"}
_GRBL_ONLY = {"xy_feed_mm_min", "z_feed_mm_min"}
_SANGA_ONLY = {"steps_per_um"}
_AGENT_ONLY = {"dialect", "port", "move_timeout_s", "on_position_loss", "home_on_connect"}


def build_stage(dialect: str, port: str, **settings: Any) -> Stage:
    """A driver for ``dialect`` on ``port`` (device path or pyserial URL). Touches nothing."""
    kwargs = _driver_kwargs(dialect, settings)
    if dialect == "grbl":
        from firmware_interface.grbl import GrblStage

        return GrblStage(port, **kwargs)
    from firmware_interface.sangaboard import SangaboardStage

    return SangaboardStage(port, **kwargs)


def open_stage(dialect: str, port: str, **settings: Any) -> Stage:
    """``build_stage`` then ``connect``; the port is closed again if identification fails."""
    stage = build_stage(dialect, port, **settings)
    try:
        stage.connect()
    except StageError:
        stage.close()
        raise
    return stage


def build_stage_from_settings(stage_settings: Any, port: str | None = None) -> Stage:
    """``build_stage`` from a ``StageSettings``-like dataclass (``port`` overrides its port)."""
    values = dataclasses.asdict(stage_settings)
    dialect = values.pop("dialect", "grbl")
    configured_port = values.pop("port", "")
    return build_stage(dialect, port or configured_port, **values)


def _driver_kwargs(dialect: str, settings: dict[str, Any]) -> dict[str, Any]:
    if dialect not in DIALECTS:
        raise ValueError(f"unknown stage dialect {dialect!r} (known: {', '.join(DIALECTS)})")
    own = _COMMON | (_GRBL_ONLY if dialect == "grbl" else _SANGA_ONLY)
    other = (_SANGA_ONLY if dialect == "grbl" else _GRBL_ONLY) - own
    kwargs: dict[str, Any] = {}
    for key, value in settings.items():
        if key == "travel_um":
            kwargs["soft_limits_um"] = tuple((0.0, float(t)) for t in value)
        elif key == "soft_limits_um" or key in own:
            kwargs[key] = tuple(value) if isinstance(value, list) else value
        elif key not in _AGENT_ONLY and key not in other:
            raise TypeError(f"unknown stage setting {key!r} for dialect {dialect!r}")
    return kwargs

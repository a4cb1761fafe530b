"""Typed settings from TOML.

Every setting has a default here (the README's configuration reference lists them). A TOML file only
overrides what it names; an unknown key, a wrong type or an out-of-range value raises ``ConfigError``
naming the key and the file before anything touches hardware or disk.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

from agent.errors import ConfigError


def _setting(default: Any, *, lo: float | None = None, hi: float | None = None,
             choices: tuple[str, ...] | None = None, pattern: str | None = None,
             length: int | None = None) -> Any:
    meta = {"lo": lo, "hi": hi, "choices": choices, "pattern": pattern, "length": length}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class DeviceSettings:
    id: str = _setting("", pattern=r"^[A-Za-z0-9_-]{0,64}$")
    """Device id; empty means derived from the host name."""


@dataclass
class CameraSettings:
    backend: str = _setting("virtual", choices=("virtual",))
    width_px: int = _setting(1920, lo=64, hi=10000)
    height_px: int = _setting(1200, lo=64, hi=10000)
    um_per_px: float = _setting(0.11, lo=0.01, hi=10.0)
    frame_rate_hz: float = _setting(30.0, lo=0.1, hi=1000.0)
    exposure_ms: float = _setting(10.0, lo=0.01, hi=10000.0)
    capture_timeout_s: float = _setting(2.0, lo=0.01, hi=600.0)


@dataclass
class StageSettings:
    dialect: str = _setting("grbl", choices=("grbl",))
    port: str = _setting("emulator")
    """A device path (/dev/ttyACM0), a pyserial URL (socket://host:port) or 'emulator'."""
    baudrate: int = _setting(115200, lo=300, hi=4_000_000)
    reply_timeout_s: float = _setting(5.0, lo=0.05, hi=600.0)
    move_timeout_s: float = _setting(60.0, lo=0.1, hi=3600.0)
    z_backlash_um: float = _setting(5.0, lo=0.0, hi=1000.0)
    xy_feed_mm_min: float = _setting(300.0, lo=1.0, hi=100000.0)
    z_feed_mm_min: float = _setting(60.0, lo=0.1, hi=100000.0)
    travel_um: list[float] = _setting([100000.0, 75000.0, 10000.0], length=3)
    """Soft limits: each axis may go from 0 to this many micrometres."""


@dataclass
class SimulationSettings:
    realtime: bool = _setting(True)
    """False runs the emulated stage and camera with zero delays (tests, quick demos)."""
    seed: int = _setting(1, lo=0, hi=2**31 - 1)
    slide_z_um: float = _setting(500.0, lo=0.0, hi=10000.0)
    tilt_x_um_per_mm: float = _setting(1.0, lo=-100.0, hi=100.0)
    tilt_y_um_per_mm: float = _setting(0.0, lo=-100.0, hi=100.0)
    curvature_um: float = _setting(2.0, lo=-100.0, hi=100.0)
    curvature_span_mm: float = _setting(10.0, lo=0.1, hi=1000.0)
    xy_speed_mm_s: float = _setting(5.0, lo=0.01, hi=1000.0)
    xy_accel_mm_s2: float = _setting(200.0, lo=0.1, hi=100000.0)
    xy_settle_ms: float = _setting(50.0, lo=0.0, hi=10000.0)
    z_speed_mm_s: float = _setting(1.0, lo=0.001, hi=1000.0)
    z_settle_ms: float = _setting(10.0, lo=0.0, hi=10000.0)


@dataclass
class ScanSettings:
    origin_um: list[float] = _setting([5000.0, 5000.0], length=2)
    """Centre of the first field, micrometres from the slide origin."""
    region_um: list[float] = _setting([10000.0, 10000.0], length=2)
    """Width and height of the scanned region."""
    overlap: float = _setting(0.0, lo=0.0, hi=0.9)
    fields: int = _setting(30, lo=1, hi=1_000_000)
    wbc_target: int = _setting(0, lo=0, hi=10_000_000)
    """Stop once this many WBCs are found (0: off)."""
    queue_depth: int = _setting(2, lo=1, hi=64)


@dataclass
class FocusSettings:
    measure: str = _setting("")
    """Focus measure for autofocus and file names; empty means agent.focus.DEFAULT_MEASURE."""
    downsample: int = _setting(4, lo=1, hi=16)
    """Autofocus scores frames downsampled by this factor (speed)."""
    start_z_um: float = _setting(500.0, lo=0.0, hi=100000.0)
    first_range_um: float = _setting(20.0, lo=0.5, hi=1000.0)
    """Half-width of the coarse search on the first field."""
    range_um: float = _setting(6.0, lo=0.5, hi=1000.0)
    """Half-width of the coarse search around the previous field's focus."""
    coarse_step_um: float = _setting(2.0, lo=0.05, hi=100.0)
    fine_step_um: float = _setting(0.4, lo=0.01, hi=10.0)


@dataclass
class StackSettings:
    planes: int = _setting(10, lo=1, hi=200)
    step_um: float = _setting(0.5, lo=0.01, hi=100.0)
    keep: str = _setting("all", pattern=r"^(all|best(\+-|±)\d{1,3})$")
    """Which planes are written: 'all', or 'best+-K' (the field's best plane and K on either side)."""


@dataclass
class OutputSettings:
    jpeg_quality: int = _setting(90, lo=1, hi=100)
    fsync: bool = _setting(True)


@dataclass
class InferenceSettings:
    detector: str = _setting("classical", choices=("classical",))
    classifier: str = _setting("none", choices=("none",))


@dataclass
class TestInfo:
    sample_id: str = _setting("")
    operator: str = _setting("")


@dataclass
class Settings:
    device: DeviceSettings = field(default_factory=DeviceSettings)
    camera: CameraSettings = field(default_factory=CameraSettings)
    stage: StageSettings = field(default_factory=StageSettings)
    simulation: SimulationSettings = field(default_factory=SimulationSettings)
    scan: ScanSettings = field(default_factory=ScanSettings)
    focus: FocusSettings = field(default_factory=FocusSettings)
    stack: StackSettings = field(default_factory=StackSettings)
    output: OutputSettings = field(default_factory=OutputSettings)
    inference: InferenceSettings = field(default_factory=InferenceSettings)
    test: TestInfo = field(default_factory=TestInfo)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def load_settings(path: Path | None = None, overrides: dict[str, Any] | None = None) -> Settings:
    """Defaults, then the TOML file at ``path``, then ``overrides`` (dotted keys, e.g. 'scan.fields')."""
    settings = Settings()
    source = "defaults"
    if path is not None:
        source = str(path)
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path}") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read config file {path}: {exc}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: invalid TOML: {exc}") from None
        _apply(settings, data, source, prefix="")
    for dotted, value in (overrides or {}).items():
        section, _, key = dotted.partition(".")
        _apply(settings, {section: {key: value}}, "command line", prefix="")
    return settings


def settings_from_dict(data: dict[str, Any], source: str) -> Settings:
    """Rebuild settings from a dict (e.g. a manifest's effective config), validating every key."""
    settings = Settings()
    _apply(settings, data, source, prefix="")
    return settings


def _apply(target: Any, data: dict[str, Any], source: str, prefix: str) -> None:
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: [{prefix.rstrip('.')}] must be a table")
    hints = get_type_hints(type(target))
    fields = {f.name: f for f in dataclasses.fields(target)}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if key not in fields:
            raise ConfigError(f"{source}: unknown setting '{name}'")
        current = getattr(target, key)
        if dataclasses.is_dataclass(current):
            _apply(current, value, source, prefix=f"{name}.")
        else:
            setattr(target, key, _check(name, value, hints[key], fields[key].metadata, source))


def _check(name: str, value: Any, hint: Any, meta: Any, source: str) -> Any:
    where = f"{source}: setting '{name}'"
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where} must be an integer, got {value!r}")
    elif hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where} must be a number, got {value!r}")
        value = float(value)
    elif hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string, got {value!r}")
    elif hint == list[float]:
        if not isinstance(value, list) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in value
        ):
            raise ConfigError(f"{where} must be a list of numbers, got {value!r}")
        if meta.get("length") is not None and len(value) != meta["length"]:
            raise ConfigError(f"{where} must have {meta['length']} numbers, got {len(value)}")
        return [float(v) for v in value]
    lo, hi = meta.get("lo"), meta.get("hi")
    if lo is not None and value < lo or hi is not None and value > hi:
        raise ConfigError(f"{where} must be between {lo} and {hi}, got {value!r}")
    if meta.get("choices") and value not in meta["choices"]:
        raise ConfigError(f"{where} must be one of {', '.join(meta['choices'])}, got {value!r}")
    if meta.get("pattern") and not re.match(meta["pattern"], value):
        raise ConfigError(f"{where} has an invalid value {value!r}")
    return value

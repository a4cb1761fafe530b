"""Typed settings from TOML.

Every setting has a default here (the README's configuration reference lists them). A TOML file only
overrides what it names; an unknown key, a wrong type or an out-of-range value raises ``ConfigError``
naming the key and the file before anything touches hardware or disk.
"""

from __future__ import annotations

import dataclasses
import json
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

from agent.errors import ConfigError


def _setting(default: Any, *, lo: float | None = None, hi: float | None = None,
             choices: tuple[str, ...] | tuple[int, ...] | None = None, pattern: str | None = None,
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
    backend: str = _setting("virtual", choices=("virtual", "opencv", "picamera2"))
    device: str = _setting("")
    """opencv: a device index ('0'), a V4L2 path (/dev/video0), a video file or a folder of images;
    picamera2: the camera number ('' = 0). Unused by the virtual camera."""
    width_px: int = _setting(1920, lo=64, hi=10000)
    height_px: int = _setting(1200, lo=64, hi=10000)
    um_per_px: float = _setting(0.11, lo=0.01, hi=10.0)
    frame_rate_hz: float = _setting(30.0, lo=0.1, hi=1000.0)
    exposure_ms: float = _setting(10.0, lo=0.01, hi=10000.0)
    capture_timeout_s: float = _setting(2.0, lo=0.01, hi=600.0)
    analogue_gain: float = _setting(1.0, lo=1.0, hi=64.0)
    auto_exposure: bool = _setting(False)
    """True: let auto-exposure and auto white balance settle at open, then lock them for the scan;
    false: exposure_ms, analogue_gain and colour_gains are set and locked from the start."""
    colour_gains: list[float] = _setting([], length=None)
    """(red, blue) white-balance gains when auto_exposure is false; [] = measure once, then lock."""
    full_resolution: bool = _setting(True)
    """picamera2: capture stills at the sensor's full resolution (width_px, height_px then unused)."""
    tuning_file: str = _setting("")
    """picamera2: a libcamera tuning file (name or path), e.g. a microscope tuning without lens shading."""
    fourcc: str = _setting("", pattern=r"^([A-Za-z0-9 ]{4})?$")
    """opencv: pixel format asked of a live device, e.g. 'MJPG'; '' = the driver's default."""
    replay_loop: bool = _setting(True)
    """opencv: start a video file or image folder again at its end (instead of a timeout)."""
    calibration: str = _setting("")
    """calibration.json from 'wbcscope calibrate' (relative to the config file): its µm per pixel
    replaces camera.um_per_px and its flat-field corrects every frame ("" = none)."""


@dataclass
class StageSettings:
    dialect: str = _setting("grbl", choices=("grbl", "sangaboard"))
    """Controller firmware: GRBL 1.1 or an OpenFlexure Sangaboard."""
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
    steps_per_um: list[float] = _setting([1.0, 1.0, 1.0], length=3, lo=1e-6, hi=1e6)
    """Sangaboard only: motor steps per micrometre of stage travel, x y z, each > 0 (calibrate)."""
    home_on_connect: bool = _setting(False)
    """Home a controller that comes up asking for it (GRBL with homing enabled) instead of refusing."""
    on_position_loss: str = _setting("stop", choices=("stop", "rehome"))
    """After a controller reset or reconnect: stop the scan, or home and carry on (needs homing)."""
    reconnect_attempts: int = _setting(3, lo=0, hi=100)
    """Sangaboard: reopen attempts after the port vanishes (0: fail at once)."""
    reconnect_backoff_s: float = _setting(0.5, lo=0.0, hi=60.0)
    """Wait before the first reopen attempt; doubled after each failure (at most 5 s)."""


@dataclass
class SimulationSettings:
    realtime: bool = _setting(True)
    """False runs the emulated stage and camera with zero delays (tests, quick demos)."""
    stage_homing: bool = _setting(False)
    """The emulated controller has homing switches (GRBL boots in alarm until homed)."""
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
    camera_rotation_deg: float = _setting(0.0, lo=-180.0, hi=180.0)
    """Virtual camera mounted turned by this angle relative to the stage axes (calibration tests)."""
    camera_flip: bool = _setting(False)
    """Virtual camera image mirrored relative to the stage axes."""
    xy_backlash_um: list[float] = _setting([0.0, 0.0], length=2)
    """Lost motion of the virtual stage's X and Y on a reversal, as seen by the virtual camera."""


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
    """Autofocus scores frames downsampled by this factor (speed, and a wider focus curve)."""
    start_z_um: float = _setting(500.0, lo=0.0, hi=100000.0)
    first_range_um: float = _setting(20.0, lo=0.5, hi=1000.0)
    """Half-width of the search without a prediction (first field; fallback when a prediction fails)."""
    range_um: float = _setting(6.0, lo=0.5, hi=1000.0)
    """Half-width of the search around the focus map's prediction."""
    coarse_step_um: float = _setting(3.0, lo=0.05, hi=100.0)
    """First bracket step of a search without a prediction."""
    coarse_downsample: int = _setting(8, lo=1, hi=64)
    """Frames are also scored downsampled by this: a wider focus curve that steers the search."""
    fine_step_um: float = _setting(0.5, lo=0.01, hi=10.0)
    """Frame spacing that places the peak; a prediction is confirmed with frames this far apart."""
    max_step_um: float = _setting(3.0, lo=0.05, hi=100.0)
    """Largest step while walking towards the peak."""
    min_peak_ratio: float = _setting(1.1, lo=1.0, hi=100.0)
    """The peak frame must score this many times the lowest frame, else the curve counts as flat."""
    max_frames: int = _setting(16, lo=3, hi=1000)
    """Frames one search may take before it gives up (a field may run two searches)."""
    peak_asymmetry: float = _setting(1.2, lo=1.0, hi=3.0)
    """The focus peak falls this many times faster above focus than below; the fit allows for it."""
    map_quadratic_points: int = _setting(8, lo=6, hi=100000)
    """Focused fields before the focus map fits a quadratic surface instead of a plane."""
    map_radius_um: float = _setting(5000.0, lo=1.0, hi=1000000.0)
    """Distance weighting of the focus map (Gaussian): nearer fields count more."""
    map_outlier_um: float = _setting(0.5, lo=0.01, hi=1000.0)
    """Fields further than this (or 3 robust sigma) off the map's surface are left out of it."""


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
    detector: str = _setting("tflite", choices=("classical", "tflite"))
    """'tflite': the int8 CenterNet (models/wbc_detector_int8.tflite + wbc_detector_spec.json, models/detector.md);
    'classical': the colour-threshold detector (agent/inference/classical.py)."""
    classifier: str = _setting("tflite", choices=("none", "tflite"))
    """'tflite': the shipped int8 8-class model (models/); 'none' reports every WBC as code 9."""
    threads: int = _setting(1, lo=1, hi=64)
    """TFLite interpreter threads."""
    review_threshold: float = _setting(0.6, lo=0.0, hi=1.0)
    """A classified cell whose confidence is below this is flagged for review (0: only WBC-sized cells called
    platelet, which are always flagged)."""
    classifier_views: int = _setting(2, choices=(1, 2, 4))
    """Views of each cell (as is, mirrored, turned) the classifier averages: more is steadier and slower."""
    classifier_more_views_below: float = _setting(0.9, lo=0.0, hi=1.0)
    """Only a cell whose first view's top probability is under this gets the other views (1 = every cell)."""


@dataclass
class TestInfo:
    sample_id: str = _setting("")
    operator: str = _setting("")


@dataclass
class MqttSettings:
    host: str = _setting("")
    """Broker host name or address; empty means no MQTT (scans are only written to disk)."""
    port: int = _setting(1883, lo=1, hi=65535)
    protocol: str = _setting("5", choices=("5", "3.1.1"))
    keepalive_s: int = _setting(30, lo=5, hi=3600)
    reconnect_min_s: int = _setting(1, lo=1, hi=3600)
    reconnect_max_s: int = _setting(60, lo=1, hi=86400)
    tls: bool = _setting(False)
    ca_file: str = _setting("")
    """CA bundle for TLS; empty means the system's trust store."""
    cert_file: str = _setting("")
    key_file: str = _setting("")
    """Optional client certificate and key for mutual TLS."""
    username: str = _setting("")
    password: str = _setting("")
    """Prefer the environment (WBCSCOPE_MQTT_USERNAME / WBCSCOPE_MQTT_PASSWORD) to the file."""
    max_inflight: int = _setting(20, lo=1, hi=1000)
    """Unacknowledged QoS 1 messages handed to the client at once (the rest wait in the outbox)."""


@dataclass
class DaemonSettings:
    state_dir: str = _setting("")
    """Outbox database lives here; empty means $STATE_DIRECTORY or ~/.local/state/wbcscope."""
    out_dir: str = _setting("")
    """Test directories of daemon scans; empty means <state_dir>/scans."""
    telemetry_interval_s: float = _setting(10.0, lo=0.1, hi=3600.0)
    disk_floor_mb: float = _setting(200.0, lo=0.0, hi=10_000_000.0)
    """Below this much free space scanning pauses rather than risking results."""
    scan_on_start: bool = _setting(False)
    command_max_bytes: int = _setting(8192, lo=256, hi=1_000_000)
    scan_stall_s: float = _setting(300.0, lo=0.0, hi=86400.0)
    """A scan silent this long (no field, no progress) counts as stuck: the daemon stops its systemd
    watchdog pings so the service is restarted. Must exceed the slowest field plus homing; 0 = off."""


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
    mqtt: MqttSettings = field(default_factory=MqttSettings)
    daemon: DaemonSettings = field(default_factory=DaemonSettings)

    def to_dict(self) -> dict[str, Any]:
        """All settings, secrets blanked: this is what manifests and status messages show."""
        data = dataclasses.asdict(self)
        if data["mqtt"]["password"]:
            data["mqtt"]["password"] = ""
        return data


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
    if settings.camera.calibration:
        base = Path(path).parent if path is not None else Path.cwd()
        settings.camera.calibration = str((base / settings.camera.calibration).resolve())
        settings.camera.um_per_px = _calibrated_scale(settings.camera.calibration)
    return settings


def set_in_file(path: Path, section: str, key: str, value: str) -> None:
    """Set ``key = "value"`` in ``[section]`` of a TOML file, keeping every other line as it was.

    Written through a temporary file and a rename, and checked by loading the result first, so a
    failure leaves the original file untouched.
    """
    path = Path(path)
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    entry = f"{key} = {json.dumps(value)}"
    header = re.compile(r"^\s*\[\s*" + re.escape(section) + r"\s*\]\s*(#.*)?$")
    start = next((i for i, line in enumerate(lines) if header.match(line)), None)
    if start is None:
        lines += ["", f"[{section}]", entry]
    else:
        end = next((i for i in range(start + 1, len(lines)) if lines[i].lstrip().startswith("[")), len(lines))
        existing = re.compile(r"^\s*" + re.escape(key) + r"\s*=")
        at = next((i for i in range(start + 1, end) if existing.match(lines[i])), None)
        if at is None:
            lines.insert(start + 1, entry)
        else:
            lines[at] = entry
    text = "\n".join(lines) + "\n"
    try:
        tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: cannot set {section}.{key} safely ({exc})") from None
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def _calibrated_scale(path: str) -> float:
    """The µm per pixel a bench calibration measured (the rest of the file is read where it is used)."""
    try:
        value = json.loads(Path(path).read_text(encoding="utf-8"))["um_per_px"]
    except FileNotFoundError:
        raise ConfigError(f"camera.calibration: file not found: {path}") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"camera.calibration: unusable calibration file {path}: {exc}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.001 <= value <= 100:
        raise ConfigError(f"camera.calibration: {path} holds an implausible um_per_px {value!r}")
    return float(value)


def simulation_overrides(*, simulate: bool, zero_delay: bool) -> dict[str, Any]:
    """What the --simulate and --zero-delay flags every hardware command takes override."""
    overrides: dict[str, Any] = {}
    if simulate:
        overrides.update({"camera.backend": "virtual", "stage.port": "emulator"})
    if zero_delay:
        overrides["simulation.realtime"] = False
    return overrides


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
        lo, hi = meta.get("lo"), meta.get("hi")
        if any(lo is not None and v < lo or hi is not None and v > hi for v in value):
            raise ConfigError(f"{where} must hold numbers between {lo} and {hi}, got {value!r}")
        return [float(v) for v in value]
    lo, hi = meta.get("lo"), meta.get("hi")
    if lo is not None and value < lo or hi is not None and value > hi:
        raise ConfigError(f"{where} must be between {lo} and {hi}, got {value!r}")
    if meta.get("choices") and value not in meta["choices"]:
        raise ConfigError(f"{where} must be one of {', '.join(map(str, meta['choices']))}, got {value!r}")
    if meta.get("pattern") and not re.match(meta["pattern"], value):
        raise ConfigError(f"{where} has an invalid value {value!r}")
    return value

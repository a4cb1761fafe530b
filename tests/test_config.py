from pathlib import Path

import pytest

from agent.config import load_settings, settings_from_dict
from agent.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "wbcscope.toml"
    path.write_text(text)
    return path


def test_defaults_match_the_documented_virtual_microscope():
    s = load_settings()
    assert (s.camera.width_px, s.camera.height_px, s.camera.um_per_px) == (1920, 1200, 0.11)
    assert s.camera.frame_rate_hz == 30.0 and s.camera.exposure_ms == 10.0
    assert (s.simulation.xy_speed_mm_s, s.simulation.xy_accel_mm_s2, s.simulation.xy_settle_ms) == (5.0, 200.0, 50.0)
    assert (s.simulation.z_speed_mm_s, s.simulation.z_settle_ms) == (1.0, 10.0)
    assert s.stack.planes == 10 and s.stack.keep == "all"


def test_file_overrides_and_ints_become_floats(tmp_path):
    s = load_settings(write(tmp_path, "[stack]\nplanes = 7\nstep_um = 1\n[scan]\nregion_um = [1000, 2000]\n"))
    assert s.stack.planes == 7 and s.stack.step_um == 1.0 and isinstance(s.stack.step_um, float)
    assert s.scan.region_um == [1000.0, 2000.0]


def test_command_line_overrides_the_file(tmp_path):
    s = load_settings(write(tmp_path, "[scan]\nfields = 7\n"), {"scan.fields": 3})
    assert s.scan.fields == 3


@pytest.mark.parametrize(
    "text, words",
    [
        ("[scan]\nfeilds = 3\n", ["unknown setting", "scan.feilds"]),
        ("[nonsense]\nx = 1\n", ["unknown setting", "nonsense"]),
        ("[stack]\nplanes = 'ten'\n", ["stack.planes", "integer"]),
        ("[stack]\nplanes = 2.5\n", ["stack.planes", "integer"]),
        ("[output]\nfsync = 1\n", ["output.fsync", "true or false"]),
        ("[stack]\nplanes = 0\n", ["stack.planes", "between"]),
        ("[inference]\nclassifier_more_views_below = 1.5\n", ["inference.classifier_more_views_below", "between"]),
        ("[camera]\nbackend = 'webcam'\n", ["camera.backend", "one of"]),
        ("[stack]\nkeep = 'some'\n", ["stack.keep"]),
        ("[scan]\nregion_um = [1, 2, 3]\n", ["scan.region_um", "2 numbers"]),
        ("[scan]\nfields = \n", ["invalid TOML"]),
        ("scan = 3\n", ["must be a table"]),
    ],
)
def test_bad_config_names_the_key_and_the_file(tmp_path, text, words):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_settings(path)
    message = str(err.value)
    assert str(path) in message
    for word in words:
        assert word in message


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "absent.toml")


def test_keep_policy_accepts_best_plus_minus_k(tmp_path):
    assert load_settings(write(tmp_path, "[stack]\nkeep = 'best+-2'\n")).stack.keep == "best+-2"


def test_round_trip_through_a_manifest_dict():
    s = load_settings(overrides={"scan.fields": 12, "simulation.realtime": False})
    again = settings_from_dict(s.to_dict(), "manifest.json")
    assert again == s


def test_set_in_file_keeps_other_lines_and_replaces_or_adds_the_key(tmp_path):
    from agent.config import set_in_file

    path = write(tmp_path, "# bench scope\n[camera]\nwidth_px = 640 # small\n[scan]\nfields = 3\n")
    set_in_file(path, "camera", "calibration", "cal/calibration.json")
    set_in_file(path, "camera", "calibration", "calibration.json")  # replaced, not added twice
    set_in_file(path, "device", "id", "bench-1")  # a section that did not exist
    text = path.read_text()
    assert text.count("calibration =") == 1 and "# bench scope" in text and "width_px = 640 # small" in text
    import tomllib

    data = tomllib.loads(text)
    assert data["camera"] == {"width_px": 640, "calibration": "calibration.json"}
    assert data["scan"] == {"fields": 3} and data["device"] == {"id": "bench-1"}


def test_calibration_file_sets_the_scale_relative_to_the_config(tmp_path):
    (tmp_path / "cal").mkdir()
    (tmp_path / "cal" / "calibration.json").write_text('{"um_per_px": 0.1234}')
    s = load_settings(write(tmp_path, "[camera]\ncalibration = 'cal/calibration.json'\num_per_px = 0.2\n"))
    assert s.camera.um_per_px == 0.1234
    assert s.camera.calibration == str(tmp_path / "cal" / "calibration.json")


@pytest.mark.parametrize("content, words", [(None, "not found"), ("{}", "unusable"), ('{"um_per_px": -1}', "implausible")])
def test_bad_calibration_file_is_a_config_error(tmp_path, content, words):
    if content is not None:
        (tmp_path / "calibration.json").write_text(content)
    with pytest.raises(ConfigError, match=words):
        load_settings(write(tmp_path, "[camera]\ncalibration = 'calibration.json'\n"))

"""Property tests: the Sangaboard reply parser gives a typed reply or its one typed error."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_interface import sangaboard_protocol as sp
from firmware_interface.errors import StageProtocolError

REPLY_TYPES = (sp.StepPosition, sp.Done, sp.Stopped, sp.NotMoving, sp.MovingState, sp.VersionLine,
               sp.Aborted, sp.Zeroed, sp.KeyValue, sp.InvalidCommand, sp.ErrorLine, sp.EndMarker,
               sp.Text)

protocol_bytes = st.lists(
    st.one_of(st.binary(max_size=4), st.sampled_from(
        [b"done", b".", b"stopped", b"true", b"false", b"Sangaboard Firmware v", b"1", b"0",
         b"-", b" ", b"12345678901", b"Error: ", b"stage is not moving", b"Move aborted",
         b"position reset to 0 0 0", b"--END--", b"minimum step delay ", b"ramp_time ",
         b"Invalid command", b"\r", b"\n", b"\xfe", b"Endstops: min"])),
    max_size=12,
).map(b"".join)


@settings(max_examples=150, deadline=None)
@given(protocol_bytes)
def test_parse_reply_typed_or_protocol_error(raw: bytes) -> None:
    try:
        reply = sp.parse_reply(raw)
    except StageProtocolError:
        return
    assert isinstance(reply, REPLY_TYPES)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_parse_reply_arbitrary_bytes(raw: bytes) -> None:
    try:
        reply = sp.parse_reply(raw)
    except StageProtocolError:
        assert any(b < 0x20 or b > 0x7e for b in raw.rstrip(b"\r\n")) or len(raw) > sp.MAX_LINE_CHARS \
            or raw.strip().count(b" ") == 2
        return
    assert isinstance(reply, REPLY_TYPES)


@settings(max_examples=200, deadline=None)
@given(protocol_bytes)
def test_only_done_words_are_done(raw: bytes) -> None:
    try:
        reply = sp.parse_reply(raw)
    except StageProtocolError:
        return
    if isinstance(reply, sp.Done):
        assert raw.strip().lower() in (b"done", b"done.")


steps = st.integers(min_value=sp.LONG_MIN, max_value=sp.LONG_MAX)


@settings(max_examples=200, deadline=None)
@given(steps, steps, steps)
def test_position_round_trip(x: int, y: int, z: int) -> None:
    assert sp.parse_reply(f"{x} {y} {z}\r\n".encode()) == sp.StepPosition(x, y, z)


@settings(max_examples=100, deadline=None)
@given(st.integers(min_value=sp.LONG_MAX + 1, max_value=10**11 - 1))
def test_position_outside_long_is_an_error(big: int) -> None:
    try:
        sp.parse_reply(f"0 {big} 0")
    except StageProtocolError:
        return
    raise AssertionError("a step count beyond a 32-bit long was accepted")


def test_version_variants() -> None:
    for text, version, suffix in (("Sangaboard Firmware v1.0.4", "1.0.4", ""),
                                  ("Sangaboard Firmware v1.0-beta", "1.0", "-beta"),
                                  ("Sangaboard Firmware v0.5.1", "0.5.1", ""),
                                  ("Sangaboard Firmware v1.0.1-dev", "1.0.1", "-dev")):
        reply = sp.parse_reply(text)
        assert isinstance(reply, sp.VersionLine) and reply.is_sangaboard
        assert (reply.version, reply.suffix) == (version, suffix)
    assert isinstance(sp.parse_reply("Grbl 1.1h ['$' for help]"), sp.Text)


def test_wording_variants() -> None:
    assert sp.parse_reply("ramp time 0") == sp.KeyValue("ramp_time", "0")
    assert sp.parse_reply("ramp_time 0") == sp.KeyValue("ramp_time", "0")
    assert sp.parse_reply("minimum step delay 1000").as_int() == 1000  # type: ignore[union-attr]
    assert sp.parse_reply("done") == sp.parse_reply("done.") == sp.Done()
    assert isinstance(sp.parse_reply("Invalid command"), sp.InvalidCommand)
    assert isinstance(sp.parse_reply("Type 'help' for a list of commands."), sp.InvalidCommand)
    assert sp.parse_reply("Error: stage is not moving") == sp.NotMoving()
    assert sp.endstops_from_modules(["Light Sensor: TSL2591", "Endstops: min soft"]) == ("min", "soft")

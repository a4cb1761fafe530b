import pytest

from agent.results.names import format_name, parse_name


def test_format_is_the_milab_layout():
    assert format_name(1, 22800.4, 54359, 5, 22250.2) == "0001_22800_54359_005_22250.jpg"
    assert format_name(12345, 0, 0, 0, 0) == "12345_0_0_000_0.jpg"


def test_parse_round_trip_and_index():
    parsed = parse_name("0152_22800_54359_005_22250.jpg")
    assert (parsed.image_number, parsed.x_um, parsed.y_um, parsed.stack_index, parsed.focus_measure) == (
        152, 22800, 54359, 5, 22250)
    assert parsed.image_index == 151
    assert parse_name(parsed.filename()) == parsed


@pytest.mark.parametrize("name", ["cells.json", "0152_22800_54359_005.jpg", "abcd_1_2_003_4.jpg",
                                  "0000_1_2_003_4.jpg", "0152_1_2_3_4.jpg", "0152_-1_2_003_4.jpg",
                                  "0152_1_2_003_4.png", "notes.txt"])
def test_non_milab_names_are_rejected(name):
    assert parse_name(name) is None


def test_format_refuses_what_a_milab_name_cannot_hold():
    with pytest.raises(ValueError):
        format_name(0, 1, 1, 0, 1)
    with pytest.raises(ValueError):
        format_name(1, -5, 1, 0, 1)

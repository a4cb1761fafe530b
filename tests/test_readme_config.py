"""Every setting is in the README's configuration table, and the table names no setting that is gone."""

import dataclasses
import re

from agent.config import Settings
from tests.conftest import REPO


def documented_keys() -> set[str]:
    keys = set()
    for line in (REPO / "README.md").read_text(encoding="utf-8").splitlines():
        if line.startswith("| `"):
            first_cell = line.split("|")[1]
            keys.update(re.findall(r"`([a-z_]+\.[a-z_0-9]+)`", first_cell))
    return keys


def setting_keys() -> set[str]:
    settings = Settings()
    return {
        f"{section.name}.{f.name}"
        for section in dataclasses.fields(settings)
        for f in dataclasses.fields(getattr(settings, section.name))
    }


def test_every_setting_is_documented():
    assert sorted(setting_keys() - documented_keys()) == []


def test_no_documented_setting_is_unknown():
    assert sorted(documented_keys() - setting_keys()) == []

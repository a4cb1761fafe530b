"""The broker announces a killed daemon as offline (its retained will)."""

from __future__ import annotations

from tests.publish.conftest import WAIT_S, wait_until, write_config

DEV = "will-dev"


def test_will_fires_when_the_daemon_is_killed(tmp_path, broker, subscribers, daemons):
    sub = subscribers(broker.port, [f"wbcscope/v1/{DEV}/status"])
    daemon = daemons(write_config(tmp_path / "dev.toml", broker.port, device=DEV))
    wait_until(lambda: any(m.json()["online"] for m in sub.messages), WAIT_S, "the birth message")
    assert sub.messages[-1].json()["state"] == "idle"

    daemon.kill()  # SIGKILL: no chance to say goodbye, the broker must do it
    wait_until(lambda: sub.messages[-1].json()["online"] is False, WAIT_S, "the will")
    assert sub.messages[-1].json()["state"] == "offline"

    late = subscribers(broker.port, [f"wbcscope/v1/{DEV}/status"])  # retained: newcomers see it too
    wait_until(lambda: late.messages, WAIT_S, "the retained status")
    assert late.messages[-1].retain and late.messages[-1].json()["online"] is False

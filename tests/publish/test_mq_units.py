"""Unit checks of the pieces under the daemon: command validation, outbox, forwarder, sd_notify, disk floor."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

import pytest

from agent.errors import WbcscopeError
from agent.publish.control import CommandError, parse_command, reply_topic_ok
from agent.publish.mqtt import Event
from agent.publish.outbox import DiskFloorError, Forwarder, Outbox, check_disk_floor
from agent.publish.sdnotify import Notifier


def test_commands_validated():
    cmd = parse_command(b'{"cmd": "start_scan", "params": {"test_id": "A_1", "fields": 3, "resume": false}, "id": 4}',
                        max_bytes=1000)
    assert cmd.name == "start_scan" and cmd.params == {"test_id": "A_1", "fields": 3, "resume": False}
    assert cmd.request_id == 4
    for bad in (b'{"cmd": "start_scan", "params": {"test_id": ".."}}', b'{"cmd": "ping"}' + b" " * 2000,
                b'{"cmd": "ping", "id": "a b"}', b'{"cmd": "start_scan", "params": {"wbc_target": 1.5}}'):
        with pytest.raises(CommandError):
            parse_command(bad, max_bytes=1000)
    assert issubclass(CommandError, WbcscopeError) and issubclass(CommandError, ValueError)
    assert reply_topic_ok("a/b") and not reply_topic_ok("a/#") and not reply_topic_ok("$SYS/x")
    assert not reply_topic_ok("x" * 300) and not reply_topic_ok("")


@dataclass
class FakeLink:
    connected: bool = True

    def __post_init__(self):
        self.sent: list[tuple[int, str]] = []

    def publish(self, topic_name, payload, *, qos, retain, user_properties):
        self.sent.append((len(self.sent) + 1, topic_name))
        return len(self.sent)


def test_outbox_keeps_order_and_deletes_only_on_puback(tmp_path):
    with Outbox(tmp_path / "o.sqlite3") as box:
        for i in range(5):
            box.put(f"t/{i}", b"x", user_properties={"msg_id": str(i)}, field_key=("T", i))
        assert box.depth() == 5 and box.enqueued_indexes("T") == set(range(5))
        link = FakeLink(connected=False)
        fwd = Forwarder(link, box, window=2)
        fwd.pump()
        assert link.sent == []  # nothing handed over while offline
        link.connected = True
        fwd.on_event(Event("connected"))
        assert [t for _, t in link.sent] == ["t/0", "t/1"]  # window of 2, in order
        fwd.on_event(Event("puback", mid=1, ok=False, reason="Not authorized"))
        assert box.depth() == 5 and fwd.rejected == 1  # refused: kept for the next start
        fwd.on_event(Event("puback", mid=2))
        fwd.on_event(Event("puback", mid=3))
        assert box.depth() == 3
        assert [m.topic for m in box.pending()] == ["t/0", "t/3", "t/4"]
        box.close()  # close twice is fine
    reopened = Outbox(tmp_path / "o.sqlite3")
    assert [m.user_properties["msg_id"] for m in reopened.pending()] == ["0", "3", "4"]
    reopened.close()


def test_sd_notify_datagrams(tmp_path):
    path = tmp_path / "n.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(str(path))
    server.settimeout(5)
    notifier = Notifier({"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "4000000", "WATCHDOG_PID": str(os.getpid())})
    assert notifier.watchdog_interval_s == 2.0
    assert notifier.ready("idle")
    assert server.recv(100) == b"READY=1\nSTATUS=idle"
    assert notifier.watchdog() and server.recv(100) == b"WATCHDOG=1"
    notifier.close()
    notifier.close()
    server.close()
    assert not Notifier({}).ready("x") and Notifier({}).watchdog_interval_s is None
    assert Notifier({"WATCHDOG_USEC": "100", "WATCHDOG_PID": "1"}).watchdog_interval_s is None  # not our pid


def test_disk_floor(tmp_path):
    assert check_disk_floor(tmp_path, 0) > 0
    with pytest.raises(DiskFloorError, match="floor"):
        check_disk_floor(tmp_path / "not" / "yet", 1e12)

"""A thin wrapper around a paho-mqtt 2.x client.

paho runs its network loop in its own thread and calls our callbacks from there. The callbacks do no
work: each turns what happened into an ``Event`` and puts it on a queue that the owner (daemon, publish
command, fleet view) reads in its own thread. That keeps slow work (SQLite, JSON, scans) out of paho's
loop, where it would delay keepalives and acknowledgements.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import queue
import socket
import ssl
from dataclasses import dataclass, field
from typing import Any

from agent.config import MqttSettings
from agent.errors import ConfigError, WbcscopeError

log = logging.getLogger(__name__)


class _PahoNoise(logging.Filter):
    """paho logs 'Client is not connected' as an error on every retry while the broker is away, and a
    receive error on every reconnect; MqttLink reports the latter itself, once, with a hint."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(("Client is not connected", "failed to receive on socket"))


_paho_log = logging.getLogger(f"{__name__}.paho")
_paho_log.addFilter(_PahoNoise())

PREFIX = "wbcscope/v1"
ENV_USERNAME = "WBCSCOPE_MQTT_USERNAME"
ENV_PASSWORD = "WBCSCOPE_MQTT_PASSWORD"


class MqttError(WbcscopeError, ConnectionError):
    """The broker connection could not be set up or used."""


def topic(device: str, *parts: str) -> str:
    return "/".join((PREFIX, device, *parts))


@dataclass
class Event:
    kind: str
    """'connected', 'connect_failed', 'disconnected', 'puback', 'message' or 'subscribed'."""
    mid: int = 0
    ok: bool = True
    reason: str = ""
    """For a failed connect: one line saying what went wrong and what to check."""
    fatal: bool = False
    """A failed connect that retrying will not fix (login refused, certificate not accepted)."""
    topic: str = ""
    payload: bytes = b""
    user_properties: dict[str, str] = field(default_factory=dict)
    response_topic: str = ""
    correlation: bytes | None = None
    retain: bool = False

    @property
    def connection_trouble(self) -> bool:
        """A refused or failed connect, or a disconnect with a reason worth telling (see ``reason``)."""
        return not self.ok and self.kind in ("connected", "connect_failed", "disconnected")


_CLIENT_CLASS = None


def _paho():
    # Imported here so commands that never touch MQTT do not need the dependency installed.
    global _CLIENT_CLASS
    try:
        import paho.mqtt.client as client
        from paho.mqtt.enums import CallbackAPIVersion
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties
    except ImportError:
        raise MqttError("MQTT needs paho-mqtt >= 2.0 (pip install 'paho-mqtt>=2.0')") from None
    if _CLIENT_CLASS is None:
        class _Client(client.Client):
            """paho's client, remembering why the last (re)connect or receive failed.

            paho's network loop catches the OSError of a failed connect (refused, unresolvable, TLS
            handshake) and calls ``on_connect_fail`` without it; this keeps it for that callback. A TLS
            alert after the handshake (TLS 1.3: a client certificate the broker wanted or refused) comes
            from a receive, caught the same way before ``on_disconnect``.
            """

            last_connect_error: OSError | None = None
            last_receive_error: OSError | None = None

            def _sock_recv(self, bufsize: int) -> bytes:
                try:
                    return super()._sock_recv(bufsize)
                except (BlockingIOError, InterruptedError):
                    raise
                except OSError as exc:
                    self.last_receive_error = exc
                    raise

            def reconnect(self):
                try:
                    result = super().reconnect()
                    self.last_connect_error = None
                    return result
                except OSError as exc:
                    self.last_connect_error = exc
                    raise
        _CLIENT_CLASS = _Client
    return _CLIENT_CLASS, client, CallbackAPIVersion, PacketTypes, Properties


def credentials(settings: MqttSettings) -> tuple[str, str]:
    """Username and password: a non-empty environment variable wins over the file (secrets stay out of
    config files)."""
    return (os.environ.get(ENV_USERNAME) or settings.username, os.environ.get(ENV_PASSWORD) or settings.password)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def describe_connect_error(exc: BaseException | None, host: str, port: int, *,
                           tls: bool = False) -> tuple[str, bool]:
    """One line for a connect that failed before the broker answered, and whether retrying is pointless."""
    where = f"{host}:{port}"
    if tls and isinstance(exc, (ConnectionResetError, ssl.SSLEOFError)):
        return f"TLS handshake with {where} failed ({exc}); is mqtt.port a TLS listener?", False
    if isinstance(exc, ssl.SSLCertVerificationError):
        why = getattr(exc, "verify_message", None) or exc
        return (f"TLS: the certificate of {where} was not accepted ({why}); check mqtt.ca_file and that the "
                "certificate is issued for mqtt.host"), True
    if isinstance(exc, ssl.SSLError):
        why = getattr(exc, "reason", None) or exc
        return (f"TLS handshake with {where} failed ({why}); check mqtt.port, mqtt.tls and "
                "mqtt.cert_file / mqtt.key_file"), True
    if isinstance(exc, ConnectionRefusedError):
        return f"{where} refused the connection (broker down or wrong mqtt.port)", False
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve mqtt.host {host!r} ({exc.strerror})", False
    if isinstance(exc, TimeoutError):
        return f"no answer from {where} (timed out)", False
    if exc is not None:
        return f"cannot connect to {where}: {exc}", False
    return f"cannot connect to {where}", False


def describe_tls_receive_error(exc: BaseException | None, host: str, port: int) -> str | None:
    """One line for a TLS alert the broker sent after the handshake (e.g. its missing client certificate)."""
    if not isinstance(exc, ssl.SSLError) or isinstance(exc, ssl.SSLEOFError):
        return None
    why = getattr(exc, "reason", None) or str(exc)
    hint = "check mqtt.cert_file / mqtt.key_file (the broker wants a client certificate it trusts)"
    return f"broker {host}:{port} ended the TLS session ({why}); {hint}"


def describe_refusal(reason: str, host: str, port: int) -> tuple[str, bool]:
    """One line for a CONNACK refusal (the broker answered, then said no), and whether it is a login problem."""
    lowered = reason.lower()
    if "authori" in lowered or "user name or password" in lowered:
        return (f"broker {host}:{port} refused the login ({reason}); check mqtt.username / mqtt.password or "
                f"{ENV_USERNAME} / {ENV_PASSWORD}"), True
    return f"broker {host}:{port} refused the connection ({reason})", False


class MqttLink:
    """One client connection. ``start`` connects in the background and keeps reconnecting."""

    def __init__(self, settings: MqttSettings, client_id: str, events: "queue.Queue[Event]", *,
                 will: tuple[str, bytes] | None = None) -> None:
        if not settings.host:
            raise ConfigError("mqtt.host is not set")
        if settings.reconnect_max_s < settings.reconnect_min_s:
            raise ConfigError("mqtt.reconnect_max_s must not be below mqtt.reconnect_min_s")
        self.settings = settings
        self.events = events
        self.v5 = settings.protocol == "5"
        client_class, client, api, self._packet_types, self._properties = _paho()
        proto = client.MQTTv5 if self.v5 else client.MQTTv311
        kwargs: dict[str, Any] = {"callback_api_version": api.VERSION2, "client_id": client_id, "protocol": proto}
        if not self.v5:
            # Subscriptions are renewed after every connect, so nothing is gained from a broker session.
            kwargs["clean_session"] = True
        self._client = client_class(**kwargs)
        # paho's own errors (e.g. a TLS alert after the handshake) reach the journal through this logger.
        self._client.enable_logger(_paho_log)
        self._client.max_inflight_messages_set(settings.max_inflight)
        self._client.reconnect_delay_set(settings.reconnect_min_s, settings.reconnect_max_s)
        user, password = credentials(settings)
        if password and not user:
            raise ConfigError(f"mqtt.password (or {ENV_PASSWORD}) is set but no username: set mqtt.username "
                              f"or {ENV_USERNAME}")
        if user:
            self._client.username_pw_set(user, password or None)
            if password and not settings.tls and not _is_loopback(settings.host):
                log.warning("mqtt.tls is off: the broker password for %s travels unencrypted", settings.host)
        if settings.tls:
            self._set_tls()
        else:
            for key in ("ca_file", "cert_file", "key_file"):
                if getattr(settings, key):
                    raise ConfigError(f"mqtt.{key} is set but mqtt.tls = false: set mqtt.tls = true "
                                      "(or remove the file setting)")
        if will is not None:
            self._client.will_set(will[0], will[1], qos=1, retain=True)
        self._client.on_connect = self._on_connect
        self._client.on_connect_fail = self._on_connect_fail
        self._client.on_disconnect = self._on_disconnect
        self._client.on_publish = self._on_publish
        self._client.on_message = self._on_message
        self._client.on_subscribe = self._on_subscribe
        self._started = False
        self._closed = False

    def _set_tls(self) -> None:
        s = self.settings
        for key in ("ca_file", "cert_file", "key_file"):
            path = getattr(s, key)
            if path and not os.path.isfile(path):
                raise ConfigError(f"mqtt.{key}: no such file {path}")
        if s.key_file and not s.cert_file:
            raise ConfigError("mqtt.key_file needs mqtt.cert_file")
        try:
            self._client.tls_set(ca_certs=s.ca_file or None, certfile=s.cert_file or None,
                                 keyfile=s.key_file or None, cert_reqs=ssl.CERT_REQUIRED,
                                 tls_version=ssl.PROTOCOL_TLS_CLIENT)
        except (ssl.SSLError, OSError, ValueError) as exc:
            raise ConfigError(f"mqtt TLS setup failed: {exc}") from None

    # -- lifecycle ----------------------------------------------------------------------------------
    def start(self) -> None:
        """Connect in the background; an unreachable broker is retried with backoff, never raised."""
        if self._started:
            return
        self._started = True
        self._client.connect_async(self.settings.host, self.settings.port, keepalive=self.settings.keepalive_s)
        self._client.loop_start()

    def close(self, *, clean: bool = True) -> None:
        """Disconnect (clean: the broker does not send our will) and stop paho's thread. Safe twice."""
        if self._closed:
            return
        self._closed = True
        if self._started:
            if clean:
                self._client.disconnect()
            self._client.loop_stop()

    @property
    def connected(self) -> bool:
        return self._client.is_connected()

    # -- sending ------------------------------------------------------------------------------------
    def publish(self, topic_name: str, payload: bytes, *, qos: int = 0, retain: bool = False,
                user_properties: dict[str, str] | None = None, correlation: bytes | None = None) -> int:
        """Hand a message to paho; returns its mid (whose PUBACK arrives later as a 'puback' event)."""
        props = None
        if self.v5 and (user_properties or correlation is not None):
            props = self._properties(self._packet_types.PUBLISH)
            if user_properties:
                props.UserProperty = [(k, v) for k, v in user_properties.items()]
            if correlation is not None:
                props.CorrelationData = correlation
        info = self._client.publish(topic_name, payload, qos=qos, retain=retain, properties=props)
        # NO_CONN still queues QoS>0 messages inside paho; they go out after the reconnect.
        if info.rc not in (0, 4):
            raise MqttError(f"publish to {topic_name} refused by the client (rc {info.rc})")
        return info.mid

    def subscribe(self, topic_filter: str, qos: int = 1) -> None:
        self._client.subscribe(topic_filter, qos=qos)

    # -- paho callbacks (paho's thread: enqueue only) --------------------------------------------------
    def _on_connect(self, _client, _userdata, _flags, reason_code, _props) -> None:
        if not reason_code.is_failure:
            self.events.put(Event("connected", reason=str(reason_code)))
            return
        line, fatal = describe_refusal(str(reason_code), self.settings.host, self.settings.port)
        self.events.put(Event("connected", ok=False, reason=line, fatal=fatal))

    def _on_connect_fail(self, client, _userdata) -> None:
        line, fatal = describe_connect_error(client.last_connect_error, self.settings.host, self.settings.port,
                                             tls=self.settings.tls)
        self.events.put(Event("connect_failed", ok=False, reason=line, fatal=fatal))

    def _on_disconnect(self, client, _userdata, _flags, reason_code, _props) -> None:
        error, client.last_receive_error = client.last_receive_error, None
        line = describe_tls_receive_error(error, self.settings.host, self.settings.port)
        if line is not None:
            self.events.put(Event("disconnected", ok=False, reason=line, fatal=True))
        else:
            reason = str(reason_code) if error is None else f"{reason_code}: {error}"
            self.events.put(Event("disconnected", reason=reason))

    def _on_publish(self, _client, _userdata, mid, reason_code, _props) -> None:
        # v5 reason codes below 0x80 are successes ("no matching subscribers" included).
        self.events.put(Event("puback", mid=mid, ok=not reason_code.is_failure, reason=str(reason_code)))

    def _on_subscribe(self, _client, _userdata, mid, _reason_codes, _props) -> None:
        self.events.put(Event("subscribed", mid=mid))

    def _on_message(self, _client, _userdata, message) -> None:
        props = getattr(message, "properties", None)
        user, response, correlation = {}, "", None
        if props is not None:
            user = {str(k): str(v) for k, v in getattr(props, "UserProperty", []) or []}
            response = getattr(props, "ResponseTopic", "") or ""
            correlation = getattr(props, "CorrelationData", None)
        self.events.put(Event("message", topic=message.topic, payload=bytes(message.payload),
                              user_properties=user, response_topic=response, correlation=correlation,
                              retain=bool(message.retain)))

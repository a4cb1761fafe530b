"""A throwaway PKI (``openssl`` CLI) and a Mosquitto with a TLS + password listener beside a plain one.

The plain loopback listener lets the tests' own subscribers watch without credentials; the daemon and
the command-line tools under test use the TLS listener, which requires a username and password from a
``mosquitto_passwd`` file and, optionally, a client certificate signed by the test CA.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.publish.conftest import Broker, free_port

OPENSSL = shutil.which("openssl")
MOSQUITTO_PASSWD = shutil.which("mosquitto_passwd") or (
    "/usr/bin/mosquitto_passwd" if os.path.exists("/usr/bin/mosquitto_passwd") else None)
USER, PASSWORD = "microscope-07", "s3cret-pass"


def _openssl(*args: str, cwd: Path) -> None:
    done = subprocess.run([OPENSSL, *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"openssl {' '.join(args)}: {done.stderr}"


def _key(cwd: Path, name: str) -> None:
    _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", name, cwd=cwd)


def make_ca(cwd: Path, name: str) -> tuple[Path, Path]:
    _key(cwd, f"{name}.key")
    _openssl("req", "-x509", "-new", "-key", f"{name}.key", "-out", f"{name}.pem", "-days", "2",
             "-subj", f"/CN={name}", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=cwd)
    return cwd / f"{name}.pem", cwd / f"{name}.key"


def issue(cwd: Path, name: str, ca: str, *, server: bool) -> tuple[Path, Path]:
    """A leaf certificate signed by ``ca``: for 127.0.0.1/localhost (server) or a client."""
    _key(cwd, f"{name}.key")
    _openssl("req", "-new", "-key", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=cwd)
    ext = cwd / f"{name}.ext"
    lines = ["basicConstraints=critical,CA:FALSE", "keyUsage=critical,digitalSignature,keyEncipherment"]
    lines += (["extendedKeyUsage=serverAuth", "subjectAltName=IP:127.0.0.1,DNS:localhost"] if server
              else ["extendedKeyUsage=clientAuth"])
    ext.write_text("\n".join(lines) + "\n")
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
             "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile", ext.name, cwd=cwd)
    return cwd / f"{name}.pem", cwd / f"{name}.key"


@dataclass
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    wrong_ca: Path
    """A CA that did not sign the broker's certificate."""


def make_pki(directory: Path) -> Pki:
    directory.mkdir(parents=True, exist_ok=True)
    ca, _ = make_ca(directory, "ca")
    server_cert, server_key = issue(directory, "server", "ca", server=True)
    client_cert, client_key = issue(directory, "client", "ca", server=False)
    wrong_ca, _ = make_ca(directory, "other-ca")
    return Pki(ca, server_cert, server_key, client_cert, client_key, wrong_ca)


class TlsBroker(Broker):
    """``port``: plain, anonymous (the tests' subscribers); ``tls_port``: TLS + password (+ client cert)."""

    def __init__(self, directory: Path, pki: Pki, *, require_certificate: bool) -> None:
        super().__init__(directory)
        self.pki = pki
        self.tls_port = free_port()
        passwd = directory / "passwd"
        done = subprocess.run([MOSQUITTO_PASSWD, "-c", "-b", str(passwd), USER, PASSWORD], capture_output=True,
                              text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        passwd.chmod(0o600)
        lines = ["per_listener_settings true", "persistence false",
                 f"listener {self.port} 127.0.0.1", "allow_anonymous true",
                 f"listener {self.tls_port} 127.0.0.1", "allow_anonymous false", f"password_file {passwd}",
                 f"cafile {pki.ca}", f"certfile {pki.server_cert}", f"keyfile {pki.server_key}",
                 f"require_certificate {'true' if require_certificate else 'false'}"]
        if os.geteuid() == 0:
            lines.append("user root")
        self.conf.write_text("\n".join(lines) + "\n")


def tls_broker(tmp_path: Path, *, require_certificate: bool):
    from tests.publish.conftest import MOSQUITTO

    if MOSQUITTO is None or MOSQUITTO_PASSWD is None or OPENSSL is None:
        pytest.skip("needs mosquitto, mosquitto_passwd (package mosquitto) and openssl")
    pki = make_pki(tmp_path / "pki")
    directory = tmp_path / "broker"
    directory.mkdir()
    broker = TlsBroker(directory, pki, require_certificate=require_certificate)
    broker.start()
    return broker


def mqtt_tls_section(broker: TlsBroker, *, ca: Path | None = None, client_cert: bool = False,
                     username: str = "", password: str = "") -> str:
    """The ``[mqtt]`` keys (after host/port) for the TLS listener, to pass as write_config's mqtt_extra."""
    lines = ["tls = true", f'ca_file = "{ca or broker.pki.ca}"']
    if client_cert:
        lines += [f'cert_file = "{broker.pki.client_cert}"', f'key_file = "{broker.pki.client_key}"']
    if username:
        lines.append(f'username = "{username}"')
    if password:
        lines.append(f'password = "{password}"')
    return "\n".join(lines)

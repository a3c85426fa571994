"""The control plane over TLS (control.tls.*), with client certificates (mutual TLS).

A real server serves gRPC over TLS with a certificate from a throwaway CA and asks clients
for a certificate from another one; stalwart-mp-admin connects with --tls-* options.
"""
from __future__ import annotations

import subprocess
import tomllib
from collections.abc import Iterator

import pytest
from cryptography.hazmat.primitives import serialization

from tests.control.chain import write_chain
from tests.harness import BIN, Server, base_config, cli, free_port

SERVER_NAME = "control.test.example"


def _pem(cert) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory) -> Iterator[tuple[Server, dict]]:
    folder = tmp_path_factory.mktemp("control-tls")
    chain, key, (_, server_ca) = write_chain(folder / "server", SERVER_NAME)
    client_chain, client_key, (_, client_ca) = write_chain(folder / "client", "admin-laptop")
    files = {"server-ca": folder / "server-ca.pem", "client-ca": folder / "client-ca.pem",
             "client-cert": client_chain, "client-key": client_key}
    files["server-ca"].write_bytes(_pem(server_ca))
    files["client-ca"].write_bytes(_pem(client_ca))
    http = free_port()
    config = base_config(folder, http, workers=1) + f"""
[control.tls]
certificate = "{chain}"
private-key = "{key}"
client-ca = "{files['client-ca']}"
"""
    server = Server(folder, http, config)
    server.start(wait_workers=1)
    server.wait_for((server.run_dir / "control.token").exists, "the control token")
    files["bind"] = tomllib.loads(server.config_text)["control"]["bind"]
    files["token"] = server.run_dir / "control.token"
    try:
        yield server, files
    finally:
        server.stop()


def _admin(files: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "stalwart-mp-admin"), "--server", files["bind"],
                           "--token-file", str(files["token"]), "--timeout", "5", *args],
                          check=False, capture_output=True, text=True, timeout=60)


def test_mutual_tls_with_the_admin_cli(tls_server):
    _, files = tls_server
    done = _admin(files, "--tls-ca", str(files["server-ca"]),
                  "--tls-server-name", SERVER_NAME, "--tls-cert", str(files["client-cert"]),
                  "--tls-key", str(files["client-key"]), "server", "status")
    assert done.returncode == 0, done.stderr
    assert "processes (" in done.stdout


def test_refused_without_a_client_certificate_or_tls(tls_server):
    _, files = tls_server
    no_cert = _admin(files, "--tls-ca", str(files["server-ca"]),
                     "--tls-server-name", SERVER_NAME, "server", "status")
    assert no_cert.returncode == 3, no_cert.stdout + no_cert.stderr
    plain = _admin(files, "server", "status")
    assert plain.returncode == 3, plain.stdout + plain.stderr
    assert "connect with --tls-ca" in plain.stderr
    wrong_name = _admin(files, "--tls-ca", str(files["server-ca"]),
                        "--tls-cert", str(files["client-cert"]),
                        "--tls-key", str(files["client-key"]), "server", "status")
    assert wrong_name.returncode == 3, "127.0.0.1 is not the name in the certificate"
    assert "--tls-server-name" in wrong_name.stderr


def test_client_options_checked(tls_server):
    _, files = tls_server
    half = _admin(files, "--tls-ca", str(files["server-ca"]), "--tls-cert",
                  str(files["client-cert"]), "server", "status")
    assert half.returncode == 2 and "--tls-cert and --tls-key go together" in half.stderr
    missing = _admin(files, "--tls-ca", "/nonexistent/ca.pem", "server", "status")
    assert missing.returncode == 2 and "cannot read the CA file" in missing.stderr


def test_config_needs_certificate_and_key_together(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text(base_config(tmp_path, free_port(), workers=1) + """
[control.tls]
certificate = "chain.pem"
client-ca = "ca.pem"
""")
    done = cli("check-config", "--config", str(path))
    assert done.returncode != 0
    assert ("control.tls.private-key: set control.tls.certificate and control.tls.private-key "
            "together") in done.stdout + done.stderr

"""Bootstrap settings of the server: identity, processes, listeners, TLS, control, logging."""
from __future__ import annotations

import os
from collections.abc import Iterator

from stalwart_mp.config.schema import (
    REQUIRED,
    SCHEMA,
    BindAddress,
    Bool,
    Choice,
    ConfigError,
    Duration,
    Int,
    IpNetwork,
    ListOf,
    Setting,
    Str,
    parse_host_port,
)

PROTOCOLS = ("smtp", "submission", "lmtp", "imap", "pop3", "managesieve", "http")

_HOSTNAME = Str(
    r"(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*"
    r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?",
    label="a host name such as mail.example.com",
)


SCHEMA.add(
    # --- identity and processes ---
    Setting(
        "server.hostname",
        _HOSTNAME,
        REQUIRED,
        "The server's fully qualified host name: used in SMTP greetings, EHLO, Received "
        "headers and the self-signed certificate. Its A/AAAA and PTR records should match.",
    ),
    Setting(
        "server.workers",
        Int(min=1, max=512),
        lambda cfg: os.cpu_count() or 1,
        "Number of worker processes. Every worker serves every listener on the shared "
        "sockets. Default: the number of CPUs.",
    ),
    Setting(
        "server.data-dir",
        Str(nonempty=True),
        "data",
        "Folder of the embedded stores (LMDB, blobs, search index) and generated TLS "
        "material. Relative paths are resolved against the config file's folder.",
    ),
    Setting(
        "server.run-dir",
        Str(nonempty=True),
        "run",
        "Folder of runtime files: the event-bus socket, the status file, the control token, "
        "the metrics of every process. Cleared at start.",
    ),
    Setting(
        "server.user",
        Str(),
        "",
        "When started as root, drop privileges to this user after binding the listeners "
        '(e.g. "stalwart-mp"). Empty: stay as started (refused for root unless '
        "server.allow-root = true).",
    ),
    Setting("server.group", Str(), "", "Group to switch to with server.user (default: its own)."),
    Setting(
        "server.allow-root",
        Bool(),
        False,
        "Allow the workers to keep running as root when no server.user is set. Not advised.",
    ),
    Setting(
        "server.graceful-timeout",
        Duration(),
        30.0,
        "On stop or reload, how long old workers may finish their sessions before they are "
        "killed.",
    ),
    Setting(
        "server.heartbeat-timeout",
        Duration(),
        30.0,
        "A worker whose event loop has not ticked for this long is considered hung: it is "
        "killed (SIGABRT, then SIGKILL) and replaced.",
    ),
    Setting(
        "server.max-connections",
        Int(min=1),
        8192,
        "Most connections one worker serves at once, over all listeners.",
    ),
    # --- listeners ---
    Setting(
        "server.listener.*.bind",
        ListOf(BindAddress(), min_items=1),
        REQUIRED,
        'Addresses to listen on, e.g. ["0.0.0.0:993", "[::]:993"].',
    ),
    Setting(
        "server.listener.*.protocol",
        Choice(*PROTOCOLS),
        REQUIRED,
        "What this listener speaks. smtp = MX on 25; submission = clients on 587/465; "
        "lmtp; imap; pop3; managesieve; http = JMAP, well-known, health and metrics.",
    ),
    Setting(
        "server.listener.*.tls.implicit",
        Bool(),
        False,
        "TLS from the first byte (ports 465, 993, 995, 443). Otherwise the protocol offers "
        "STARTTLS where it has one.",
    ),
    Setting(
        "server.listener.*.backlog",
        Int(min=1, max=65535),
        1024,
        "Length of the kernel's queue of connections not yet accepted.",
    ),
    Setting(
        "server.listener.*.max-connections",
        Int(min=1),
        4096,
        "Most connections one worker serves at once on this listener.",
    ),
    Setting(
        "server.listener.*.max-connections-per-ip",
        Int(min=1),
        64,
        "Most connections one worker serves at once on this listener from one client IP "
        "(IPv6 clients are grouped by /64).",
    ),
    Setting(
        "server.listener.*.proxy-protocol",
        Bool(),
        False,
        "Expect a HAProxy PROXY protocol v1/v2 header on every connection (behind a load "
        "balancer); the client address is taken from it.",
    ),
    Setting(
        "server.listener.*.proxy-trusted-networks",
        ListOf(IpNetwork()),
        [],
        "When proxy-protocol is on, the networks allowed to send a PROXY header; empty = any. "
        "Connections from elsewhere are dropped.",
    ),
    Setting(
        "server.listener.*.timeout",
        Duration(),
        300.0,
        "Idle timeout of a connection on this listener.",
    ),
    # --- TLS ---
    Setting(
        "certificate.*.cert",
        Str(nonempty=True),
        REQUIRED,
        "PEM file with the certificate chain (leaf first).",
    ),
    Setting("certificate.*.private-key", Str(nonempty=True), REQUIRED, "PEM private key file."),
    Setting(
        "certificate.*.default",
        Bool(),
        False,
        "Use this certificate when the client sends no (or an unknown) SNI name.",
    ),
    Setting(
        "certificate.*.sni",
        ListOf(Str(nonempty=True)),
        [],
        "Server names this certificate answers for; empty = the DNS names in the certificate.",
    ),
    Setting(
        "tls.min-version",
        Choice("TLSv1.2", "TLSv1.3"),
        "TLSv1.2",
        "Oldest TLS version accepted from clients.",
    ),
    Setting(
        "tls.handshake-timeout",
        Duration(),
        10.0,
        "How long a client may take to complete the TLS handshake.",
    ),
    # --- control plane and admin ---
    Setting(
        "control.bind",
        BindAddress(allow_unix=True),
        "127.0.0.1:50051",
        'Address of the gRPC control plane: "HOST:PORT" or "unix:/path". Keep it on '
        "loopback or a unix socket: it administers the server.",
    ),
    Setting(
        "control.tls.certificate",
        Str(),
        "",
        "PEM certificate chain (leaf first) of the control plane. With it and "
        "control.tls.private-key, gRPC is served over TLS, for administration from other "
        "hosts (clients: stalwart-mp-admin --tls-ca). Empty: plain text, for loopback or a "
        "unix socket only.",
    ),
    Setting("control.tls.private-key", Str(), "",
            "PEM private key of control.tls.certificate."),
    Setting(
        "control.tls.client-ca",
        Str(),
        "",
        "PEM file of CA certificates: when set, every client must also present a "
        "certificate issued by one of them (mutual TLS; stalwart-mp-admin --tls-cert/"
        "--tls-key), on top of the token or an administrator's password.",
    ),
    Setting(
        "admin.enabled",
        Bool(),
        False,
        "Run the web admin (the admin child: gunicorn serving admin_web on admin.bind). "
        "Off unless enabled: it administers the server over HTTP; keep it on loopback or "
        "behind a TLS proxy.",
    ),
    Setting(
        "admin.bind",
        BindAddress(),
        "127.0.0.1:8080",
        "Address of the web admin (gunicorn).",
    ),
    Setting(
        "admin.workers",
        Int(min=1, max=64),
        2,
        "Gunicorn worker processes of the web admin (4 threads each).",
    ),
    # --- logging and metrics ---
    Setting("logging.level", Choice("debug", "info", "warning", "error"), "info", "Log level."),
    Setting(
        "logging.format",
        Choice("logfmt", "json"),
        "logfmt",
        "One line per event: logfmt (key=value) or JSON.",
    ),
    Setting(
        "logging.file",
        Str(),
        "",
        "Log file (reopened on SIGUSR1 for logrotate); empty = standard error (journald).",
    ),
    Setting(
        "metrics.enabled",
        Bool(),
        True,
        "Serve Prometheus metrics at /metrics on the http listeners.",
    ),
    Setting(
        "metrics.allowed-networks",
        ListOf(IpNetwork()),
        ["127.0.0.0/8", "::1/128"],
        "Client networks allowed to read /metrics.",
    ),
)


@SCHEMA.check
def _listeners(cfg) -> Iterator[ConfigError]:
    """Each address bound by one listener only."""
    seen: dict[tuple[str, int], str] = {}
    for name in cfg.names("server.listener"):
        for addr in cfg.get(("server", "listener", name, "bind")):
            host, port = parse_host_port(addr)
            key = (host, port)
            if key in seen:
                yield ConfigError(
                    f"server.listener.{name}.bind",
                    f'{addr} is already bound by listener "{seen[key]}"',
                    addr,
                    True,
                )
            seen[key] = name


@SCHEMA.check
def _protocols_available(cfg) -> Iterator[ConfigError]:
    """A listener's protocol must be served by this build."""
    from stalwart_mp.worker.registry import available_protocols

    available = available_protocols()
    for name in cfg.names("server.listener"):
        proto = cfg.get(("server", "listener", name, "protocol"))
        if proto not in available:
            yield ConfigError(
                f"server.listener.{name}.protocol",
                "this protocol is not served by this version of stalwart-mp (served: "
                + ", ".join(sorted(available))
                + ")",
                proto,
                True,
            )


@SCHEMA.check
def _control_tls(cfg) -> Iterator[ConfigError]:
    """The control plane's TLS: certificate and key together; client CAs need both."""
    cert, key = cfg.get("control.tls.certificate"), cfg.get("control.tls.private-key")
    if bool(cert) != bool(key):
        missing = "control.tls.private-key" if cert else "control.tls.certificate"
        yield ConfigError(missing, "set control.tls.certificate and control.tls.private-key "
                          "together")
    if cfg.get("control.tls.client-ca") and not cert:
        yield ConfigError("control.tls.client-ca", "client certificates need TLS: set "
                          "control.tls.certificate and control.tls.private-key too")


@SCHEMA.check
def _one_default_certificate(cfg) -> Iterator[ConfigError]:
    defaults = [n for n in cfg.names("certificate") if cfg.get(("certificate", n, "default"))]
    if len(defaults) > 1:
        yield ConfigError(
            "certificate.*.default",
            "only one certificate may be the default; set on: " + ", ".join(defaults),
        )

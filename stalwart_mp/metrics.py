"""Prometheus metrics shared by every process (prometheus_client multiprocess mode).

The master points ``PROMETHEUS_MULTIPROC_DIR`` at ``<run-dir>/metrics`` (emptied at start)
before forking; each process writes its own files there and ``/metrics`` on any worker
aggregates them all, so a scrape sees the whole server whichever worker answers.
The master marks a dead child's live gauges as gone (``mark_process_dead``).
"""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest, multiprocess

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

connections_total = Counter(
    "stalwart_connections_total",
    "Connections accepted, by listener and protocol.",
    ["listener", "protocol"],
)
connections_rejected_total = Counter(
    "stalwart_connections_rejected_total",
    "Connections refused at accept, by listener and reason.",
    ["listener", "reason"],
)
connections_active = Gauge(
    "stalwart_connections_active",
    "Connections open now, by listener.",
    ["listener"],
    multiprocess_mode="livesum",
)
http_requests_total = Counter(
    "stalwart_http_requests_total",
    "HTTP requests answered, by listener, route and status code.",
    ["listener", "route", "status"],
)
messages_received_total = Counter(
    "stalwart_messages_received_total",
    "Messages accepted (SMTP/LMTP end of data answered with success), by protocol.",
    ["protocol"],
)
messages_delivered_total = Counter(
    "stalwart_messages_delivered_total",
    "Messages stored into a local mailbox, one per recipient account.",
)
outbound_recipients_total = Counter(
    "stalwart_outbound_recipients_total",
    "Outbound delivery attempts, one per recipient, by result: delivered, failed "
    "(permanently, or expired), deferred (to be tried again).",
    ["result"],
)
dsn_sent_total = Counter(
    "stalwart_dsn_sent_total",
    "Delivery status notifications sent to senders, by action (failed, delayed, "
    "delivered, relayed).",
    ["action"],
)
worker_processes = Gauge(
    "stalwart_worker_processes",
    "Worker processes running.",
    multiprocess_mode="livesum",
)


def render() -> bytes:
    """The text exposition of every process's metrics."""
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return generate_latest(registry)


def totals() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of every process, aggregated as ``/metrics`` shows them:
    {(sample name, sorted label pairs): value} (read by the control plane's status)."""
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in registry.collect() for s in family.samples}

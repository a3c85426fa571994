"""The dashboard's figures from a worker's Prometheus ``/metrics`` endpoint.

Any worker answers for the whole server (prometheus_client multiprocess mode). The text
exposition is parsed with prometheus_client's own parser; a scrape that fails leaves the
counters out of the dashboard with the reason, it never fails the page.
"""
from __future__ import annotations

import urllib.request
from collections import defaultdict
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

SCRAPE_TIMEOUT = 3.0


@dataclass(slots=True)
class Figures:
    """What the dashboard shows; ``error`` says why there is nothing."""

    connections: dict[str, dict[str, float]] = field(default_factory=dict)  # listener -> …
    messages: dict[str, float] = field(default_factory=dict)  # "received"/"delivered"/…
    error: str = ""


def parse(text: str) -> Figures:
    """Connections per listener (total, active, refused) and the message counters.

    Message counters are every ``stalwart_messages_<what>_total`` family summed over its
    labels (received, delivered...)."""
    figures = Figures()
    conn: dict[str, dict[str, float]] = defaultdict(lambda: {"total": 0.0, "active": 0.0,
                                                              "refused": 0.0})
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            name, labels, value = sample.name, sample.labels, sample.value
            if name == "stalwart_connections_total":
                conn[labels.get("listener", "?")]["total"] += value
                conn[labels.get("listener", "?")]["protocol"] = labels.get("protocol", "")
            elif name == "stalwart_connections_active":
                conn[labels.get("listener", "?")]["active"] += value
            elif name == "stalwart_connections_rejected_total":
                conn[labels.get("listener", "?")]["refused"] += value
            elif name.startswith("stalwart_messages_") and name.endswith("_total"):
                what = name.removeprefix("stalwart_messages_").removesuffix("_total")
                figures.messages[what] = figures.messages.get(what, 0.0) + value
    figures.connections = dict(sorted(conn.items()))
    return figures


def scrape(url: str) -> Figures:
    if not url:
        return Figures(error="no metrics endpoint is configured "
                       "(STALWART_MP_ADMIN_METRICS_URL, or an http listener)")
    try:
        with urllib.request.urlopen(url, timeout=SCRAPE_TIMEOUT) as resp:
            text = resp.read(8 * 1024 * 1024).decode("utf-8", "replace")
    except OSError as exc:
        return Figures(error=f"{url} cannot be read: {exc}")
    try:
        return parse(text)
    except ValueError as exc:
        return Figures(error=f"{url} did not return Prometheus text: {exc}")

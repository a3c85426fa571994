"""DNS for the mail checks (SPF, DKIM, DMARC, iprev) and later DANE and MTA-STS.

``stalwart_mp.dns.resolver`` holds the async resolver; ``stalwart_mp.dns.settings`` its
``[resolver]`` settings. This package module stays light (the master imports the settings
module before forking), so the resolver is imported on first use of a name below.
"""
from __future__ import annotations

from typing import Any

__all__ = ["DnsTempError", "Resolver", "ResolverConfig", "TlsaAnswer", "TlsaRecord"]
_EXPORTS = frozenset(__all__)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        from stalwart_mp.dns import resolver

        return getattr(resolver, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

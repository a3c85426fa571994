"""Settings of the fts stores (declared with their backends).

Only the stemming language is fts-specific; ``path`` (whoosh, sqlite) and the connection
settings (postgresql, mysql) are the shared store keys of ``store.settings``.
"""
from __future__ import annotations

from stalwart_mp.config.schema import SCHEMA, Choice, Setting
from stalwart_mp.store.fts_text import LANGUAGES
from stalwart_mp.store.types import serving

SCHEMA.add(
    Setting(
        "store.*.language",
        Choice(*LANGUAGES),
        "english",
        help=(
            "Default language of the full-text index: words are reduced to their stem in this "
            'language ("running" finds "run" and "runs") unless a message says otherwise. '
            '"none" matches whole words only. Changing it needs a re-index of every message.'
        ),
        when=("type", tuple(serving("fts"))),
    ),
)

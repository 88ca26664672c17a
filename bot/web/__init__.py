"""Member pages (answer, memorial, jobs); each module has ``setup(app, runtime)`` and may have ``CSS``.

A module's ``CSS`` is served by the app at ``/static/<module>.css``; pages link it with
:func:`stylesheet` (the Content-Security-Policy allows no inline styles or scripts).
"""

from __future__ import annotations

import hashlib
from functools import lru_cache


@lru_cache(maxsize=32)
def stylesheet(module: str, css: str) -> str:
    """``<link>`` to ``module``'s stylesheet (``__name__`` of the page module and its ``CSS``), with a
    version so that a changed stylesheet is fetched anew despite caching."""
    name = module.rsplit(".", 1)[-1]
    return f'<link rel="stylesheet" href="/static/{name}.css?v={hashlib.sha1(css.encode()).hexdigest()[:10]}">'

"""``/static/<name>``: the stylesheet and the small scripts of the web pages, from ``bot/web/static``, and
the member pages' own stylesheets (each page module's ``CSS``, collected by :func:`bot.app.create_app`).

Only the files that folder holds are served (read once at start-up; a fixed name → bytes table, so
no path ever reaches the file system). URLs carry ``?v=<hash>`` (:func:`bot.web.render.static_url`),
so browsers may keep a file for a year and still see a new version at once.
"""

from __future__ import annotations

import hashlib
from typing import Any

from aiohttp import web

from bot.web.render import STATIC, static_version

TYPES = {".css": "text/css", ".js": "text/javascript", ".svg": "image/svg+xml", ".png": "image/png",
         ".ico": "image/x-icon"}


def setup(app: web.Application, runtime: Any) -> None:
    """Add the ``/static/{name}`` route."""
    from bot.app import MODULE_SHEETS

    files: dict[str, tuple[bytes, str, str]] = {}
    for path in sorted(STATIC.iterdir()):
        ctype = TYPES.get(path.suffix)
        if path.is_file() and ctype is not None:
            files[path.name] = (path.read_bytes(), ctype, static_version(path.name))
    # The member pages' stylesheets (each page module's CSS, see bot.web.stylesheet) share the route.
    for name, css in app.get(MODULE_SHEETS, {}).items():
        if name in files:
            raise RuntimeError(f"/static/{name}: a page module's CSS and a file in bot/web/static share the name")
        files[name] = (css, "text/css", hashlib.sha1(css).hexdigest()[:10])

    async def serve(request: web.Request) -> web.Response:
        found = files.get(request.match_info["name"])
        if found is None:
            raise web.HTTPNotFound(text="not found")
        body, ctype, version = found
        headers = {"X-Content-Type-Options": "nosniff", "ETag": f'"{version}"',
                   "Cache-Control": "public, max-age=31536000, immutable" if request.query.get("v") == version
                   else "public, max-age=300"}
        if request.headers.get("If-None-Match") == f'"{version}"':
            return web.Response(status=304, headers=headers)
        charset = "utf-8" if ctype.startswith("text/") else None
        return web.Response(body=body, content_type=ctype, charset=charset, headers=headers)

    app.router.add_get("/static/{name}", serve)

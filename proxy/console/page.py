"""The console's files, read once from the package and served as they are (no build step).

The page is public (it holds no data; every figure comes from the admin API with the
operator's token); a strict Content-Security-Policy lets it load its own script, style and
same-origin connections only, so even a title that slipped past the page's text-only
rendering could not run a script.
"""

from __future__ import annotations

from importlib.resources import files

CONSOLE_PATH = b"/console"

_TYPES = {
    "console.html": b"text/html; charset=utf-8",
    "console.js": b"text/javascript; charset=utf-8",
    "console.css": b"text/css; charset=utf-8",
}
SECURITY_HEADERS: list[tuple[bytes, bytes]] = [
    (
        b"Content-Security-Policy",
        b"default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        b"img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    ),
    (b"X-Content-Type-Options", b"nosniff"),
    (b"Referrer-Policy", b"no-referrer"),
    (b"Cache-Control", b"no-cache"),
]


def _load() -> dict[bytes, tuple[bytes, bytes]]:
    static = files("proxy.console").joinpath("static")
    assets = {}
    for name, content_type in _TYPES.items():
        path = CONSOLE_PATH if name == "console.html" else CONSOLE_PATH + b"/" + name.encode()
        assets[path] = (content_type, static.joinpath(name).read_bytes())
    return assets


ASSETS = _load()
"""Path -> (content type, bytes): `/console`, `/console/console.js`, `/console/console.css`."""

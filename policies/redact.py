"""Masking of secrets in text shown to people (policy dump, error messages).

Secrets live in the environment, but an operator may still paste a URL with a password
(`redis://:pw@host`); whatever shows a policy value passes it through here first.
"""

from __future__ import annotations

import re

MASK = "***"

_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^/@\s]*)@")
_SECRET_NAME = re.compile(r"secret|password|passwd|token|api_?key", re.IGNORECASE)


def redact_url(text: str) -> str:
    """`redis://user:pw@h` -> `redis://user:***@h`; a lone `redis://pw@h` is masked whole."""

    def mask(match: re.Match[str]) -> str:
        user, colon, _ = match["userinfo"].partition(":")
        kept = f"{user}:" if colon else ""
        return f"{match['scheme']}{kept}{MASK}@"

    return _USERINFO.sub(mask, text)


def is_secret_name(name: str) -> bool:
    """A field that may hold a secret by its name; `*_env` fields hold variable NAMES only."""
    return bool(_SECRET_NAME.search(name)) and not name.endswith("_env")

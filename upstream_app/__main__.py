"""CLI: `python -m upstream_app --port 8081 --db PATH [--events-url URL] ...`.

The only module that reads the environment: `JWT_SECRET`, `PROXY_EVENTS_TOKEN` and
`UPSTREAM_SEED_PASSWORD`.
"""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import urllib.parse
from collections.abc import Sequence
from pathlib import Path

from aiohttp import web

from upstream_app import logs
from upstream_app.app import build_app
from upstream_app.config import Settings, parse_duration
from upstream_app.seed import prepare_database

log = logging.getLogger("upstream_app")


def _duration(text: str) -> float:
    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if seconds <= 0:
        raise argparse.ArgumentTypeError("must be longer than 0")
    return seconds


def _port(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError("must be a port number between 1 and 65535")
    return int(text)


def _ttl(text: str) -> float:
    seconds = _duration(text)
    if seconds < 1:
        raise argparse.ArgumentTypeError("must be at least 1s (token times are whole seconds)")
    return seconds


def _http_url(text: str) -> str:
    parts = urllib.parse.urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise argparse.ArgumentTypeError("must be an http:// or https:// URL")
    return text


def _days(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError("must be a whole number of days")
    return int(text)


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError("must be a whole number of at least 1")
    return int(text)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(
        prog="python -m upstream_app", description="The plain inventory app behind the sidecar."
    )
    parser.add_argument("--port", type=_port, default=8081)
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--db", type=Path, required=True, help="SQLite file, created if missing")
    parser.add_argument(
        "--events-url", type=_http_url, help="sidecar base URL to publish events to"
    )
    parser.add_argument("--check-interval", type=_duration, default=_duration("5m"))
    parser.add_argument("--realert-interval", type=_duration, default=_duration("1h"))
    parser.add_argument("--expiry-days", type=_days, default=7)
    parser.add_argument("--token-ttl", type=_ttl, default=_ttl("1h"))
    parser.add_argument(
        "--outbox-max",
        type=_positive,
        default=10_000,
        help="events kept while the sidecar is away; past it the oldest are dropped",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    """Prepare the database, then serve until SIGINT/SIGTERM."""
    args = parse_args(argv)
    logs.configure()
    jwt_secret = os.environ.get("JWT_SECRET")
    if not jwt_secret:
        jwt_secret = secrets.token_urlsafe(48)
        log.warning(
            "JWT_SECRET is not set: using a random secret, tokens from elsewhere won't verify"
        )
    events_token = os.environ.get("PROXY_EVENTS_TOKEN") or None
    if args.events_url and events_token is None:
        log.warning("PROXY_EVENTS_TOKEN is not set: events are sent without a token")
    seed_password = os.environ.get("UPSTREAM_SEED_PASSWORD", "")
    generated = not seed_password
    if generated:
        seed_password = secrets.token_urlsafe(12)
    if prepare_database(args.db, seed_password) and generated:
        log.warning(
            f"created {args.db}; users admin, vendedor, viewer have password {seed_password}"
        )
    settings = Settings(
        db_path=args.db,
        jwt_secret=jwt_secret,
        host=args.host,
        port=args.port,
        events_url=args.events_url,
        events_token=events_token,
        check_interval=args.check_interval,
        realert_interval=args.realert_interval,
        expiry_days=args.expiry_days,
        token_ttl=args.token_ttl,
        outbox_max=args.outbox_max,
    )
    log.info("serving on http://%s:%d", settings.host, settings.port)
    web.run_app(
        build_app(settings),
        host=settings.host,
        port=settings.port,
        print=None,
        access_log=logging.getLogger("upstream_app.access"),
        access_log_class=logs.JsonAccessLogger,
    )


if __name__ == "__main__":
    main()

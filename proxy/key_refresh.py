"""Keys that change while the sidecar runs: a JWKS URL fetched on a schedule, key files
re-read when they change, all feeding one `KeyRing` that the token verifier reads.

- `jwks_url` is fetched at start and every `jwks_refresh` (until a first set arrives,
  sooner: 1 s, doubling up to 30 s). A token naming an unknown `kid` asks for an early
  fetch, at most one per `EARLY_REFRESH_EVERY` (the start and periodic fetches do not
  count); a fetch already running is shared. A failed fetch keeps the last good set and is
  logged once per failure streak; every fetch counts in `jwks_refreshes_total{result}`.
  Until a first set arrives, `/readyz` lists `jwks` under `degraded`.
- `public_key_file` and `jwks_file` are polled like the policy file (a new signature that
  stays for two polls) and re-read on SIGHUP; new bytes that parse replace the keys (a
  reload counted as a success), bytes that do not keep the old keys (counted as a failure).
Nothing logged here carries a key, a token, or the URL's credentials or query.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import ssl
import time
from collections.abc import Callable, Mapping
from urllib.parse import urlsplit

import aiohttp

from policies.model import JwtPolicy
from proxy.keys import (
    JWKS_URL_PATH,
    KeyMaterial,
    KeyMaterialError,
    KeyRing,
    VerificationKey,
    load_key_material,
    parse_jwks,
    with_fetched_jwks,
)
from proxy.metrics import Metrics
from proxy.periodic import SettledChange
from proxy.reload import POLL_INTERVAL, Signature, file_signature

log = logging.getLogger("proxy.keys")

EARLY_REFRESH_EVERY = 30.0
"""Seconds between two early fetches asked for by unknown kids."""
FIRST_RETRY = 1.0
MAX_FIRST_RETRY = 30.0
"""While no set was ever fetched, retries start at 1 s and double up to this."""
FETCH_TIMEOUT = 10.0
MAX_JWKS_BYTES = 1_048_576
DEGRADED = "jwks"


def shown_url(url: str) -> str:
    """The URL as logs may show it: no userinfo, no query."""
    parts = urlsplit(url)
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{parts.hostname or ''}{port}{parts.path}"


class KeySource:
    """Owns the `KeyRing` of the running sidecar across policy reloads."""

    def __init__(
        self,
        metrics: Metrics,
        degraded: set[str],
        environ: Mapping[str, str] = os.environ,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ring = KeyRing(KeyMaterial())
        self._metrics = metrics
        self._degraded = degraded
        self._environ = environ
        self._clock = clock
        self._jwt: JwtPolicy | None = None
        self._base = KeyMaterial()
        self._files_digest = b""
        self._fetched: dict[str, VerificationKey] | None = None
        self._fetching: asyncio.Task[None] | None = None
        self._last_early: float | None = None
        self._failing = False
        self._warned: set[str] = set()
        self._session: aiohttp.ClientSession | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._change: SettledChange[Signature | tuple[Signature, ...]] = SettledChange(None)
        self._running = False

    # -- configuration ---------------------------------------------------------------------

    def configure(self, jwt: JwtPolicy | None, material: KeyMaterial) -> KeyRing:
        """Take a (re)loaded policy's key settings and files (already read into `material`)."""
        old_url = self._jwt.jwks_url if self._jwt is not None else None
        self._jwt = jwt
        self._base = material
        self._files_digest = self._digest_of_files()
        self._change.reset(self._signatures())
        url = jwt.jwks_url if jwt is not None else None
        if url != old_url:
            self._fetched = None
            self._last_early = None
            self._failing = False
            if self._running:
                self._restart_fetching()
        self.ring.on_unknown_kid = self.early_refresh if url is not None else None
        self._install()
        if url is not None:
            self._metrics.jwks_refresh(None)
        return self.ring

    def _install(self) -> None:
        """Put base material plus the fetched set in the ring; say whether keys are known."""
        url = self._jwt.jwks_url if self._jwt is not None else None
        if url is None:
            self.ring.replace(self._base)
            self._degraded.discard(DEGRADED)
        elif self._fetched is None:
            self.ring.replace(self._base, available=False)
            self._degraded.add(DEGRADED)
        else:
            self.ring.replace(with_fetched_jwks(self._base, self._fetched))
            self._degraded.discard(DEGRADED)

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        self._running = True
        self._restart_fetching()
        self._tasks.append(asyncio.create_task(self._watch_files(), name="key-files"))

    async def close(self) -> None:
        self._running = False
        for task in [*self._tasks, self._fetching]:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._tasks = []
        if self._session is not None:
            await self._session.close()

    def _restart_fetching(self) -> None:
        for task in [t for t in self._tasks if t.get_name() == "jwks-refresh"]:
            task.cancel()
            self._tasks.remove(task)
        if self._jwt is not None and self._jwt.jwks_url is not None:
            self._tasks.append(asyncio.create_task(self._refresh_loop(), name="jwks-refresh"))

    # -- the JWKS URL ----------------------------------------------------------------------

    def early_refresh(self, kid: str) -> object | None:
        """A token names an unknown kid: the fetch to wait for, or None (not now)."""
        if self._fetching is not None and not self._fetching.done():
            return self._fetching
        now = self._clock()
        if self._last_early is not None and now - self._last_early < EARLY_REFRESH_EVERY:
            return None
        self._last_early = now
        log.info("a token names an unknown key id: fetching the JWKS early")
        return self._fetch()

    async def _refresh_loop(self) -> None:
        retry = FIRST_RETRY
        while True:
            await asyncio.shield(self._fetch())  # shared with requests waiting for it
            jwt = self._jwt
            if jwt is None:
                return
            if self._fetched is None:
                await asyncio.sleep(min(retry, jwt.jwks_refresh))
                retry = min(retry * 2, MAX_FIRST_RETRY)
            else:
                await asyncio.sleep(jwt.jwks_refresh)

    def _fetch(self) -> asyncio.Task[None]:
        if self._fetching is None or self._fetching.done():
            self._fetching = asyncio.get_running_loop().create_task(self._fetch_once())
        return self._fetching

    async def _fetch_once(self) -> None:
        jwt = self._jwt
        if jwt is None or jwt.jwks_url is None:
            return
        url = jwt.jwks_url
        try:
            data = await self._get(url, jwt.jwks_ca_file)
            keys, skipped = parse_jwks(data, shown_url(url), JWKS_URL_PATH, skip_unusable=True)
        except (
            aiohttp.ClientError,
            TimeoutError,
            OSError,
            ssl.SSLError,
            KeyMaterialError,
        ) as error:
            self._metrics.jwks_refresh(False)
            if not self._failing:
                self._failing = True
                log.warning(
                    "cannot refresh the JWKS from %s: %s; the last good keys stay",
                    shown_url(url),
                    _reason(error),
                )
            return
        self._metrics.jwks_refresh(True)
        if self._failing:
            self._failing = False
            log.info("the JWKS from %s is reachable again", shown_url(url))
        for note in skipped:
            if note not in self._warned:
                self._warned.add(note)
                log.warning("%s", note)
        if jwt is not self._jwt:
            return  # the policy changed while fetching
        if self._fetched != keys:
            self._fetched = keys
            self._install()
            log.info("JWKS keys in use", extra={"kids": sorted(keys)})

    async def _get(self, url: str, ca_file: str | None) -> bytes:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        context: ssl.SSLContext | bool = True
        if url.startswith("https://") and ca_file is not None:
            context = ssl.create_default_context(cafile=ca_file)
        timeout = aiohttp.ClientTimeout(total=FETCH_TIMEOUT)
        async with self._session.get(url, ssl=context, timeout=timeout) as resp:
            if resp.status != 200:
                raise KeyMaterialError(JWKS_URL_PATH, f"answered HTTP {resp.status}")
            data = await resp.content.read(MAX_JWKS_BYTES + 1)
        if len(data) > MAX_JWKS_BYTES:
            raise KeyMaterialError(JWKS_URL_PATH, f"larger than {MAX_JWKS_BYTES} bytes")
        return data

    # -- key files -------------------------------------------------------------------------

    def _paths(self) -> list[str]:
        jwt = self._jwt
        if jwt is None:
            return []
        return [p for p in (jwt.public_key_file, jwt.jwks_file) if p is not None]

    def _signatures(self) -> tuple[Signature, ...]:
        return tuple(file_signature(path) for path in self._paths())

    def _digest_of_files(self) -> bytes:
        digest = hashlib.sha256()
        for path in self._paths():
            try:
                with open(path, "rb") as handle:
                    digest.update(hashlib.sha256(handle.read()).digest())
            except OSError:
                digest.update(b"unreadable")
        return digest.digest()

    async def _watch_files(self) -> None:
        while True:
            await asyncio.sleep(POLL_INTERVAL)
            if self._change.settled(self._signatures()):
                self.reread_files()

    def reread_files(self) -> None:
        """Read the key files again (a change seen, or SIGHUP); new bytes replace the keys."""
        if not self._paths():
            return
        digest = self._digest_of_files()
        if digest == self._files_digest:
            return
        try:
            material = load_key_material(self._jwt, self._environ)
        except KeyMaterialError as error:
            log.error("key files rejected, the keys in use stay: %s", error)
            self._metrics.policy_reload(False)
            self._files_digest = digest  # reported once; a further change is read again
            return
        self._files_digest = digest
        self._base = material
        self._install()
        log.info("key files reloaded")
        self._metrics.policy_reload(True)


def _reason(error: BaseException) -> str:
    if isinstance(error, KeyMaterialError):
        return error.message
    if isinstance(error, TimeoutError):
        return f"no answer within {FETCH_TIMEOUT:g}s"
    if isinstance(error, aiohttp.ClientResponseError):
        return f"HTTP {error.status}"
    return type(error).__name__

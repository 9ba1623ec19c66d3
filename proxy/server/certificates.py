"""The listener's certificate: an `SSLContext` rebuilt when its files change on disk.

Certificates are rotated by tools that write new files (cert-manager, certbot, a mounted
Secret swapping its `..data` symlink), so the two paths are polled with `stat()`, as the
policy file is (see `proxy.reload`): a changed (inode, size, mtime) signature that stays
the same for two polls in a row is read. New connections then get the new context;
connections already open keep theirs. A pair that cannot be used (half written, key of
another certificate) keeps the current context and logs an error; the next change is
tried again.
"""

from __future__ import annotations

import logging
import os
import ssl
from collections.abc import Callable

from policies.model import ServerTlsPolicy
from policies.tls_files import TlsFileProblem, server_context
from proxy.periodic import Periodic, SettledChange

log = logging.getLogger("proxy.server")

POLL_INTERVAL = 0.5

Signature = tuple[tuple[int, int, int, int] | None, ...]


def _signature(tls: ServerTlsPolicy) -> Signature:
    found: list[tuple[int, int, int, int] | None] = []
    for path in (tls.cert_file, tls.key_file):
        try:
            st = os.stat(path)
        except OSError:
            found.append(None)
        else:
            found.append((st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns))
    return tuple(found)


class ServingCertificate:
    """The current server context; `swap` hears each new one."""

    def __init__(self, tls: ServerTlsPolicy, swap: Callable[[ssl.SSLContext], None]) -> None:
        """Raises TlsFileProblem when the files cannot be used now."""
        self.tls = tls
        self._swap = swap
        self._change: SettledChange[Signature] = SettledChange(_signature(tls))
        self.context = server_context(tls)
        self._polling = Periodic(self.poll, POLL_INTERVAL, "certificate watcher", log)

    def start(self) -> None:
        self._polling.start()

    async def stop(self) -> None:
        await self._polling.stop()

    def poll(self) -> None:
        signature = _signature(self.tls)
        if self._change.settled(signature, None not in signature):
            self._load()

    def use(self, tls: ServerTlsPolicy) -> None:
        """A reloaded policy names other files: serve them from now on (if they can be)."""
        self.tls = tls
        self._change.reset(_signature(tls))
        self._load()

    def _load(self) -> None:
        try:
            context = server_context(self.tls)
        except TlsFileProblem as problem:
            log.error(
                "server.tls.%s: %s; the current certificate is kept",
                problem.key,
                problem.message,
            )
            return
        self.context = context
        self._swap(context)
        log.info("server certificate loaded", extra={"cert_file": self.tls.cert_file})

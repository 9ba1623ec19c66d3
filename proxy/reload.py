"""Watching the policy file and swapping a valid new policy in; a broken one changes nothing.

Why polling `stat()` of the PATH and not inotify on the file: editors save by writing a new
file and renaming it over the old one, and Kubernetes ConfigMaps swap a `..data` symlink;
both replace the inode, which an inode watch misses. `stat()` follows the path (and its
symlinks) every time, so edits, renames over and symlink swaps all show up as a new
(inode, size, mtime) signature. A file still being written is never loaded: the signature
must stay the same for two polls in a row (debounce) before it is read, and the bytes are
then hashed, so a rewrite with identical bytes is not a reload.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

from policies.errors import PolicyError
from policies.load import LoadedPolicy, apply_env_overrides, load_policy_text
from proxy.periodic import Periodic, SettledChange

log = logging.getLogger("proxy.reload")

POLL_INTERVAL = 0.25

Signature = tuple[int, int, int, int] | None


@dataclass(frozen=True, slots=True)
class ReloadOutcome:
    """The last reload's result for the console: when (unix seconds), and its error lines."""

    at: float
    ok: bool
    errors: tuple[str, ...]


def file_signature(path: str) -> Signature:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


class PolicyWatcher:
    def __init__(
        self,
        path: str,
        current_sha256: str,
        apply: Callable[[LoadedPolicy], None],
        report: Callable[[bool], None],
        on_outcome: Callable[[ReloadOutcome], None] | None = None,
    ) -> None:
        self.path = path
        self._sha256 = current_sha256
        self._apply = apply
        self._report = report
        self._on_outcome = on_outcome
        self._change: SettledChange[Signature] = SettledChange(file_signature(path))
        self._polling = Periodic(self.poll, POLL_INTERVAL, "policy watcher", log)

    def start(self) -> None:
        self._polling.start()

    async def stop(self) -> None:
        await self._polling.stop()

    def poll(self) -> None:
        signature = file_signature(self.path)
        if self._change.settled(signature, signature is not None):
            self.reload()

    def reload(self) -> bool:
        """Read, validate and apply the file now (also the SIGHUP path)."""
        try:
            with open(self.path, "rb") as handle:
                raw = handle.read()
        except OSError as error:
            log.error("%s: cannot read policy: %s", self.path, error.strerror)
            return self._done(False, (f"{self.path}: cannot read policy: {error.strerror}",))
        try:
            loaded = load_policy_text(raw, self.path)
        except PolicyError as error:
            log.error("policy rejected, the running policy stays:\n%s", error)
            return self._done(False, tuple(str(error).splitlines()))
        if loaded.sha256 == self._sha256:
            return True
        loaded = dataclasses.replace(loaded, policy=apply_env_overrides(loaded.policy, os.environ))
        try:
            self._apply(loaded)
        except Exception as error:
            log.exception("policy could not be applied, the running policy stays")
            return self._done(False, (f"{self.path}: policy could not be applied: {error}",))
        self._sha256 = loaded.sha256
        log.info("policy reloaded", extra={"hash": loaded.sha256})
        return self._done(True, ())

    def _done(self, ok: bool, errors: tuple[str, ...]) -> bool:
        self._report(ok)
        if self._on_outcome is not None:
            self._on_outcome(ReloadOutcome(time.time(), ok, errors))
        return ok

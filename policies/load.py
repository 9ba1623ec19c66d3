"""Reading a policy file: bytes -> validated `Policy`, or one `PolicyError` listing everything.

The loader is pure (no environment, no I/O beyond reading the file and the TLS files it
names) so a reload can run it and keep the old policy on error; `apply_env_overrides` is
the separate step the CLI and the app take afterwards. Nothing but `PolicyError` ever
leaves `load_policy*`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from yaml.nodes import MappingNode

from policies.build import Collector, build_section
from policies.checks import finish, redis_url_problem
from policies.dump import dump_policy
from policies.errors import PolicyError, Problem
from policies.model import Policy
from policies.spec import POLICY_SPEC
from policies.tls_files import check_tls_files
from policies.yaml_positions import compose, decode, describe

__all__ = [
    "LoadedPolicy",
    "PolicyError",
    "Problem",
    "apply_env_overrides",
    "dump_policy",
    "load_policy",
    "load_policy_text",
]

TOP = "(document)"
"""The key path shown for problems with the document as a whole."""


@dataclass(frozen=True, slots=True)
class LoadedPolicy:
    """A valid policy with where it came from; `sha256` is of the file's exact bytes."""

    policy: Policy
    sha256: str
    source: str
    raw: bytes
    positions: Mapping[str, tuple[int, int]] = field(
        default_factory=dict, repr=False, compare=False
    )
    """key path -> (line, col) of every value written, for problems found after loading."""

    def position(self, path: str) -> tuple[int, int]:
        """Where `path` was written, or its nearest written ancestor (1, 1 if none)."""
        finder = Collector()
        finder.positions = dict(self.positions)
        return finder.at(path)


def load_policy(path: str) -> LoadedPolicy:
    """Read and validate the policy file at `path`; errors name the file as `path` is written."""
    try:
        with open(path, "rb") as file:
            raw = file.read()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        problem = Problem(0, 0, "(file)", f"cannot read the file: {reason}")
        raise PolicyError([problem], path) from None
    return load_policy_text(raw, path)


def load_policy_text(text: str | bytes, source: str) -> LoadedPolicy:
    """Validate policy text; `source` names it in every error line."""
    raw = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else bytes(text)
    decoded = decode(raw)
    if isinstance(decoded, Problem):
        raise PolicyError([decoded], source)
    root = compose(decoded)
    if isinstance(root, Problem):
        raise PolicyError([root], source)
    if root is None:
        keys = ", ".join(f.name for f in POLICY_SPEC.fields)
        problem = Problem(1, 1, TOP, f"the policy is empty; expected keys: {keys}")
        raise PolicyError([problem], source)
    if not isinstance(root, MappingNode):
        message = f"expected a mapping of sections (version, server, ...), got {describe(root)}"
        raise PolicyError([Problem(1, 1, TOP, message)], source)
    collector = Collector()
    policy = finish(build_section(POLICY_SPEC, root, "", collector), collector)
    check_tls_files(policy, collector)
    if collector.problems:
        raise PolicyError(collector.problems, source)
    return LoadedPolicy(
        policy, hashlib.sha256(raw).hexdigest(), source, raw, positions=collector.positions
    )


def apply_env_overrides(policy: Policy, environ: Mapping[str, str]) -> Policy:
    """The policy with environment settings applied: `REDIS_URL` replaces storage.redis_url.

    Raises PolicyError (no file position) when the variable holds an unusable URL; the
    value itself is never shown, as it may carry a password.
    """
    url = environ.get("REDIS_URL", "")
    if not url:
        return policy
    problem = redis_url_problem(url)
    if problem:
        raise PolicyError(
            [Problem(0, 0, "storage.redis_url", f"REDIS_URL {problem}")],
            "environment",
        )
    return replace(policy, storage=replace(policy.storage, redis_url=url))

"""`python -m proxy run | validate | schema | token`: the commands of CONTRACT.md section 1.

Exit codes: 0 done, 1 invalid policy (every problem on stderr, nothing on stdout),
2 bad usage (argparse's own convention, also used for a missing JWT_SECRET).

`validate` says what `run` would: beyond the policy text, the files it names are read and
parsed (a missing or unusable one is an error at its key) and the environment variables it
names are looked up (an unset one is a warning, `FILE:LINE:COL: warning: key.path: message`;
`--strict` makes warnings errors). Warnings, not errors, because CI validates policies
where production secrets are absent.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from collections.abc import Mapping, Sequence

from policies.errors import PolicyError, Problem
from policies.load import LoadedPolicy, apply_env_overrides, load_policy
from policies.schema import policy_json_schema
from policies.units import parse_duration
from proxy.keys import HMAC_ALGORITHMS, KeyMaterialError, load_key_material

EXIT_INVALID = 1
EXIT_USAGE = 2


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; the return value is the process exit code."""
    args = _parser().parse_args(argv)
    if args.command == "schema":
        print(json.dumps(policy_json_schema(), indent=2))
        return 0
    if args.command == "token":
        return _token(args.sub, args.role, args.ttl)
    loaded = _load(args.config)
    if loaded is None:
        return EXIT_INVALID
    if args.command == "validate":
        errors, warnings = preflight(loaded, os.environ)
        if args.strict:
            errors, warnings = sorted([*errors, *warnings], key=_place), []
        for warning in warnings:
            print(render_warning(warning, args.config), file=sys.stderr)
        if errors:
            print(PolicyError(errors, args.config), file=sys.stderr)
            return EXIT_INVALID
        print(summary(loaded))
        return 0
    from proxy import app  # the server stack is imported only when it is going to run

    return app.run(loaded, config_path=args.config, access_log=args.access_log)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m proxy", description="resilience sidecar")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = commands.add_parser("run", help="serve with the policy in FILE")
    run.add_argument("--config", required=True, metavar="FILE", help="policy file")
    run.add_argument("--access-log", action="store_true", help="log one line per request")
    validate = commands.add_parser("validate", help="check a policy file and summarise it")
    validate.add_argument("--config", required=True, metavar="FILE", help="policy file")
    validate.add_argument("--strict", action="store_true", help="treat warnings as errors")
    commands.add_parser("schema", help="print the policy's JSON Schema")
    token = commands.add_parser("token", help="print an HS256 JWT signed with $JWT_SECRET")
    token.add_argument("--sub", required=True, help="user id (the `sub` claim)")
    token.add_argument("--role", required=True, help="role (the `role` claim)")
    token.add_argument(
        "--ttl", type=_ttl, default=3600, help="lifetime: seconds or a duration (1h); 3600"
    )
    return parser


def _ttl(text: str) -> int:
    try:
        seconds = parse_duration(text, bare_seconds=True)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if seconds < 1:
        raise argparse.ArgumentTypeError("the lifetime must be at least 1s")
    return int(seconds)


def _load(path: str) -> LoadedPolicy | None:
    """The policy at `path` with environment overrides, or None after printing every problem."""
    try:
        loaded = load_policy(path)
        return dataclasses.replace(loaded, policy=apply_env_overrides(loaded.policy, os.environ))
    except PolicyError as error:
        print(error, file=sys.stderr)
        return None


def preflight(
    loaded: LoadedPolicy, environ: Mapping[str, str]
) -> tuple[list[Problem], list[Problem]]:
    """What `run` would meet beyond the text: (errors, warnings), each at its key."""
    policy = loaded.policy
    errors: list[Problem] = []
    warnings: list[Problem] = []

    def at(path: str, message: str) -> Problem:
        line, col = loaded.position(path)
        return Problem(line, col, path, message)

    named: list[tuple[str, str, str]] = []
    jwt = policy.auth.jwt
    if jwt is not None and any(alg in HMAC_ALGORITHMS for alg in jwt.algorithms):
        named.append(("auth.jwt.secret_env", jwt.secret_env, "HS* tokens cannot be verified"))
    if policy.alerts.enabled:
        name = policy.alerts.ingest_token_env
        named.append(("alerts.ingest_token_env", name, "only an admin token may ingest events"))
    if policy.admin.token_env is not None:
        named.append(("admin.token_env", policy.admin.token_env, "no admin token is accepted"))
    probe = dict(environ)
    for path, name, consequence in named:
        if not environ.get(name):
            warnings.append(at(path, f"environment variable {name} is not set: {consequence}"))
            probe[name] = "x" * 64  # so the key files are still read below
    try:
        material = load_key_material(jwt, probe)
        for note in material.warnings:
            warnings.append(at("auth.jwt.secret_env", note))
    except KeyMaterialError as error:
        errors.append(at(error.key_path, error.message))
    if jwt is not None and jwt.jwks_ca_file is not None:
        problem = _ca_file_problem(jwt.jwks_ca_file)
        if problem:
            errors.append(at("auth.jwt.jwks_ca_file", problem))
    return errors, warnings


def _ca_file_problem(path: str) -> str | None:
    import ssl

    try:
        ssl.create_default_context(cafile=path)
    except ssl.SSLError:  # an OSError too: first
        return f"{path} holds no PEM certificate"
    except OSError as error:
        return f"cannot read {path}: {error.strerror or error}"
    return None


def _place(problem: Problem) -> tuple[int, int]:
    return (problem.line, problem.col)


def render_warning(problem: Problem, source: str) -> str:
    """`FILE:LINE:COL: warning: key.path: message`."""
    return f"{source}:{problem.line}:{problem.col}: warning: {problem.path}: {problem.message}"


def summary(loaded: LoadedPolicy) -> str:
    """The one line `validate` prints for a valid policy."""
    policy = loaded.policy
    rules = len(policy.rate_limits.roles) + len(policy.rate_limits.endpoints)
    return (
        f"{loaded.source}: valid ({_count(len(policy.upstreams), 'upstream')}, "
        f"{_count(len(policy.routes), 'route')}, {_count(rules, 'rate-limit rule')}, "
        f"sha256 {loaded.sha256[:12]})"
    )


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _token(sub: str, role: str, ttl: int) -> int:
    secret = os.environ.get("JWT_SECRET", "")
    if not secret:
        print("JWT_SECRET is not set: export the HS256 key the sidecar uses", file=sys.stderr)
        return EXIT_USAGE
    import jwt  # only this command signs tokens

    now = int(time.time())
    claims = {"sub": sub, "role": role, "iat": now, "exp": now + ttl}
    print(jwt.encode(claims, secret, algorithm="HS256"))
    return 0

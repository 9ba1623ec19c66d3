"""storage.redis_cluster_nodes / redis_sentinels / redis_sentinel_master: read and checked."""

from __future__ import annotations

import pytest

from policies.errors import PolicyError
from policies.load import load_policy_text

MINIMAL = """\
upstreams:
  app: { url: "http://127.0.0.1:9000" }
routes:
  - { path_prefix: /, upstream: app }
storage:
  backend: redis
"""


def errors(text: str) -> list[str]:
    with pytest.raises(PolicyError) as info:
        load_policy_text(MINIMAL + text, "p.yaml")
    return str(info.value).splitlines()


def test_defaults_are_one_server() -> None:
    storage = load_policy_text(MINIMAL, "p.yaml").policy.storage
    assert storage.redis_cluster_nodes == () and storage.redis_sentinels == ()
    assert storage.redis_sentinel_master is None


def test_cluster_and_sentinel_settings_are_read() -> None:
    cluster = load_policy_text(
        MINIMAL + '  redis_cluster_nodes: ["10.0.0.1:7000", "redis-a.internal:7001"]\n', "p.yaml"
    ).policy.storage
    assert cluster.redis_cluster_nodes == ("10.0.0.1:7000", "redis-a.internal:7001")
    sentinel = load_policy_text(
        MINIMAL + '  redis_sentinels: ["[::1]:26379"]\n  redis_sentinel_master: mymaster\n',
        "p.yaml",
    ).policy.storage
    assert sentinel.redis_sentinels == ("[::1]:26379",)
    assert sentinel.redis_sentinel_master == "mymaster"


def test_cluster_and_sentinels_exclude_each_other() -> None:
    assert errors(
        '  redis_cluster_nodes: ["127.0.0.1:7000"]\n'
        '  redis_sentinels: ["127.0.0.1:26379"]\n'
        "  redis_sentinel_master: mymaster\n"
    ) == [
        "p.yaml:8:20: storage.redis_sentinels: use storage.redis_cluster_nodes or "
        "storage.redis_sentinels, not both"
    ]


def test_sentinels_and_their_master_go_together() -> None:
    assert errors('  redis_sentinels: ["127.0.0.1:26379"]\n') == [
        "p.yaml:7:20: storage.redis_sentinels: needs storage.redis_sentinel_master "
        "(the name the sentinels monitor)"
    ]
    assert errors("  redis_sentinel_master: mymaster\n") == [
        "p.yaml:7:26: storage.redis_sentinel_master: needs storage.redis_sentinels "
        "(where to ask for the master)"
    ]


def test_every_node_is_host_and_port() -> None:
    assert errors('  redis_cluster_nodes: ["127.0.0.1:7000", "127.0.0.1", "bad host:1"]\n') == [
        "p.yaml:7:43: storage.redis_cluster_nodes[1]: '127.0.0.1' is not HOST:PORT (port 1-65535)",
        "p.yaml:7:56: storage.redis_cluster_nodes[2]: 'bad host' is not an IP address or host name",
    ]

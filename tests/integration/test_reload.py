"""Hot reload: edits, renames over, symlink swaps, broken files, SIGHUP."""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import signal
import time
from pathlib import Path

import aiohttp
import yaml

from tests.support.policy_files import make_policy
from tests.support.processes import free_port, start_sidecar

RELOAD_DEADLINE_S = 2.0


async def loaded_hash(http: aiohttp.ClientSession, url: str) -> str:
    async with http.get(f"{url}/metrics") as resp:
        text = await resp.text()
    match = re.search(r'resilience_proxy_policy_info\{hash="([0-9a-f]{64})"\} 1\.0', text)
    assert match, "policy_info missing"
    return match.group(1)


async def reloads(http: aiohttp.ClientSession, url: str, result: str) -> float:
    async with http.get(f"{url}/metrics") as resp:
        text = await resp.text()
    match = re.search(rf'resilience_proxy_policy_reloads_total\{{result="{result}"\}} (\S+)', text)
    assert match
    return float(match.group(1))


async def wait_for_hash(http: aiohttp.ClientSession, url: str, expected: str) -> float:
    """Seconds until the sidecar reports `expected`; fails past the contract's 2 s."""
    start = time.monotonic()
    while time.monotonic() - start < RELOAD_DEADLINE_S + 1:
        if await loaded_hash(http, url) == expected:
            return time.monotonic() - start
        await asyncio.sleep(0.05)
    raise AssertionError(f"policy {expected[:12]} not loaded in time")


def variant(port: int, upstream_url: str, marker: int) -> bytes:
    doc = make_policy(port, upstream_url)
    doc["routes"] = [
        {"name": f"only-{marker}", "path_prefix": f"/v{marker}/", "upstream": "inventory"},
    ]
    return yaml.safe_dump(doc).encode()


async def test_in_place_edit_rename_and_symlink_swap(upstream, tmp_path: Path) -> None:
    port = free_port()
    data_v1 = tmp_path / "..v1"
    data_v1.mkdir()
    (data_v1 / "policy.yaml").write_bytes(variant(port, upstream.url, 1))
    (tmp_path / "..data").symlink_to(data_v1.name)
    config = tmp_path / "policy.yaml"
    config.symlink_to("..data/policy.yaml")
    proc = start_sidecar(config, port)
    url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http:
            # 1. Kubernetes-style: the ..data symlink swapped to a new folder.
            data_v2 = tmp_path / "..v2"
            data_v2.mkdir()
            new = variant(port, upstream.url, 2)
            (data_v2 / "policy.yaml").write_bytes(new)
            (tmp_path / "..tmp").symlink_to(data_v2.name)
            os.replace(tmp_path / "..tmp", tmp_path / "..data")
            assert await wait_for_hash(http, url, hashlib.sha256(new).hexdigest()) <= 2
            async with http.get(f"{url}/v2/echo") as resp:
                assert resp.status == 200
            async with http.get(f"{url}/v1/echo") as resp:
                assert resp.status == 404

            # 2. Editor-style: write a temp file, rename it over the target.
            target = data_v2 / "policy.yaml"
            new = variant(port, upstream.url, 3)
            (data_v2 / ".policy.yaml.swp").write_bytes(new)
            os.replace(data_v2 / ".policy.yaml.swp", target)
            assert await wait_for_hash(http, url, hashlib.sha256(new).hexdigest()) <= 2

            # 3. In place.
            new = variant(port, upstream.url, 4)
            target.write_bytes(new)
            assert await wait_for_hash(http, url, hashlib.sha256(new).hexdigest()) <= 2
            async with http.get(f"{url}/v4/echo") as resp:
                assert resp.status == 200
            assert await reloads(http, url, "success") == 3
    finally:
        proc.stop()


async def test_broken_file_keeps_the_old_policy_under_load(upstream, tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "policy.yaml"
    good = variant(port, upstream.url, 1)
    config.write_bytes(good)
    proc = start_sidecar(config, port)
    url = f"http://127.0.0.1:{port}"
    failures: list[int] = []
    try:
        async with aiohttp.ClientSession() as http:

            async def load() -> int:
                count = 0
                end = time.monotonic() + 2.5
                while time.monotonic() < end:
                    async with http.get(f"{url}/v1/echo") as resp:
                        await resp.read()
                        count += 1
                        if resp.status != 200:
                            failures.append(resp.status)
                return count

            loaders = [asyncio.ensure_future(load()) for _ in range(4)]
            await asyncio.sleep(0.3)
            config.write_bytes(good.replace(b"upstream: inventory", b"upstream: nowhere"))
            await asyncio.sleep(1.2)
            done = await asyncio.gather(*loaders)
            assert sum(done) > 50
            assert failures == []
            assert await loaded_hash(http, url) == hashlib.sha256(good).hexdigest()
            assert await reloads(http, url, "failure") == 1
    finally:
        output = proc.output()
        proc.stop()
    assert "routes[0].upstream" in output  # the error, in FILE:LINE:COL form, is logged
    assert re.search(r"policy\.yaml:\d+:\d+: routes\[0\]\.upstream", output)


async def test_sighup_reloads_at_once(upstream, tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "policy.yaml"
    config.write_bytes(variant(port, upstream.url, 1))
    before = os.stat(config)
    proc = start_sidecar(config, port)
    url = f"http://127.0.0.1:{port}"
    try:
        # Same size, same mtime: invisible to the watcher; only SIGHUP can pick it up.
        new = variant(port, upstream.url, 5)
        assert len(new) == before.st_size
        config.write_bytes(new)
        os.utime(config, ns=(before.st_atime_ns, before.st_mtime_ns))
        async with aiohttp.ClientSession() as http:
            await asyncio.sleep(0.8)
            assert await loaded_hash(http, url) != hashlib.sha256(new).hexdigest()
            proc.signal(signal.SIGHUP)
            assert await wait_for_hash(http, url, hashlib.sha256(new).hexdigest()) < 0.5
    finally:
        proc.stop()

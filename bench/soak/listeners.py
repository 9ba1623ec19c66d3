"""WebSocket listeners on the sidecar's hub for the soak (`bench/soak.py` starts this).

    python bench/soak/listeners.py --port 8000 --count 20 --seconds 1800

Half listen on `/api/v1/ws/notifications`, half on `/api/v1/ws/alerts`; each pings every
10 s (the hub closes a client silent for two heartbeats), and on a close reconnects with
jittered backoff and resumes from the last event id, as a browser tab would. When the time
is up it prints one JSON line: messages per type, reconnects, resumes with a gap.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import time
from collections import Counter

import aiohttp

PATHS = ("/api/v1/ws/notifications", "/api/v1/ws/alerts")


async def listen(base: str, path: str, end: float, counts: Counter[str]) -> None:
    """One listener until `end`: counts every message type and every reconnect."""
    last_id = 0
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < end:
            with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
                async with http.ws_connect(base + path, heartbeat=None) as ws:
                    if last_id:
                        await ws.send_json({"type": "resume", "last_event_id": last_id})
                    next_ping = time.monotonic() + 10
                    while (now := time.monotonic()) < end:
                        if now >= next_ping:
                            await ws.send_json({"type": "ping"})
                            next_ping = now + 10
                        try:
                            msg = await ws.receive(timeout=min(next_ping, end) - now)
                        except TimeoutError:
                            continue
                        if msg.type != aiohttp.WSMsgType.TEXT:
                            counts[f"closed {ws.close_code}"] += 1
                            break
                        data = json.loads(msg.data)
                        counts[data.get("type", "?")] += 1
                        last_id = max(last_id, int(data.get("id", 0) or 0))
            if time.monotonic() < end:
                counts["reconnects"] += 1
                await asyncio.sleep(random.uniform(0.5, 2.0))


async def main(port: int, count: int, seconds: float) -> None:
    counts: Counter[str] = Counter()
    end = time.monotonic() + seconds
    base = f"ws://127.0.0.1:{port}"
    await asyncio.gather(*(listen(base, PATHS[i % 2], end, counts) for i in range(count)))
    print(json.dumps(dict(sorted(counts.items()))), flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--count", type=int, default=20)
    parser.add_argument("--seconds", type=float, required=True)
    args = parser.parse_args()
    asyncio.run(main(args.port, args.count, args.seconds))

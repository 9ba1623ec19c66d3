"""A fault-injecting upstream for integration tests, run inside the test's event loop.

It records every request it sees (so a test can prove something never reached it) and
answers according to the path:
  /echo...            JSON of what arrived (method, target decoded and raw, headers, body size)
  /status/CODE        that status (Retry-After from ?retry_after=)
  /slow?ms=N          answers after N ms
  /bytes?n=N          N bytes, chunked, in 64 KiB pieces
  /flaky?fail=K       the first K calls per X-Test-Key answer 503, then 200
  /nobody/CODE        204/304 answers
  /close              answers with Connection: close
  /stall?ms=N         the head and a first chunk, then N ms of silence, then the last chunk
With `ssl_context` it serves HTTPS (and `/echo` also reports the client certificate's CN).
"""

from __future__ import annotations

import asyncio
import ssl
from collections import defaultdict
from dataclasses import dataclass, field

from aiohttp import web

from tests.support.processes import free_port


@dataclass
class Seen:
    method: str
    target: str
    headers: dict[str, str]
    body: bytes


@dataclass
class FaultUpstream:
    port: int = 0
    seen: list[Seen] = field(default_factory=list)
    calls: defaultdict[str, int] = field(default_factory=lambda: defaultdict(int))
    runner: web.AppRunner | None = None
    ssl_context: ssl.SSLContext | None = None

    @property
    def url(self) -> str:
        scheme = "https" if self.ssl_context is not None else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    def hits(self, prefix: str) -> list[Seen]:
        return [s for s in self.seen if s.target.startswith(prefix)]

    async def start(self) -> FaultUpstream:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        self.port = free_port()
        site = web.TCPSite(self.runner, "127.0.0.1", self.port, ssl_context=self.ssl_context)
        await site.start()
        return self

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.seen.append(
            Seen(
                request.method,
                request.path_qs,
                {k.lower(): v for k, v in request.headers.items()},
                body,
            )
        )
        path = request.path
        if path.startswith("/status/"):
            code = int(path.split("/")[2])
            headers = {}
            if "retry_after" in request.query:
                headers["Retry-After"] = request.query["retry_after"]
            return web.json_response({"status": code}, status=code, headers=headers)
        if path.startswith("/slow"):
            await asyncio.sleep(int(request.query.get("ms", "1000")) / 1000)
            return web.json_response({"slow": True})
        if path.startswith("/bytes"):
            n = int(request.query["n"])
            resp = web.StreamResponse()
            resp.enable_chunked_encoding()
            await resp.prepare(request)
            piece = b"x" * 65536
            sent = 0
            while sent < n:
                chunk = piece[: min(len(piece), n - sent)]
                await resp.write(chunk)
                sent += len(chunk)
            await resp.write_eof()
            return resp
        if path.startswith("/flaky"):
            key = request.headers.get("X-Test-Key", "")
            self.calls[key] += 1
            if self.calls[key] <= int(request.query.get("fail", "1")):
                return web.json_response({"flaky": "failing"}, status=503)
            return web.json_response({"flaky": "ok", "calls": self.calls[key]})
        if path.startswith("/nobody/"):
            return web.Response(status=int(path.split("/")[2]))
        if path.startswith("/stall"):
            resp = web.StreamResponse()
            resp.enable_chunked_encoding()
            await resp.prepare(request)
            await resp.write(b"first ")
            await asyncio.sleep(int(request.query.get("ms", "1000")) / 1000)
            await resp.write(b"last")
            await resp.write_eof()
            return resp
        if path.startswith("/close"):
            return web.json_response({"closing": True}, headers={"Connection": "close"})
        peer = request.transport.get_extra_info("peercert") if request.transport else None
        subject = dict(pair[0] for pair in peer["subject"]) if peer else {}
        return web.json_response(
            {
                "method": request.method,
                "target": request.path_qs,
                "raw_target": request.raw_path,
                "headers": {k.lower(): v for k, v in request.headers.items()},
                "body_size": len(body),
                "client_cert_cn": subject.get("commonName"),
            },
            headers={"X-Upstream-Hop": "present", "Connection": "X-Upstream-Hop"},
        )

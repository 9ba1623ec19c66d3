"""TLS termination: client TLS to the sidecar vs client TLS to nginx, same certificate.

    python bench/tls.py [--seconds 8] [--rounds 3] [--connections 64]

Both proxies serve HTTPS with one certificate (made with trustme) and forward plain HTTP
to the same nginx upstream. Two loads, each alternating nginx and the sidecar so drift in
the machine hits both:
- keep-alive: every connection does many requests (record encryption, the common case);
- handshake: `Connection: close`, a TLS handshake per request (the worst case).
Servers run pinned to core 0, wrk to core 1; CPU per request is read from /proc. The
figure is the ratio of the sidecar's CPU per request to nginx's, in the same run.
"""

from __future__ import annotations

import argparse
import json
import socket
import ssl
import statistics
import sys
import tempfile
import time
from pathlib import Path

import trustme

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (
    NGINX_UPSTREAM,
    REPO,
    Nginx,
    WrkResult,
    ensure_tools,
    free_port,
    wait_http,
    wrk,
)
from bench.forwarding import sidecar_policy, start_sidecar

NGINX_TLS_PROXY = """
worker_processes 1; daemon off; pid {tmp}/px.pid; error_log {tmp}/px.err;
events {{ worker_connections 4096; }}
http {{ access_log off;
  upstream backend {{ server 127.0.0.1:{upstream}; keepalive 256; }}
  server {{ listen 127.0.0.1:{port} ssl; keepalive_requests 1000000;
    ssl_certificate {cert}; ssl_certificate_key {key};
    ssl_protocols TLSv1.2 TLSv1.3; ssl_session_cache off; ssl_session_tickets off;
    location / {{ proxy_pass http://backend; proxy_http_version 1.1;
      proxy_set_header Connection ""; proxy_set_header X-Forwarded-For $remote_addr; }} }} }}
"""
"""Session resumption off, as the sidecar offers none: each handshake is a full one."""


def certificate(directory: Path) -> tuple[Path, Path]:
    leaf = trustme.CA().issue_cert("127.0.0.1", "localhost")
    cert, key = directory / "cert.pem", directory / "key.pem"
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    leaf.private_key_pem.write_to_path(str(key))
    return cert, key


def median(runs: list[WrkResult], field: str) -> float:
    return statistics.median(getattr(r, field) for r in runs)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=64)
    args = parser.parse_args()
    ensure_tools("nginx", "wrk")

    cert, key = certificate(Path(tempfile.mkdtemp(prefix="bench-tls-")))
    up_port, nginx_port, sidecar_port = free_port(), free_port(), free_port()
    upstream = Nginx(NGINX_UPSTREAM, port=up_port)
    proxy = Nginx(NGINX_TLS_PROXY, port=nginx_port, upstream=up_port, cert=cert, key=key)
    tls = {"cert_file": str(cert), "key_file": str(key)}
    policy = sidecar_policy(sidecar_port, up_port)
    policy["server"] = {**policy["server"], "tls": tls}  # type: ignore[dict-item]
    wait_http(f"http://127.0.0.1:{up_port}/")
    sidecar = start_sidecar(policy, wait=False)
    path = "/api/v1/productos"
    targets = (("nginx", nginx_port, proxy.pids), ("sidecar", sidecar_port, [sidecar.pid]))
    loads = {"keep-alive": [], "handshake": ["-H", "Connection: close"]}
    results: dict[str, dict[str, list[WrkResult]]] = {
        load: {"nginx": [], "sidecar": []} for load in loads
    }
    try:
        for _name, port, pids in targets:
            wait_https(port)
            wrk(f"https://127.0.0.1:{port}{path}", pids, args.connections, 2)  # warm-up
        for _ in range(args.rounds):
            for load, extra in loads.items():
                for name, port, pids in targets:
                    url = f"https://127.0.0.1:{port}{path}"
                    run = wrk(url, pids, args.connections, args.seconds, extra=extra)
                    results[load][name].append(run)
    finally:
        sidecar.terminate()
        sidecar.wait(20)
        proxy.stop()
        upstream.stop()

    report: dict[str, dict[str, float]] = {}
    print(f"{'':22}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'CPU us/req':>12}{'errors':>8}")
    for load, by_target in results.items():
        for name, runs in by_target.items():
            errors = sum(r.timeouts + r.non_2xx for r in runs)
            print(
                f"{load + ' ' + name:22}{median(runs, 'rps'):>10.0f}"
                f"{median(runs, 'p50_ms'):>9.2f}{median(runs, 'p99_ms'):>9.2f}"
                f"{median(runs, 'cpu_us_per_request'):>12.1f}{errors:>8}"
            )
        cpu = median(by_target["sidecar"], "cpu_us_per_request") / median(
            by_target["nginx"], "cpu_us_per_request"
        )
        rps = median(by_target["sidecar"], "rps") / median(by_target["nginx"], "rps")
        report[load] = {"cpu_ratio": cpu, "rps_ratio": rps}
    for load, row in report.items():
        print(
            f"{load}: sidecar CPU per request / nginx's {row['cpu_ratio']:.2f}x, "
            f"req/s {row['rps_ratio']:.0%} of nginx's"
        )
    out = REPO / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "tls.json").write_text(json.dumps(report, indent=2))


def wait_https(port: int, deadline_s: float = 15.0) -> None:
    """Until the port accepts a TLS connection (the certificate is not checked)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        try:
            with (
                socket.create_connection(("127.0.0.1", port), timeout=1) as raw,
                context.wrap_socket(raw),
            ):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"port {port} did not accept TLS")


if __name__ == "__main__":
    main()

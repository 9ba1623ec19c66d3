"""WebSocket fan-out through the real sidecar with 1, 2, ... workers: the time from an
event's ingest to its arrival at the LAST of 10,000 clients, and exactly-once, in-order
delivery to every client.

    python bench/fanout_workers.py [--workers 1,2] [--clients 10000] [--seconds 40]
                                   [--rate 4] [--rounds 3]

Setup: one redis-server and the sidecar (`python -m proxy run`) with `server.workers: N`
and `storage.backend: redis` for every N (workers > 1 need it; N = 1 uses it too, so only
the worker count changes: every event goes POST -> Redis stream -> each worker's reader ->
its clients). This process is the load generator: `--clients` anonymous sockets on
/api/v1/ws/notifications, then `--rate` POSTs of /api/v1/events per second for
`--seconds`, each carrying its send time (wall clock) in `data`.

Receipt time is the kernel's: SO_TIMESTAMPNS on every client socket gives the time the
bytes reached that socket (on loopback, when the sidecar's write handed them over), not
the time this process got round to reading them. The load generator shares the cores
with the workers on a small box, and its own queueing is not the sidecar's latency; the
user-space receipt (when this process read the bytes) is printed too, for comparison.

Rate: 4 events/s by default. Each delivery costs the sidecar 9-16 us of CPU here (mostly
the kernel's loopback send) and the reader about as much, so at 10 events/s (100,000
deliveries/s) one worker and the reader need a core each, which is this 2-core machine
whole: the latency measured is then the queue of a saturated process, not the fan-out.
At 4/s one worker is busy about 60 % of the time, and the figure is the time to reach
the last of the clients. `--rate 10` still runs.

Placement: the sidecar and redis-server may run on every core (more workers only help
with more cores); the load generator runs on every core at nice 19 (`--nice`), so the
workers get a core first and the reader catches up in the idle time between events (its
timestamps do not depend on when it reads). On a machine busy with other work there is
no idle time: a starved reader leaves its sockets full, which stalls the sidecar's
writes (a low `sidecar_cores_busy` shows it); `--nice 0` gives it a fair share.
Descriptors: this process raises RLIMIT_NOFILE to its hard limit, which the sidecar
inherits; `server.max_connections` is set above `--clients`. Values of `--workers`
alternate within each round; medians over rounds. The first `--workers` value is the
baseline of the ratios.
"""

from __future__ import annotations

import argparse
import os
import resource
import select
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (
    REPO,
    children,
    cpu_seconds,
    ensure_tools,
    free_port,
    python,
    server_frame_at,
    wait_http,
)
from bench.scaling_workers import start_redis

SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
TIMESPEC = struct.Struct("qq")
EVENTS_TOKEN = "bench-events-token"
HANDSHAKE = (
    b"GET /api/v1/ws/notifications HTTP/1.1\r\nHost: bench\r\nUpgrade: websocket\r\n"
    b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Version: 13\r\n\r\n"
)
DRAIN_S = 15.0
"""After the last POST: how long the clients may take to get every event."""


def raise_fd_limit(needed: int) -> int:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < needed:
        raise SystemExit(f"RLIMIT_NOFILE hard limit {hard} < {needed} descriptors needed")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def policy(port: int, workers: int, redis_url: str, clients: int) -> dict[str, object]:
    doc = yaml.safe_load((REPO / "policies.yaml").read_text())
    doc["server"].update(
        listen=f"127.0.0.1:{port}", workers=workers, max_connections=clients + 1000
    )
    doc["admin"]["listen"] = None
    doc["storage"].update(backend="redis", redis_url=redis_url)
    doc["rate_limits"]["roles"] = {role: "100000000/min" for role in doc["rate_limits"]["roles"]}
    doc["rate_limits"]["endpoints"] = []
    doc["alerts"]["sinks"] = []
    doc["websocket"]["heartbeat"] = "300s"  # no heartbeat frames inside a run
    return dict(doc)


def start_sidecar(workers: int, redis_url: str, clients: int, workdir: Path):  # type: ignore[no-untyped-def]
    port = free_port()
    config = workdir / f"policy-{workers}.yaml"
    config.write_text(yaml.safe_dump(policy(port, workers, redis_url, clients)))
    env = {**os.environ, "JWT_SECRET": "bench-secret-0123456789abcdef0123456789",
           "PROXY_EVENTS_TOKEN": EVENTS_TOKEN}  # fmt: skip
    proc = subprocess.Popen(
        [python(), "-m", "proxy", "run", "--config", str(config)], cwd=REPO, env=env,
        stdout=subprocess.DEVNULL, stderr=open(workdir / f"err-{workers}.log", "wb"),  # noqa: SIM115
    )  # fmt: skip
    wait_http(f"http://127.0.0.1:{port}/healthz", 30)
    end = time.monotonic() + 30
    while workers > 1 and len(children(proc.pid)) < workers and time.monotonic() < end:
        time.sleep(0.05)
    return proc, port


def connect(port: int, count: int) -> tuple[list[socket.socket], list[bytes]]:
    """`count` WebSocket clients, one after the other; what came after each 101's head."""
    socks, rests = [], []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        sock.sendall(HANDSHAKE)
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(4096)
            if not chunk:
                raise ConnectionError(f"closed during the handshake: {head[:200]!r}")
            head += chunk
        assert head.startswith(b"HTTP/1.1 101"), head[:200]
        sock.setblocking(False)
        socks.append(sock)
        rests.append(head.split(b"\r\n\r\n", 1)[1])
    return socks, rests


@dataclass
class Run:
    """What the clients saw: per client the ids in arrival order; per event the arrivals."""

    clients: int
    ids: list[list[int]] = field(default_factory=list)
    published: list[int] = field(default_factory=list)
    """The ids the ingest answers gave: what every client should have, in this order."""
    sent: dict[int, float] = field(default_factory=dict)
    last_kernel: dict[int, float] = field(default_factory=dict)
    last_user: dict[int, float] = field(default_factory=dict)
    reads: int = 0
    multi_reads: int = 0
    """Reads that carried more than one event (a sidecar batch, or this reader late)."""


def post(port: int, n: int) -> socket.socket:
    """Send one event (non-blocking answer: the loop reads it)."""
    body = orjson.dumps({"type": "bench_tick", "n": n, "data": {"sent_at": time.time()}})
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(
        b"POST /api/v1/events HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n"
        b"Authorization: Bearer " + EVENTS_TOKEN.encode() + b"\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    sock.setblocking(False)
    return sock


Posts = dict[int, tuple[socket.socket, list[bytes]]]
"""The ingest requests awaiting their answer, by descriptor."""


def drive(
    port: int, socks: list[socket.socket], buffers: list[bytes], seconds: float, rate: float
) -> Run:
    """POST at `rate` for `seconds` while reading every client; bounded by DRAIN_S after."""
    run = Run(len(socks), [[] for _ in socks])
    poller = select.epoll(len(socks) + 16)
    index = {sock.fileno(): i for i, sock in enumerate(socks)}
    for fd in index:
        poller.register(fd, select.EPOLLIN)
    posts: Posts = {}
    decoded: dict[bytes, tuple[int, float] | None] = {}
    whole: dict[bytes, list[tuple[int, float]]] = {}
    """Reads seen before, by their bytes: every client gets the same frames, so most reads
    are known by one lookup (the reader's CPU is taken from the workers')."""
    ancillary = socket.CMSG_SPACE(TIMESPEC.size)
    events = int(seconds * rate)
    start = time.monotonic()
    published = run.published
    sent_posts = 0
    while True:
        now = time.monotonic()
        if sent_posts < events and now >= start + sent_posts / rate:
            sock = post(port, sent_posts)
            posts[sock.fileno()] = (sock, [])
            poller.register(sock.fileno(), select.EPOLLIN)
            sent_posts += 1
        done = sent_posts == events and not posts
        if done and all(len(ids) == len(published) for ids in run.ids):
            break
        if done and now > start + events / rate + DRAIN_S:
            break
        wait = max(0.0, start + sent_posts / rate - now) if sent_posts < events else 0.05
        for fd, _mask in poller.poll(min(wait, 0.05)):
            if fd in posts:
                answered = _read_answer(poller, posts, fd)
                if answered is not None:
                    published.append(answered)
                continue
            i = index[fd]
            try:
                data, anc, _flags, _addr = socks[i].recvmsg(16384, ancillary)
            except BlockingIOError:
                continue
            if not data:  # the sidecar closed it: it will miss events (counted as inexact)
                poller.unregister(fd)
                continue
            user = time.time()
            kernel = user
            for level, kind, value in anc:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                    sec, nsec = TIMESPEC.unpack(value[: TIMESPEC.size])
                    kernel = sec + nsec / 1e9
            got = whole.get(data) if not buffers[i] else None
            if got is None:
                got = _frames(buffers, i, data, decoded)
                if not buffers[i]:
                    whole[data] = got
            run.reads += 1
            run.multi_reads += len(got) > 1
            for event_id, sent in got:
                run.ids[i].append(event_id)
                run.sent[event_id] = sent
                if kernel > run.last_kernel.get(event_id, 0.0):
                    run.last_kernel[event_id] = kernel
                if user > run.last_user.get(event_id, 0.0):
                    run.last_user[event_id] = user
    poller.close()
    published.sort()
    return run


def _read_answer(poller: select.epoll, posts: Posts, fd: int) -> int | None:
    sock, parts = posts[fd]
    chunk = sock.recv(65536)
    if chunk:
        parts.append(chunk)
        return None
    poller.unregister(fd)
    sock.close()
    del posts[fd]
    answer = b"".join(parts)
    assert answer.startswith(b"HTTP/1.1 202"), answer[:200]
    return int(orjson.loads(answer.split(b"\r\n\r\n", 1)[1])["id"])


def _frames(
    buffers: list[bytes], i: int, data: bytes, decoded: dict[bytes, tuple[int, float] | None]
) -> list[tuple[int, float]]:
    """The bench events among the complete frames of client `i` (server frames: unmasked)."""
    buffer = buffers[i] + data
    offset, got = 0, []
    while (frame := server_frame_at(buffer, offset)) is not None:
        opcode, start, end = frame
        if opcode == 0x1:
            payload = buffer[start:end]
            if payload not in decoded:
                message = orjson.loads(payload)
                is_tick = message.get("type") == "bench_tick"
                decoded[payload] = (message["id"], message["data"]["sent_at"]) if is_tick else None
            known = decoded[payload]
            if known is not None:
                got.append(known)
        offset = end
    buffers[i] = buffer[offset:]
    return got


def summarise(run: Run) -> dict[str, float]:
    expected = run.published
    exact = sum(1 for ids in run.ids if ids == expected)
    kernel = sorted(run.last_kernel[i] - run.sent[i] for i in expected if i in run.last_kernel)
    user = sorted(run.last_user[i] - run.sent[i] for i in expected if i in run.last_user)
    return {
        "events": len(expected),
        "exact_clients": exact / run.clients,
        "last_p50_ms": _pct(kernel, 0.50) * 1000,
        "last_p99_ms": _pct(kernel, 0.99) * 1000,
        "last_max_ms": kernel[-1] * 1000,
        "user_p50_ms": _pct(user, 0.50) * 1000,
        "user_p99_ms": _pct(user, 0.99) * 1000,
        "multi_reads": run.multi_reads / max(1, run.reads),
    }


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _pct(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(q * len(values)))]


def measure(workers: int, redis_url: str, args: argparse.Namespace, workdir: Path) -> dict:
    proc, port = start_sidecar(workers, redis_url, args.clients, workdir)
    try:
        serving = children(proc.pid) if workers > 1 else [proc.pid]
        fds_before = [len(os.listdir(f"/proc/{pid}/fd")) for pid in serving]
        os.setpriority(os.PRIO_PROCESS, 0, args.nice)  # the load generator: "Placement"
        try:
            socks, buffers = connect(port, args.clients)
            time.sleep(1.0)  # handshakes settled
            per_worker = [
                len(os.listdir(f"/proc/{pid}/fd")) - n
                for pid, n in zip(serving, fds_before, strict=True)
            ]
            pids = [proc.pid, *children(proc.pid)]
            supervisor = pids[:1] if workers > 1 else []
            cpu_before, sup_before = cpu_seconds(pids), cpu_seconds(supervisor)
            began, load_before = time.monotonic(), own_cpu_seconds()
            run = drive(port, socks, buffers, args.seconds, args.rate)
            wall = time.monotonic() - began
            load_cpu = own_cpu_seconds() - load_before
            cpu, sup = cpu_seconds(pids) - cpu_before, cpu_seconds(supervisor) - sup_before
        finally:
            os.setpriority(os.PRIO_PROCESS, 0, 0)  # the next sidecar starts at nice 0 (root)
        for sock in socks:
            sock.close()
        row = summarise(run)
        row["cpu_us_per_delivery"] = cpu / max(1, row["events"] * args.clients) * 1e6
        row["sidecar_cores_busy"] = cpu / wall
        row["supervisor_cpu_share"] = sup / cpu if cpu else 0.0
        row["load_cores_busy"] = load_cpu / wall
        row["busiest_worker_share"] = max(per_worker) / max(1, sum(per_worker))
        return row
    finally:
        drained = time.monotonic()
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        print(f"<!-- workers={workers}: SIGTERM to exit {time.monotonic() - drained:.1f} s -->")


COLUMNS = [
    ("events", "{:.0f}"),
    ("exact_clients", "{:.2%}"),
    ("last_p50_ms", "{:.0f}"),
    ("last_p99_ms", "{:.0f}"),
    ("last_max_ms", "{:.0f}"),
    ("user_p50_ms", "{:.0f}"),
    ("user_p99_ms", "{:.0f}"),
    ("multi_reads", "{:.2%}"),
    ("cpu_us_per_delivery", "{:.2f}"),
    ("sidecar_cores_busy", "{:.2f}"),
    ("supervisor_cpu_share", "{:.1%}"),
    ("load_cores_busy", "{:.2f}"),
    ("busiest_worker_share", "{:.0%}"),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", default="1,2", help="comma-separated, first = baseline")
    parser.add_argument("--clients", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=40.0)
    parser.add_argument("--rate", type=float, default=4.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--nice", type=int, default=19, help="the load generator's niceness")
    args = parser.parse_args()
    counts = [int(n) for n in args.workers.split(",")]
    limit = raise_fd_limit(args.clients + 1000)
    ensure_tools("redis-server")
    workdir = Path(tempfile.mkdtemp(prefix="bench-fanout-workers-"))
    redis, redis_url = start_redis(workdir)
    cores = os.cpu_count() or 1
    print(f"{cores} cores; sidecar and redis on all cores; load generator on all, nice {args.nice}")
    print(f"RLIMIT_NOFILE {limit} (bench and sidecar); {args.clients} clients, "
          f"{args.rate:g} events/s for {args.seconds:g} s, {args.rounds} rounds")  # fmt: skip
    runs: dict[int, list[dict]] = {n: [] for n in counts}
    try:
        for round_no in range(args.rounds):
            order = counts if round_no % 2 == 0 else counts[::-1]
            for n in order:
                print(f"<!-- workers={n} round {round_no + 1}: load average "
                      f"{os.getloadavg()[0]:.2f} -->", flush=True)  # fmt: skip
                runs[n].append(measure(n, redis_url, args, workdir))
    finally:
        redis.terminate()
        redis.wait(10)
    print("| workers | " + " | ".join(name for name, _ in COLUMNS) + " |")
    print("|---|" + "---|" * len(COLUMNS))
    medians = {}
    for n, rows in runs.items():
        medians[n] = {k: statistics.median(r[k] for r in rows) for k, _ in COLUMNS}
        cells = " | ".join(fmt.format(medians[n][name]) for name, fmt in COLUMNS)
        print(f"| {n} | {cells} |")
    base = medians[counts[0]]
    for n in counts[1:]:
        ratio = medians[n]["last_p99_ms"] / base["last_p99_ms"]
        user = medians[n]["user_p99_ms"] / base["user_p99_ms"]
        print(f"p99 to the last client, {n} workers / {counts[0]}: {ratio:.2f}x "
              f"(user-space receipt: {user:.2f}x)")  # fmt: skip


if __name__ == "__main__":
    main()

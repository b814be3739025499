"""Latency of `crossrec serve` as a client sees it: POST /events then GET /recommend, for random shoppers.

Starts `python -m crossrec_core serve` in a subprocess on a free port, drives it with one keep-alive
http.client connection (one request at a time: the latency of one shopper's call), and prints JSON with
p50 / p95 / p99 / mean milliseconds of each endpoint and the throughput. Issue 15's target: p95 of
GET /recommend < 50 ms at 27k items on the reference CPU.

    # 27k items: the shared Amazon Food-Kitchen log (26,877 items); trains the model first when --model is absent
    .venv/bin/python bench/serve_latency.py --model /tmp/afk-model \\
        --interactions /work/shared/data/amazon-food-kitchen/interactions.csv \\
        --items /work/shared/data/amazon-food-kitchen/items.csv --requests 2000 --out /tmp/serve-latency.json

Each round: a random shopper (a logged one, or a new one with --new-shoppers), a random catalogue item
sent as a "view" event, then that shopper's top-k. A warm-up of --warmup rounds is not counted.
"""

from __future__ import annotations

import argparse
import csv
import http.client
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _percentiles(ms: list[float]) -> dict[str, float]:
    s = sorted(ms)
    pick = lambda q: s[min(len(s) - 1, max(0, int(round(q * (len(s) - 1)))))]  # noqa: E731 (nearest rank)
    return {"p50": round(pick(0.50), 2), "p95": round(pick(0.95), 2), "p99": round(pick(0.99), 2),
            "mean": round(sum(s) / len(s), 2), "max": round(s[-1], 2), "n": len(s)}


def _column(path: Path, name: str, limit: int = 2_000_000) -> list[str]:
    """Return the unique values of one column of a CSV file (the bench needs ids only; no pandas)."""
    seen: dict[str, None] = {}
    with open(path, newline="", encoding="utf-8-sig") as fh:
        for n, row in enumerate(csv.DictReader(fh)):
            if n >= limit:
                break
            seen.setdefault(row[name], None)
    return list(seen)


def _train(args: argparse.Namespace) -> None:
    cmd = [sys.executable, "-m", "crossrec_core", "train", "--interactions", args.interactions, "--out", args.model, "--seed", "42"]
    if args.items:
        cmd += ["--items", args.items]
    if args.epochs:
        cmd += ["--epochs", str(args.epochs)]
    print("training:", " ".join(cmd), file=sys.stderr, flush=True)
    subprocess.run(cmd, cwd=ROOT, check=True)


def _start(args: argparse.Namespace) -> tuple[subprocess.Popen, int]:
    cmd = [sys.executable, "-m", "crossrec_core", "serve", "--model", args.model, "--port", "0"]
    if args.interactions:
        cmd += ["--interactions", args.interactions]
    if args.items:
        cmd += ["--items", args.items]
    proc = subprocess.Popen(cmd, cwd=ROOT, stderr=subprocess.PIPE, text=True)
    line = proc.stderr.readline()  # the server prints its URL once it listens
    if "http://" not in line:
        proc.kill()
        raise SystemExit(f"crossrec serve did not start: {line}{proc.stderr.read()}")
    return proc, int(line.split("http://")[1].split()[0].rsplit(":", 1)[1])


def _call(conn: http.client.HTTPConnection, method: str, path: str, body: dict | None = None) -> tuple[float, dict]:
    data = None if body is None else json.dumps(body).encode()
    t0 = time.perf_counter()
    conn.request(method, path, body=data, headers={"Content-Type": "application/json"} if data else {})
    resp = conn.getresponse()
    payload = resp.read()
    ms = (time.perf_counter() - t0) * 1000.0
    if resp.status != 200:
        raise SystemExit(f"{method} {path} answered {resp.status}: {payload[:200]!r}")
    return ms, json.loads(payload)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="model folder; trained from --interactions first when it does not exist")
    p.add_argument("--interactions", help="log: its shoppers start with their history (and the model is trained on it if needed)")
    p.add_argument("--items", help="items table of --interactions")
    p.add_argument("--epochs", type=int, default=None, help="epochs when the model has to be trained (default: crossrec's)")
    p.add_argument("--requests", type=int, default=1000, help="measured rounds (one POST /events + one GET /recommend each)")
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--new-shoppers", action="store_true", help="random new shopper ids instead of the log's shoppers")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="also write the JSON here")
    args = p.parse_args(argv)
    if not Path(args.model).is_dir():
        if not args.interactions:
            raise SystemExit(f"No model at {args.model}; give --interactions (and --items) to train one.")
        _train(args)
    rng = random.Random(args.seed)
    users = [] if args.new_shoppers or not args.interactions else _column(Path(args.interactions), "user_id")
    items = _column(Path(args.items), "item_id") if args.items else []
    proc, port = _start(args)
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        conn.connect()
        # http.client sends headers and body in two writes; without this, Nagle holds the body until the
        # server's delayed ACK (~40 ms), which would be the client's delay, not the server's
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        health = _call(conn, "GET", "/health")[1]
        if not items:  # no items table: the catalogue items the server recommends to a few new shoppers
            for n in range(20):
                items += [r["item_id"] for r in _call(conn, "GET", f"/recommend/bench-seed-{n}?k=100")[1]["items"]]
            items = list(dict.fromkeys(items))
        post_ms, get_ms = [], []
        t_start = None
        for n in range(args.warmup + args.requests):
            if n == args.warmup:
                t_start = time.perf_counter()
            user = rng.choice(users) if users else f"bench-{rng.randrange(10_000)}"
            event = {"user_id": user, "item_id": rng.choice(items), "event": "view", "timestamp": 1_900_000_000 + n}
            ms_post, _ = _call(conn, "POST", "/events", event)
            ms_get, body = _call(conn, "GET", f"/recommend/{user}?k={args.k}")
            assert event["item_id"] not in {r["item_id"] for r in body["items"]}, "an item just had came back"
            if n >= args.warmup:
                post_ms.append(ms_post)
                get_ms.append(ms_get)
        wall = time.perf_counter() - t_start
        conn.close()
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
    result = {
        "model": args.model, "items": health["items"], "requests": args.requests, "k": args.k,
        "shoppers": "new" if not users else f"{len(users)} from {Path(args.interactions).name}",
        "recommend_ms": _percentiles(get_ms), "events_ms": _percentiles(post_ms),
        "throughput_rounds_per_s": round(args.requests / wall, 1),
        "throughput_requests_per_s": round(2 * args.requests / wall, 1),
        "load_average": [round(x, 2) for x in os.getloadavg()], "cpus": os.cpu_count(),
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())

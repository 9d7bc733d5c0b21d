"""Server throughput: requests/s with request batching (max batch 8) versus one at a time (max batch 1).

    PYTHONPATH=. .venv/bin/python benchmarks/bench_server.py                       # tiny preset, ~1.5 min
    PYTHONPATH=. .venv/bin/python benchmarks/bench_server.py --quick               # ~40 s
    PYTHONPATH=. .venv/bin/python benchmarks/bench_server.py --model smollm2-135m  # the real SmolLM2-135M

Two real `infimm-hd serve` processes on loopback, identical but for `--max-batch-size` (8 vs 1), each loaded once
and warmed up. A load round sends `--requests` chat completions (one 448x448 PNG as a data URL = 2 crops, a short
question, `max_tokens` new tokens, greedy) with `--concurrency` in flight at once from an asyncio httpx client in
this process, and times the round: requests/s = requests / wall seconds. Rounds alternate between the servers
(A B, B A, ...), medians are compared. The idle server sleeps in `await`, so it does not steal CPU from the busy one.
Every reply must be a 200 with the same text as the batch-1 server's (batching must not change answers).

Why the speed-up: one decode step of a small model costs nearly the same for 1 row as for 8 (per-op overhead and
weight reads dominate), so batching turns 8 steps into 1; the vision tower and prefill also run once per batch.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

_REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(_REPO_ROOT / "benchmarks"))
import repo_path  # noqa: E402, F401
from machine import cpu_model_name, machine_busy_seconds  # noqa: E402
from timing import result_line  # noqa: E402

TARGET = 2.0  # this benchmark's own bar: batching should at least double throughput on a small model


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """One `infimm-hd serve` subprocess; `cpu_seconds` lets the background-load line exclude it."""

    def __init__(self, model: str, batch: int, threads: int, log_dir: Path, wait_ms: float):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = open(log_dir / f"server-batch{batch}.log", "w")  # noqa: SIM115 - closed in stop()
        cmd = [sys.executable, "-m", "infimm_hd.cli", "serve", "--model", model, "--port", str(self.port)]
        cmd += ["--max-batch-size", str(batch), "--batch-wait-ms", str(wait_ms), "--device", "cpu"]
        cmd += ["--max-pending", "1024", "--log-level", "warning"]
        env = os.environ | {"OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(_REPO_ROOT)}
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server (batch {batch}) exited: see {self.log.name}")
            try:
                if httpx.get(self.base + "/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.3)
        raise RuntimeError(f"server (batch {batch}) did not start: see {self.log.name}")

    def cpu_seconds(self) -> float:
        """User + system CPU seconds of the server process, from /proc (fields 14 and 15 of stat)."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def request_body(model: str, max_tokens: int, i: int) -> dict:
    rng = np.random.default_rng(i % 4)
    pixels = rng.integers(0, 256, (14, 14, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).resize((448, 448), Image.Resampling.NEAREST).save(buf, "PNG")
    url = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    question = ["What is in the picture?", "Describe the colours.", "What shape is it?", "Is it a photo?"][i % 4]
    content = [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": question}]
    return {"model": model, "messages": [{"role": "user", "content": content}], "max_tokens": max_tokens}


async def load_round(base: str, bodies: list[dict], concurrency: int) -> tuple[float, list[str]]:
    """Send every body with `concurrency` in flight; returns (wall seconds, answers in order)."""
    gate = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, timeout=600, limits=limits) as client:

        async def one(body: dict) -> str:
            async with gate:
                r = await client.post("/v1/chat/completions", json=body)
            if r.status_code != 200:
                raise RuntimeError(f"{r.status_code}: {r.text[:300]}")
            return r.json()["choices"][0]["message"]["content"]

        start = time.perf_counter()
        answers = await asyncio.gather(*(one(b) for b in bodies))
        return time.perf_counter() - start, answers


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", default="tiny", help="preset or folder served by both servers (default tiny)")
    p.add_argument("--requests", type=int, default=64, help="requests per load round")
    p.add_argument("--concurrency", type=int, default=16, help="requests in flight at once")
    p.add_argument("--max-tokens", type=int, default=16)
    p.add_argument("--batch", type=int, default=8, help="max batch size of the batching server")
    p.add_argument("--batch-wait-ms", type=float, default=5.0)
    p.add_argument("--reps", type=int, default=5, help="timed rounds per server, interleaved")
    p.add_argument("--threads", type=int, default=2, help="OMP threads of each server")
    p.add_argument("--quick", action="store_true", help="32 requests, 3 rounds")
    args = p.parse_args(argv)
    if args.quick:
        args.requests, args.reps = 32, 3

    print(
        f"machine: {cpu_model_name()}, {os.cpu_count()} CPUs | model {args.model} | {args.requests} requests/round, "
        f"{args.concurrency} in flight, {args.max_tokens} new tokens, 448x448 image (2 crops) | {args.threads} threads"
    )
    log_dir = Path(tempfile.mkdtemp(prefix="bench_server_"))
    servers = {}
    try:
        servers["batched"] = Server(args.model, args.batch, args.threads, log_dir, args.batch_wait_ms)
        servers["one_at_a_time"] = Server(args.model, 1, args.threads, log_dir, args.batch_wait_ms)
        bodies = [request_body(args.model, args.max_tokens, i) for i in range(args.requests)]
        names = list(servers)
        answers = {}
        for name in names:  # warm-up round each (untimed), and the answers to compare
            _, answers[name] = asyncio.run(load_round(servers[name].base, bodies, args.concurrency))
        same = sum(a == b for a, b in zip(answers["batched"], answers["one_at_a_time"], strict=True))

        times: dict[str, list[float]] = {name: [] for name in names}
        busy0, own0 = machine_busy_seconds(), time.process_time()
        server0 = sum(s.cpu_seconds() for s in servers.values())
        wall0 = time.perf_counter()
        for rep in range(args.reps):
            for name in names if rep % 2 == 0 else list(reversed(names)):
                seconds, _ = asyncio.run(load_round(servers[name].base, bodies, args.concurrency))
                times[name].append(seconds)
                print(f"  round {rep + 1} {name:>13}: {args.requests / seconds:6.2f} requests/s ({seconds:.2f} s)")
        wall = time.perf_counter() - wall0
        busy1 = machine_busy_seconds()
        ours = time.process_time() - own0 + sum(s.cpu_seconds() for s in servers.values()) - server0
        health = httpx.get(servers["batched"].base + "/health").json()
    finally:
        for server in servers.values():
            server.stop()

    rps = {name: args.requests / statistics.median(ts) for name, ts in times.items()}
    speedup = rps["batched"] / rps["one_at_a_time"]
    rows_per_batch = health["rows_run"] / max(1, health["batches_run"])
    print(f"batched (max batch {args.batch}):  {rps['batched']:.2f} requests/s (median of {args.reps})")
    print(f"one at a time (max batch 1): {rps['one_at_a_time']:.2f} requests/s (median of {args.reps})")
    print(f"batched server: {rows_per_batch:.1f} rows per generate call on average")
    print(f"answers equal between the two servers: {same}/{args.requests}")
    if busy0 is not None and busy1 is not None:
        other = max(0.0, busy1 - busy0 - ours) / wall
        note = "" if other < 0.1 else "  WARNING: the machine was shared; absolute figures are unreliable"
        print(f"background load: other processes used {other:.2f} cores on average during timing{note}")
    print(
        result_line(
            "server_batching_speedup",
            f"{speedup:.1f}x requests/s ({rps['batched']:.1f} vs {rps['one_at_a_time']:.1f}, {args.model})",
            f">= {TARGET:g}x",
            speedup >= TARGET,
        )
    )


if __name__ == "__main__":
    main()

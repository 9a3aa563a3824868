"""Load on `mixkit serve` over loopback: dynamic batching on against off, at the same concurrency.

    python benchmarks/serve_load.py [--requests 400] [--concurrency 16] [--cap-s 60] [--task vqa]

The checkpoint is the mid-size random BLIP-2 OPT folder of `generation_vs_transformers.py` (written by
`transformers`: ViT 8 x 384 at 224 px, Q-Former 6 x 384 with 32 queries, OPT 12 x 768 with a 50272-word
vocabulary), built once into `--workdir`; `--model` serves another folder instead. For each mode the server
runs as its own process (`mixkit serve --max-batch-size 16`, then `--max-batch-size 1`), gets one warm-up
request, then `--concurrency` clients send requests (16 images in turn, 5 questions in turn, the checkpoint's
own generation settings: `mixkit predict`'s defaults) until `--requests` are sent or `--cap-s` seconds have
passed; the requests in flight then finish. Reported per mode: answered, errors (non-200), lost (sent, never
answered: connection errors or time-outs), wall time, throughput, p50 / p95 / p99 latency and the mean batch
size from the server's /metrics. Rows go to stdout as Markdown. Every figure is a wall time: run it on a quiet
machine.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

BENCHMARKS = Path(__file__).resolve().parent
REPO = BENCHMARKS.parent
WORK = Path(tempfile.gettempdir()) / "mixkit-generation-bench"  # shared with generation_vs_transformers.py
QUESTIONS = ("what is in the picture?", "what colour is the shape?", "how many shapes are there?",
             "is there a circle?", "where is the square?")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(model: Path, max_batch_size: int, log: Path, max_wait_ms: float) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    process = subprocess.Popen(
        [sys.executable, "-m", "mixkit.cli", "serve", "--model", str(model), "--port", str(port),
         "--max-batch-size", str(max_batch_size), "--max-wait-ms", str(max_wait_ms), "--max-queue", "256",
         "--log-level", "warning"], stdout=subprocess.DEVNULL, stderr=log.open("w"), env=env, cwd=REPO)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"mixkit serve exited: {log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return process, url
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    process.kill()
    raise RuntimeError("mixkit serve did not start within 300 s")


def request_args(task: str, images: list[bytes], number: int) -> dict:
    files = {"image": (f"{number % len(images)}.png", images[number % len(images)], "image/png")}
    data = {"question": QUESTIONS[number % len(QUESTIONS)]} if task == "vqa" else {}
    return {"files": files, "data": data}


async def load(url: str, task: str, images: list[bytes], total: int, concurrency: int, cap_s: float) -> dict:
    """Clients sending until `total` are sent or `cap_s` passed; (status or None if lost, seconds) each."""
    results: list[tuple[int | None, float]] = []
    sent = 0
    start = time.perf_counter()

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal sent
        while sent < total and time.perf_counter() - start < cap_s:
            number, sent = sent, sent + 1
            began = time.perf_counter()
            try:
                response = await http.post(f"{url}/v1/{task}", **request_args(task, images, number))
                status = response.status_code
            except httpx.HTTPError:
                status = None
            results.append((status, time.perf_counter() - began))

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=600) as http:
        await asyncio.gather(*(client(http) for _ in range(concurrency)))
    return {"sent": sent, "results": results, "wall": time.perf_counter() - start}


def mean_batch(url: str) -> float:
    values = {}
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith(("mixkit_batch_size_sum ", "mixkit_batch_size_count ")):
            name, value = line.split()
            values[name] = float(value)
    return values["mixkit_batch_size_sum"] / max(1.0, values["mixkit_batch_size_count"])


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def run_mode(model: Path, max_batch_size: int, args: argparse.Namespace, images: list[bytes]) -> dict:
    log = args.workdir / f"serve-batch{max_batch_size}.log"
    process, url = start_server(model, max_batch_size, log, args.max_wait_ms)
    try:
        warm = httpx.post(f"{url}/v1/{args.task}", timeout=600, **request_args(args.task, images, 0))
        if warm.status_code != 200:
            raise RuntimeError(f"warm-up request failed: {warm.status_code} {warm.text}")
        # The mean batch size below counts the warm-up's call too (one call of one, against hundreds).
        outcome = asyncio.run(load(url, args.task, images, args.requests, args.concurrency, args.cap_s))
        batch = mean_batch(url)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(120)
    statuses = [status for status, _ in outcome["results"]]
    ok = [seconds for status, seconds in outcome["results"] if status == 200]
    return {"max_batch_size": max_batch_size, "sent": outcome["sent"], "answered": len(ok),
            "errors": sum(1 for status in statuses if status not in (None, 200)),
            "lost": outcome["sent"] - sum(1 for status in statuses if status is not None),
            "wall": outcome["wall"], "throughput": len(ok) / outcome["wall"], "mean_batch": batch,
            "p50": percentile(ok, 50), "p95": percentile(ok, 95), "p99": percentile(ok, 99)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=400, help="most requests per mode (default 400)")
    parser.add_argument("--concurrency", type=int, default=16, help="clients sending at once (default 16)")
    parser.add_argument("--cap-s", type=float, default=60.0, help="stop sending after this long (default 60 s)")
    parser.add_argument("--task", choices=["vqa", "caption"], default="vqa")
    parser.add_argument("--max-batch-size", type=int, default=16, help="batching on: this size (default 16)")
    parser.add_argument("--max-wait-ms", type=float, default=10.0, help="the batch window (default 10 ms)")
    parser.add_argument("--model", type=Path, help="serve this folder instead of the mid-size random one")
    parser.add_argument("--workdir", type=Path, default=WORK, help="where the checkpoint and images are built")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(BENCHMARKS))
    from generation_vs_transformers import build

    paths = build(args.workdir)
    images = [path.read_bytes() for path in paths]
    model = args.model or args.workdir
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores; {args.requests} requests, {args.concurrency} "
          f"concurrent, capped at {args.cap_s:.0f} s; task {args.task}; model {model}")
    print("| batching | max batch | sent | answered | errors | lost | wall s | req/s | p50 s | p95 s | p99 s | "
          "mean batch |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    rows = []
    for size in (args.max_batch_size, 1):
        row = run_mode(model, size, args, images)
        rows.append(row)
        print(f"| {'on' if size > 1 else 'off'} | {size} | {row['sent']} | {row['answered']} | {row['errors']} | "
              f"{row['lost']} | {row['wall']:.1f} | {row['throughput']:.2f} | {row['p50']:.2f} | {row['p95']:.2f} | "
              f"{row['p99']:.2f} | {row['mean_batch']:.1f} |", flush=True)
    print(f"batching gain: {rows[0]['throughput'] / rows[1]['throughput']:.2f}x throughput")


if __name__ == "__main__":
    main()

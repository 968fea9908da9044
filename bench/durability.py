"""The cost of keeping what Redis accepted, measured side by side in one run.

Three stacks (Redis, a model server, Apache) serve the same near-zero model (bench.tiny_model,
so what is left is the serving overhead, where Redis's cost shows most):

  off       no append-only file (what the project ran before: a Redis crash loses everything)
  everysec  the default: append-only file, fsynced once a second
  wait      everysec, plus a replica and three Sentinels, the tiers finding the primary through
            them, and MIN_REPLICAS=1 (each 202 waits for the replica's acknowledgement)

Closed loops of `--concurrency` clients on POST /predict, and of asynchronous submits (202s),
run in rounds off, everysec, wait, off, ... so each sees the same minutes of the machine.
Printed: images/s of each and the ratio to `off`, the 202 latency, and Redis's CPU time per
image, from which the images/s one Redis core carries for this workload follows.

    .venv/bin/python -m bench.durability --concurrency 32 --duration 15 --rounds 2
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import requests

from bench import cpu, tiny_model  # noqa: E402
from bench.benchmark import sample_image  # noqa: E402
from keras_rest_api import stress  # noqa: E402
from tests.support.harness import Stack  # noqa: E402

CONFIGS = {
    "off": {"REDIS_APPENDFSYNC": "off"},
    "everysec": {"REDIS_APPENDFSYNC": "everysec"},
    "wait": {"REDIS_APPENDFSYNC": "everysec", "MIN_REPLICAS": 1, "sentinel": True},
}


def redis_cpu_seconds(stack: Stack) -> float:
    """CPU seconds the stack's Redis primary (and replica, if any) used so far."""
    total = 0.0
    for server in (stack.redis, stack.replica):
        if server is not None and server.process is not None:
            total += cpu.cpu_seconds(cpu.read_stat(server.process.pid)[1])
    return total


def async_latencies(url: str, image: bytes, concurrency: int, count: int) -> list[float]:
    """Milliseconds each of `count` asynchronous submits took to be answered 202."""
    latencies: list[float] = []
    lock = threading.Lock()

    def worker(n: int) -> None:
        with requests.Session() as session:
            for _ in range(n):
                started = time.perf_counter()
                response = session.post(f"{url}/predict?async=1", files={"image": image}, timeout=60)
                if response.status_code == 202:
                    with lock:
                        latencies.append((time.perf_counter() - started) * 1000)

    threads = [threading.Thread(target=worker, args=(count // concurrency,)) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    return latencies


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--duration", type=float, default=15.0, help="seconds per closed-loop run")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--async-count", type=int, default=256, help="asynchronous submits per round")
    parser.add_argument("--json", help="write all figures to this file")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="bench-durability-"))
    model, labels = tiny_model.save(workdir)
    image_path = sample_image(workdir)
    image = image_path.read_bytes()
    base = {"MODEL": str(model), "MODEL_LABELS": str(labels), "MODEL_PREPROCESSING": tiny_model.PREPROCESSING,
            "KEY_PREFIX": "bench", "MAX_QUEUE_LENGTH": 100_000, "ASYNC_TIMEOUT": 600}
    stacks: dict[str, Stack] = {}
    figures: dict[str, dict[str, list[float]]] = {name: {"ips": [], "redis_ms": [], "async_ms": []} for name in CONFIGS}
    try:
        for name, overrides in CONFIGS.items():
            settings = {**base, **overrides}
            sentinel = bool(settings.pop("sentinel", False))
            (workdir / name).mkdir()
            stacks[name] = Stack(workdir / name, settings, sentinel=sentinel)
            stacks[name].start()
        for round_number in range(args.rounds):
            for name, stack in stacks.items():
                before = redis_cpu_seconds(stack)
                summary = stress.run_closed_loop(f"{stack.url}/predict", image_path, concurrency=args.concurrency,
                                                 duration=args.duration)
                used = redis_cpu_seconds(stack) - before
                figures[name]["ips"].append(summary["throughput_rps"])
                figures[name]["redis_ms"].append(1000 * used / max(1, summary["ok"]))
                figures[name]["async_ms"].extend(async_latencies(stack.url, image, 8, args.async_count))
                print(f"round {round_number + 1} {name:9s} {summary['throughput_rps']:8.1f} img/s  "
                      f"Redis {figures[name]['redis_ms'][-1]:.3f} ms CPU/img  failures {summary['failures']}",
                      file=sys.stderr)
    finally:
        for stack in stacks.values():
            stack.stop()
    baseline = statistics.mean(figures["off"]["ips"])
    report: dict[str, Any] = {}
    for name, values in figures.items():
        ips = statistics.mean(values["ips"])
        redis_ms = statistics.mean(values["redis_ms"])
        report[name] = {"images_per_s": round(ips, 1), "ratio_to_off": round(ips / baseline, 3),
                        "redis_cpu_ms_per_image": round(redis_ms, 3),
                        "one_redis_core_images_per_s": round(1000 / redis_ms) if redis_ms else None,
                        "accept_202_ms_p50": round(statistics.median(values["async_ms"]), 1)
                        if values["async_ms"] else None}
        print(f"{name:9s} /predict {ips:8.1f} img/s ({ips / baseline:.3f} of off)  202 p50 "
              f"{report[name]['accept_202_ms_p50']} ms  Redis {redis_ms:.3f} ms CPU/img "
              f"(one Redis core: ~{report[name]['one_redis_core_images_per_s']} img/s)")
    if args.json:
        Path(args.json).write_text(json.dumps({"config": vars(args), "results": report}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The cost of keeping what Redis accepted, measured side by side in one run.

Three stacks (Redis, a model server, Apache) serve the same near-zero model (bench.tiny_model,
so what is left is the serving overhead, where Redis's cost shows most; `--model default` serves
the model a new user gets instead):

  off       no append-only file (what the project ran before: a Redis crash loses everything)
  everysec  the default: append-only file, fsynced once a second
  wait      everysec, plus a replica and three Sentinels, the tiers finding the primary through
            them, and MIN_REPLICAS=1 (each 202 waits for the replica's acknowledgement)

With `--baseline-tree DIR` (a checkout of earlier code with its own .venv, e.g.
`git worktree add /tmp/base 586ef89`) a fourth stack, `baseline`, is that code as it was: its
own harness starts its own Redis, web tier and model server, in a child process run by that
tree's Python, and the same clients measure it in the same rounds. This is the "against the
code before" figure: persistence and WAIT measured against the service that had neither.

Closed loops of `--concurrency` clients on POST /predict, and of asynchronous submits (202s),
run in rounds baseline, off, everysec, wait, baseline, ... so each sees the same minutes of the machine.
Printed: images/s of each and the ratio to `off`, the 202 latency, and Redis's CPU time per
image, from which the images/s one Redis core carries for this workload follows.

    .venv/bin/python -m bench.durability --concurrency 32 --duration 15 --rounds 4 [--baseline-tree DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
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


# Run by the baseline tree's Python in that tree: its own harness starts the stack it had then.
# It prints the stack's URL and Redis pid, and stops everything when its stdin closes.
BASELINE_STACK = """
import json, sys
from pathlib import Path
from tests.support.harness import Stack
stack = Stack(Path(sys.argv[1]), json.loads(sys.argv[2]))
try:
    stack.start()
    print(json.dumps({"url": stack.url, "redis_pids": [stack.redis.process.pid]}), flush=True)
    sys.stdin.read()
finally:
    stack.stop()
"""


class BaselineStack:
    """The stack of an earlier checkout, started by its own code in a child process."""

    def __init__(self, tree: Path, workdir: Path, settings: dict[str, Any]) -> None:
        self.tree, self.workdir, self.settings = tree, workdir, settings
        self.process: subprocess.Popen | None = None
        self.url, self.redis_pids = "", []

    def start(self, timeout: float = 300) -> None:
        python = self.tree / ".venv" / "bin" / "python"
        if not python.exists():
            raise SystemExit(f"--baseline-tree {self.tree}: expected a checkout with its own .venv "
                             f"(found no {python}); make one with ./scripts/bootstrap.sh in that tree")
        settings = {key: str(value) for key, value in self.settings.items()}
        self.process = subprocess.Popen([str(python), "-c", BASELINE_STACK, str(self.workdir), json.dumps(settings)],
                                        cwd=self.tree, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                        env={**os.environ, "PYTHONPATH": str(self.tree)})
        line = _read_line(self.process, timeout)
        started = json.loads(line)
        self.url, self.redis_pids = started["url"], started["redis_pids"]

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.stdin:
            self.process.stdin.close()
        try:
            self.process.wait(120)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)


def _read_line(process: subprocess.Popen, timeout: float) -> str:
    """The child's first line of output, or an error if it exits or takes longer than `timeout`."""
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.append(process.stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    if not lines or not lines[0].strip():
        raise SystemExit(f"the baseline stack did not start within {timeout:.0f} s (exit {process.poll()}); "
                         "its logs are in its workdir")
    return lines[0]


def redis_pids(stack: Stack | BaselineStack) -> list[int]:
    if isinstance(stack, BaselineStack):
        return stack.redis_pids
    return [server.process.pid for server in (stack.redis, stack.replica)
            if server is not None and server.process is not None]


def redis_cpu_seconds(stack: Stack | BaselineStack) -> float:
    """CPU seconds the stack's Redis primary (and replica, if any) used so far."""
    return sum(cpu.cpu_seconds(cpu.read_stat(pid)[1]) for pid in redis_pids(stack))


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
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds of load on each stack before the rounds")
    parser.add_argument("--async-count", type=int, default=256, help="asynchronous submits per round")
    parser.add_argument("--json", help="write all figures to this file")
    parser.add_argument("--baseline-tree", type=Path,
                        help="a checkout of earlier code (with its .venv) to measure beside these three")
    parser.add_argument("--model", choices=("tiny", "default"), default="tiny",
                        help="tiny: the near-zero model, where Redis's share is largest; default: the "
                             "model a new user gets (EfficientNet-Lite0), each tree its own")
    parser.add_argument("--configs", default=",".join(CONFIGS),
                        help=f"which of {', '.join(CONFIGS)} to run (comma-separated)")
    args = parser.parse_args()
    configs = {name: CONFIGS[name] for name in args.configs.split(",") if name}

    workdir = Path(tempfile.mkdtemp(prefix="bench-durability-"))
    image_path = sample_image(workdir)
    image = image_path.read_bytes()
    base: dict[str, Any] = {"KEY_PREFIX": "bench", "MAX_QUEUE_LENGTH": 100_000, "ASYNC_TIMEOUT": 600}
    if args.model == "tiny":
        model, labels = tiny_model.save(workdir)
        base.update(MODEL=str(model), MODEL_LABELS=str(labels), MODEL_PREPROCESSING=tiny_model.PREPROCESSING)
    stacks: dict[str, Stack | BaselineStack] = {}
    names = (["baseline"] if args.baseline_tree else []) + list(configs)
    figures: dict[str, dict[str, list[float]]] = {name: {"ips": [], "redis_ms": [], "async_ms": []} for name in names}
    try:
        if args.baseline_tree:
            (workdir / "baseline").mkdir()
            stacks["baseline"] = BaselineStack(args.baseline_tree.resolve(), workdir / "baseline", base)
            stacks["baseline"].start()
        for name, overrides in configs.items():
            settings = {**base, **overrides}
            sentinel = bool(settings.pop("sentinel", False))
            (workdir / name).mkdir()
            stacks[name] = Stack(workdir / name, settings, sentinel=sentinel)
            stacks[name].start()
        # Not counted: each stack's first seconds under load (JIT, caches, Apache spawning its
        # threads) would fall on whichever stack is measured first.
        for stack in stacks.values():
            stress.run_closed_loop(f"{stack.url}/predict", image_path, concurrency=args.concurrency,
                                   duration=args.warmup)
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
    reference = names[0]
    baseline = statistics.mean(figures[reference]["ips"])
    report: dict[str, Any] = {}
    for name, values in figures.items():
        ips = statistics.mean(values["ips"])
        redis_ms = statistics.mean(values["redis_ms"])
        report[name] = {"images_per_s": round(ips, 1), f"ratio_to_{reference}": round(ips / baseline, 3),
                        "rounds_images_per_s": [round(value, 1) for value in values["ips"]],
                        "redis_cpu_ms_per_image": round(redis_ms, 3),
                        "one_redis_core_images_per_s": round(1000 / redis_ms) if redis_ms else None,
                        "accept_202_ms_p50": round(statistics.median(values["async_ms"]), 1)
                        if values["async_ms"] else None}
        print(f"{name:9s} /predict {ips:8.1f} img/s ({ips / baseline:.3f} of {reference})  202 p50 "
              f"{report[name]['accept_202_ms_p50']} ms  Redis {redis_ms:.3f} ms CPU/img "
              f"(one Redis core: ~{report[name]['one_redis_core_images_per_s']} img/s)")
    if args.json:
        Path(args.json).write_text(json.dumps({"config": vars(args), "results": report}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())

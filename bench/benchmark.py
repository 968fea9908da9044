"""The service against the model's own ceiling, measured side by side in one run.

1. The bare model: `LoadedModel.predict` (preprocessing + `predict_on_batch`) at batch 1 and
   at BATCH_SIZE, in a process of its own that stays loaded: measured at the start and again
   after every phase, so each phase is compared with the ceiling of its own minutes.
2. The whole system, as `run.sh` runs it (Redis, a model server, Apache with mod_wsgi daemon
   mode), driven by stress_test.py: closed loops at each concurrency, then the tutorial's
   open-loop flood (500 requests, 0.05 s apart).
3. A table of each figure next to its ceiling, the batch sizes the model server formed, how
   busy the model was, the per-request breakdown (decode, queue wait, inference, total), the
   CPU each part of the system used per image, bytes queued per image and resident memory per
   web daemon process. `--json` writes everything.

Usage:  .venv/bin/python -m bench.benchmark --model resnet50 --weights random \\
            --json bench/results/resnet50.json --plot bench/results/resnet50.png
        .venv/bin/python -m bench.benchmark                    # the default model

On a GPU machine it runs unchanged: the model server uses whatever KERAS_BACKEND (tensorflow,
jax, torch) finds the GPU with.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

# Run as `python -m bench.benchmark` from the project root: `bench.*` and `tests.*` (the harness
# the system tests use too) come from there, the package from the venv.
from bench import cpu  # noqa: E402
from tests.support.harness import PROJECT, VENV_PYTHON, Stack  # noqa: E402
from bench.timing import time_calls  # noqa: E402
from keras_rest_api import settings  # noqa: E402


def measure_ceiling(model: Any, batch: int, seconds: float) -> dict[str, Any]:
    """Bare-model figures for one batch size: `LoadedModel.predict` = preprocessing + `predict_on_batch`."""
    height, width = model.input_size
    pixels = np.random.default_rng(0).integers(0, 256, (batch, height, width, 3), dtype=np.uint8)
    times = time_calls(lambda: model.predict(pixels), seconds)
    return {
        "batch": batch,
        "images_per_s": batch * len(times) / sum(times),
        "ms_per_batch_p50": 1000 * times[len(times) // 2],
    }


def serve_ceilings(config: dict[str, Any]) -> None:
    """The bare-model process: load once, then answer "BATCH SECONDS" lines with JSON lines."""
    from keras_rest_api.models import load_model

    model = load_model(config)
    print(json.dumps({"model": model.name, "input_size": list(model.input_size)}), flush=True)
    for line in sys.stdin:
        batch, seconds = line.split()
        print(json.dumps(measure_ceiling(model, int(batch), float(seconds))), flush=True)


class Ceiling:
    """The bare model in a process of its own, kept loaded for the whole run.

    This VM's speed drifts by 10-20 % within minutes (other tenants), so a ceiling measured
    once at the start is no fair yardstick for a phase run minutes later. The bare model is
    measured again between phases, and each phase is compared with the mean of the
    measurements just before and just after it. While one side is measured the other idles.
    """

    def __init__(self, env: dict[str, str], seconds: float, log_path: Path) -> None:
        self.seconds = seconds
        self.log_path = log_path
        with open(log_path, "ab") as log:
            self.process = subprocess.Popen(
                [str(VENV_PYTHON), "-m", "bench.benchmark", "--ceiling-worker"],
                env={**os.environ, **env, "TF_CPP_MIN_LOG_LEVEL": "2"}, cwd=PROJECT,
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True,
            )
        self.info = self._read()
        self.measurements: list[dict[str, Any]] = []

    def _read(self) -> dict[str, Any]:
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the bare-model process exited with status {self.process.wait()}; "
                               f"see {self.log_path}")
        return json.loads(line)

    def measure(self, batch: int, label: str) -> dict[str, Any]:
        """One bare-model figure at `batch`, recorded with `label` (when it was taken)."""
        self.process.stdin.write(f"{batch} {self.seconds}\n")
        self.process.stdin.flush()
        figure = {**self._read(), "when": label}
        self.measurements.append(figure)
        return figure

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(30)


def bracket(measurements: list[dict[str, Any]], batch: int, phase: str, key: str = "images_per_s") -> float:
    """A bare-model figure at `batch` around `phase`: the mean of those taken just before and just after it."""
    figures = [m for m in measurements if m["batch"] == batch]
    labels = [m["when"] for m in figures]
    after = labels.index(f"after {phase}") if f"after {phase}" in labels else len(figures)
    around = figures[max(0, after - 1):after + 1]
    return sum(m[key] for m in around) / len(around)


def sample_image(directory: Path) -> Path:
    """A real photograph as a typical JPEG upload: scikit-image's chelsea (a cat, 451x300)."""
    from PIL import Image

    try:
        from skimage import data
    except ImportError:  # bench/gpu.py's lean venv: the same photograph, as shipped in samples/
        return PROJECT / "samples" / "chelsea.jpg"
    path = directory / "chelsea.jpg"
    Image.fromarray(data.chelsea()).save(path, "JPEG", quality=90)
    return path


def web_daemon_rss_mb() -> list[float]:
    """Resident memory of each mod_wsgi daemon process (named `(wsgi:...`)."""
    output = subprocess.run(["ps", "-eo", "rss,args"], capture_output=True, text=True).stdout
    return [int(line.split()[0]) / 1024 for line in output.splitlines()[1:] if "(wsgi:" in line]


def server_figures(stack: Stack) -> dict[str, Any]:
    """What the model servers publish with their heartbeats: batches run by size, inference seconds."""
    sizes: dict[int, int] = {}
    inference_s = 0.0
    for server in stack.queue().live_servers(ttl=10):
        for size, count in server.batch_sizes.items():
            sizes[size] = sizes.get(size, 0) + count
        inference_s += server.inference.sum
    return {"batch_sizes": sizes, "inference_s": inference_s}


def since(before: dict[int, int], after: dict[int, int]) -> dict[int, int]:
    return {size: after[size] - before.get(size, 0) for size in sorted(after) if after[size] > before.get(size, 0)}


def run_phase(stack: Stack, name: str, run: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """One load phase, with what the model servers did and the CPU each part used meanwhile."""
    # One heartbeat interval first, so the figures published before the phase are current.
    time.sleep(1.0)
    before, cpu_before = server_figures(stack), cpu.snapshot()
    summary = run()
    cpu_used = cpu.used_between(cpu_before, cpu.snapshot())
    time.sleep(1.0)  # and after, so they include the phase's last batches
    after = server_figures(stack)
    summary["phase"] = name
    summary["batch_sizes"] = since(before["batch_sizes"], after["batch_sizes"])
    batches = sum(summary["batch_sizes"].values())
    images = sum(size * count for size, count in summary["batch_sizes"].items())
    summary["mean_batch"] = images / batches if batches else 0.0
    # The share of the phase the model spent inside predict (the wait after it excluded).
    summary["model_busy"] = (after["inference_s"] - before["inference_s"]) / max(summary["elapsed_s"], 1e-9)
    summary["cpu_ms_per_image"] = {part: 1000 * seconds / max(summary["ok"], 1) for part, seconds in cpu_used.items()}
    lat = summary.get("latency_ms") or {}
    print(f"  {name:<14} ok {summary['ok']:>5}  failed {summary['failed']:>3}  "
          f"{summary['throughput_rps']:>6.1f} img/s  p50 {lat.get('p50', 0):>7.1f}  p95 {lat.get('p95', 0):>7.1f}  "
          f"p99 {lat.get('p99', 0):>7.1f} ms  model busy {summary['model_busy']:.0%}  "
          f"batches {summary['batch_sizes']}", flush=True)
    return summary


def measure_bare(ceiling: Ceiling, batch: int, label: str) -> None:
    figure = ceiling.measure(batch, label)
    print(f"  bare model     batch {batch:>2}: {figure['images_per_s']:6.1f} img/s, "
          f"{figure['ms_per_batch_p50']:6.1f} ms per batch ({label})", flush=True)


def run_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    from keras_rest_api import stress as stress_test
    from keras_rest_api.ids import new_request_id
    from keras_rest_api.queue.records import Job

    env = {"MODEL": args.model, "MODEL_PRECISION": args.precision, "BATCH_SIZE": str(args.batch_size),
           "BATCH_WAIT_MS": str(args.batch_wait_ms), "KEY_PREFIX": "bench", "HEARTBEAT_INTERVAL": "0.5", "LOG_LEVEL": "WARNING",
           "WSGI_PROCESSES": str(args.processes), "WSGI_THREADS": str(args.threads),
           "MAX_QUEUE_LENGTH": "2000", "REQUEST_TIMEOUT": "60"}
    if args.weights:
        env["MODEL_WEIGHTS"] = args.weights
    print(f"model {args.model} ({args.precision}), batch size {args.batch_size}, window {args.batch_wait_ms} ms, "
          f"Apache {args.processes} processes x {args.threads} threads, {os.cpu_count()} CPU cores", flush=True)

    workdir = Path(tempfile.mkdtemp(prefix="kras-bench-"))
    image = sample_image(workdir)
    if args.web == "gevent":
        from bench.gevent_stack import GeventStack

        stack = GeventStack(workdir, env)
    else:
        stack = Stack(workdir, env)
    ceiling = Ceiling(env, args.seconds, workdir / "bare-model.log")
    height, width = ceiling.info["input_size"]
    job = Job(id=new_request_id(), pixels=np.zeros((height, width, 3), np.uint8), top_k=5, deadline=time.time(),
              request_id=new_request_id())
    queued_bytes = sum(len(k) + len(v) for k, v in job.to_redis().items())
    results: dict[str, Any] = {"settings": env, "bare": {**ceiling.info, "measurements": ceiling.measurements},
                               "queued_bytes_per_image": queued_bytes, "phases": []}
    try:
        stack.start(timeout=300)
        url = f"{stack.url}/predict"
        if args.client_nice:
            # The load generator is not part of the service: in production it runs elsewhere.
            # Here it shares the 2 cores, so it yields them to the service when both want them.
            os.nice(args.client_nice)
        stress_test.run_closed_loop(url, image, concurrency=2, duration=3)  # warm connections and caches
        for batch in sorted({1, args.batch_size}):
            measure_bare(ceiling, batch, "start")
        for concurrency in args.concurrency:
            name = f"closed c={concurrency}"
            results["phases"].append(run_phase(stack, name, lambda c=concurrency: stress_test.run_closed_loop(
                url, image, concurrency=c, duration=args.duration)))
            # Batch 1 is the yardstick of the lone client only.
            for batch in sorted({1, args.batch_size}) if concurrency == 1 else [args.batch_size]:
                measure_bare(ceiling, batch, f"after {name}")
        results["web_rss_mb"] = web_daemon_rss_mb()
        if args.flood:
            results["phases"].append(run_phase(stack, "flood 500x0.05", lambda:
                                               stress_test.run_flood(url, image, requests_total=500, interval=0.05)))
    finally:
        stack.stop()
        ceiling.close()
    for phase in results["phases"]:
        if phase["phase"].startswith("closed"):
            phase["bare_images_per_s"] = bracket(ceiling.measurements, args.batch_size, phase["phase"])
            phase["ratio_to_bare"] = phase["throughput_rps"] / phase["bare_images_per_s"]
    results["table"] = table(results, args.batch_size)
    return results


# The targets each figure is held to: ResNet50's (issue 3), where the model dominates, and a
# small fast model's (issue 14: EfficientNet-Lite0, the default), where serving costs show.
TARGETS = {"efficientnet_lite0": (0.80, 5.0)}
DEFAULT_TARGETS = (0.90, 10.0)


def table(results: dict[str, Any], batch_size: int) -> list[tuple[str, str, str, str]]:
    share, extra_ms = TARGETS.get(str(results.get("settings", {}).get("MODEL", "")), DEFAULT_TARGETS)
    measurements = results["bare"]["measurements"]
    phases = {p["phase"]: p for p in results["phases"]}
    closed = [p for name, p in phases.items() if name.startswith("closed")]
    # Saturated: batches (nearly) full. Pooling those phases, rather than picking the best one,
    # keeps one lucky phase on a noisy machine from making the headline.
    saturated = [p for p in closed if p["mean_batch"] >= 0.9 * batch_size] or closed[-1:]
    service = sum(p["throughput_rps"] for p in saturated) / len(saturated)
    bare = sum(p["bare_images_per_s"] for p in saturated) / len(saturated)
    names = ", ".join(p["phase"].removeprefix("closed ") for p in saturated)
    rows = [("saturation throughput", f"{service:.1f} img/s (mean of {names})",
             f"{bare:.1f} img/s (bare, batch {batch_size})", f"{service / bare:.0%} (target >= {share:.0%})")]
    lone = phases.get("closed c=1")
    if lone:
        p50 = lone["latency_ms"]["p50"]
        single_ms = bracket(measurements, 1, "closed c=1", key="ms_per_batch_p50")
        rows.append(("c=1 p50 latency", f"{p50:.1f} ms", f"{single_ms:.1f} ms (bare, batch 1)",
                     f"{p50 - single_ms:+.1f} ms (target <= +{extra_ms:g} ms)"))
    flood = phases.get("flood 500x0.05")
    if flood:
        rows.append(("flood 500x0.05", f"{flood['failed']} failed, p95 {flood['latency_ms']['p95']:.0f} ms",
                     "offered 20 img/s", "target 0 failed, p95 < 1000 ms"))
    rows.append(("bytes queued / image", f"{results['queued_bytes_per_image']:,}", "", "target <= 153,600 (150 KiB)"))
    rss = results.get("web_rss_mb") or [0]
    rows.append(("web daemon RSS", ", ".join(f"{v:.0f} MB" for v in rss), "", "target <= 150 MB each"))
    return rows


def plot(results: dict[str, Any], path: str) -> None:
    """Throughput and latency percentiles against concurrency, with the bare-model ceiling."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    closed = [p for p in results["phases"] if p["phase"].startswith("closed")]
    clients = [p["config"]["concurrency"] for p in closed]
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    left.plot(clients, [p["throughput_rps"] for p in closed], "o-", label="service (through Apache)")
    batch = results["settings"]["BATCH_SIZE"]
    left.plot(clients, [p["bare_images_per_s"] for p in closed], "s--", color="grey",
              label=f"bare model, batch {batch} (measured around each point)")
    left.set(xscale="log", xlabel="concurrent clients", ylabel="images/s", title="throughput", ylim=(0, None))
    left.legend()
    for q in ("p50", "p95", "p99"):
        right.plot(clients, [p["latency_ms"][q] for p in closed], "o-", label=q)
    right.set(xscale="log", yscale="log", xlabel="concurrent clients", ylabel="ms", title="latency")
    right.legend()
    figure.suptitle(f"{results['bare']['model']} on {os.cpu_count()} CPU cores")
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def print_report(results: dict[str, Any]) -> None:
    print("\n{:<24}{:<36}{:<32}{}".format("figure", "service", "ceiling", "ratio"))
    for row in results["table"]:
        print("{:<24}{:<36}{:<32}{}".format(*row))
    print("\nper phase: throughput against the bare model measured just before and after it")
    for phase in results["phases"]:
        if "ratio_to_bare" in phase:
            print(f"  {phase['phase']:<16}{phase['throughput_rps']:6.1f} / {phase['bare_images_per_s']:5.1f} img/s"
                  f" = {phase['ratio_to_bare']:4.0%}   model busy {phase['model_busy']:4.0%}"
                  f"   mean batch {phase['mean_batch']:.1f}")
    print("\nper-request breakdown (Server-Timing, ms: mean / p50 / p95)")
    for phase in results["phases"]:
        parts = [f"{name} {d['mean']:.1f}/{d['p50']:.1f}/{d['p95']:.1f}"
                 for name, d in phase["server_timing_ms"].items() if name != "batch"]
        print(f"  {phase['phase']:<16}" + "  ".join(parts))
    print("\nCPU per answered image, ms (both cores; the model's share is what the service keeps)")
    print("  " + " " * 16 + "".join(f"{part:>16}" for part in cpu.PARTS))
    for phase in results["phases"]:
        print(f"  {phase['phase']:<16}" + "".join(f"{phase['cpu_ms_per_image'][part]:16.1f}" for part in cpu.PARTS))


def main() -> int:
    parser = argparse.ArgumentParser(description="Benchmark the service against the bare model.")
    parser.add_argument("--model", default=os.environ.get("MODEL", "efficientnet_lite0"))
    parser.add_argument("--weights", default=os.environ.get("MODEL_WEIGHTS", ""),
                        help="MODEL_WEIGHTS for the model server ('random' is fine for timing)")
    parser.add_argument("--precision", default=os.environ.get("MODEL_PRECISION", "float32"),
                        help="MODEL_PRECISION for the bare model and the model server (float32, bfloat16)")
    parser.add_argument("--batch-size", type=int, default=int(os.environ.get("BATCH_SIZE", 8)))
    parser.add_argument("--batch-wait-ms", type=int, default=int(os.environ.get("BATCH_WAIT_MS", 0)))
    parser.add_argument("--web", choices=("apache", "gevent"), default="apache",
                        help="web tier: Apache + mod_wsgi (as run.sh), or gevent's development server where "
                             "Apache cannot be installed (bench/gpu.py)")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=32)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16, 64])
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per closed-loop run")
    parser.add_argument("--seconds", type=float, default=6.0, help="seconds per bare-model figure")
    parser.add_argument("--no-flood", dest="flood", action="store_false")
    parser.add_argument("--client-nice", type=int, default=10,
                        help="niceness of the load generator (0: compete with the service as an equal)")
    parser.add_argument("--json", help="write all figures to this file")
    parser.add_argument("--plot", help="write a PNG plot of throughput and latency to this file")
    parser.add_argument("--ceiling-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.ceiling_worker:
        serve_ceilings(settings.load())
        return 0
    results = run_benchmark(args)
    print_report(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    if args.plot:
        plot(results, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A features model served by the whole system: requests per second and p50/p99 latency at 1 and
32 clients, with the bare model's own time next to them, in one run.

The model is the breast-cancer classifier of keras_rest_api.models.examples (30 numeric features
in, the probability of malignant out), trained into a scratch model repository at the start.
The system runs as `run.sh` runs it (Redis, one model server, Apache with mod_wsgi daemons);
stress_test.py's closed loop sends one JSON instance per request (`--body`), and, to show what
batching in one request buys, `{"instances": [...]}` of 32 at one client.

With --with-bentoml, the same model file and statistics are then served by BentoML (a batchable
JSON route, bench/peer_services/bentoml_features.py, installed on first use as bench.peers does)
and measured the same way, in the same run.

Usage:  .venv/bin/python -m bench.features                     # about 2 minutes
        .venv/bin/python -m bench.features --seconds 10 --json bench/results/features.json
        .venv/bin/python -m bench.features --with-bentoml      # BentoML side by side
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from tests.support.harness import VENV_PYTHON, Stack  # noqa: E402
from bench.timing import time_calls  # noqa: E402
from keras_rest_api import stress  # noqa: E402
from keras_rest_api.models import open_repository  # noqa: E402
from keras_rest_api.models.examples import feature_name  # noqa: E402
from bench.peers import BentoML  # noqa: E402

MODEL = "breast_cancer"


def train(repository: Path) -> dict[str, Any]:
    done = subprocess.run([str(VENV_PYTHON), "-m", "keras_rest_api.models.examples", MODEL, str(repository)],
                          check=True, capture_output=True, text=True, timeout=600)
    return json.loads(done.stdout.strip().splitlines()[-1])


def instances(count: int) -> list[dict[str, float]]:
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    names = [feature_name(n) for n in data.feature_names]
    return [dict(zip(names, map(float, row))) for row in data.data[:count]]


def bare_ms(repository: Path, seconds: float) -> dict[str, float]:
    """The bare model's time per call (encoding + predict_on_batch) at batch 1 and 32."""
    model = open_repository({"MODEL_REPOSITORY": str(repository), "BATCH_SIZE": 8, "BATCH_WAIT_MS": 0,
                             "FEATURES_BATCH_SIZE": 256, "MODEL_PRECISION": "float32"}).load(MODEL, "1")
    figures = {}
    for batch in (1, 32):
        rows = np.zeros((batch, len(model.contract.features)))
        times = time_calls(lambda: model.predict(rows), seconds)
        figures[f"batch_{batch}_ms"] = round(1000 * float(np.median(times)), 3)
    return figures


def closed_loop(url: str, body: Path, clients: int, seconds: float) -> dict[str, Any]:
    summary = stress.run_closed_loop(url, body, concurrency=clients, duration=seconds, timeout=30)
    latency = summary["latency_ms"] or {"p50": float("nan"), "p99": float("nan")}
    if summary["failed"]:
        print(f"{url} at {clients} clients: failures {summary['failures']}: {summary['failure_examples']}",
              file=sys.stderr)
    return {"clients": clients, "requests": summary["sent"], "failed": summary["failed"],
            "rps": round(summary["throughput_rps"], 1), "p50_ms": round(latency["p50"], 1),
            "p99_ms": round(latency["p99"], 1)}


class BentoMLFeatures(BentoML):
    """BentoML serving the same model.keras with the same statistics (PEER_LABELS: its config.json)."""

    def command(self, venv: Path, port: int) -> list[str]:
        return [str(venv / "bin" / "bentoml"), "serve", "bench.peer_services.bentoml_features:FeaturesService",
                "--host", "127.0.0.1", "--port", str(port), "--working-dir", str(Path(__file__).parents[1])]


def measure_bentoml(workdir: Path, repository: Path, seconds: float) -> list[dict[str, Any]]:
    folder = repository / MODEL
    body = workdir / "bentoml_one.json"
    body.write_text(json.dumps({"instances": [instances(1)[0]]}))
    peer = BentoMLFeatures(workdir, folder / "1" / "model.keras", folder / "config.json", {})
    url = peer.start()
    try:
        stress.run_closed_loop(url, body, concurrency=4, duration=3, timeout=30)  # warm up
        return [{"system": "BentoML", "body": "one instance", **closed_loop(url, body, clients, seconds)}
                for clients in (1, 32)]
    finally:
        peer.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="seconds of each closed loop")
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    parser.add_argument("--with-bentoml", action="store_true", help="also measure BentoML serving the same model")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench-features-"))
    repository = workdir / "repository"
    results: dict[str, Any] = {"model": MODEL, "training": train(repository)}
    for path in [workdir, repository, *repository.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    one, many = workdir / "one.json", workdir / "instances.json"
    one.write_text(json.dumps(instances(1)[0]))
    many.write_text(json.dumps({"instances": instances(32)}))
    results["bare"] = bare_ms(repository, 3.0)
    stack = Stack(workdir / "stack", {"MODEL_REPOSITORY": str(repository), "MODEL": MODEL, "DEFAULT_MODEL": MODEL,
                                      "KEY_PREFIX": "benchfeatures", "LOG_LEVEL": "WARNING"})
    (workdir / "stack").mkdir()
    url = f"{stack.url}/models/{MODEL}/predict"
    try:
        stack.start()
        stress.run_closed_loop(url, one, concurrency=4, duration=3, timeout=30)  # warm both tiers
        results["runs"] = [{"system": "this project", "body": "one instance",
                            **closed_loop(url, one, clients, args.seconds)} for clients in (1, 32)]
        batched = closed_loop(url, many, 1, args.seconds)
        results["runs"].append({"system": "this project", "body": "32 instances", **batched,
                                "instances_per_s": round(32 * batched["rps"], 1)})
    finally:
        stack.stop()
    if args.with_bentoml:
        results["runs"].extend(measure_bentoml(workdir, repository, args.seconds))
    print(f"{MODEL}: held-out accuracy {results['training']['accuracy']} "
          f"(LogisticRegression {results['training']['baseline_accuracy']}); bare model "
          f"{results['bare']['batch_1_ms']} ms at batch 1, {results['bare']['batch_32_ms']} ms at batch 32")
    print(f"{'system':<13} {'body':<14} {'clients':>7} {'requests':>8} {'failed':>6} {'req/s':>7} {'p50 ms':>7} "
          f"{'p99 ms':>7}")
    for run in results["runs"]:
        print(f"{run['system']:<13} {run['body']:<14} {run['clients']:>7} {run['requests']:>8} {run['failed']:>6} "
              f"{run['rps']:>7} {run['p50_ms']:>7} {run['p99_ms']:>7}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

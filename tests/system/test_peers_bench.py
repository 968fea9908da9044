"""The overhead benchmark's own logic (bench/peers.py) and the GPU script's fail-fast (bench/gpu.py).
The peers themselves run in bench/peers.py only; the per-backend batching the benchmark relies on
(models/backends.py) is tested in tests/unit/models/test_backend_batching.py."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import pytest
import requests

from bench import peers
from tests.support.harness import PROJECT


def response(status: int, body: object) -> requests.Response:
    answer = requests.Response()
    answer.status_code = status
    answer._content = json.dumps(body).encode()
    return answer


TOP5 = {"success": True, "predictions": [{"label": str(i), "probability": 0.2} for i in range(5)]}


def test_an_answer_counts_only_as_a_200_with_five_predictions_in_either_shape():
    assert peers.answered_ok(response(200, TOP5))
    assert peers.answered_ok(response(200, [TOP5]))  # BentoML's batchable API: a batch of one
    assert not peers.answered_ok(response(503, TOP5))
    assert not peers.answered_ok(response(200, [TOP5, TOP5]))
    assert not peers.answered_ok(response(200, {**TOP5, "predictions": TOP5["predictions"][:4]}))
    assert not peers.answered_ok(response(200, {"success": False, "error": "queue full"}))


def test_cpu_of_a_process_tree_counts_its_descendants_only():
    child = subprocess.Popen([sys.executable, "-c",
                              "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass\n"
                              "time.sleep(30)"])
    try:
        time.sleep(1.0)
        own = peers.tree_cpu({"bench": os.getpid()}, lambda root, name, cmdline: "all")["all"]
        alone = peers.tree_cpu({"child": child.pid}, lambda root, name, cmdline: "child")["child"]
        assert 0.25 <= alone <= own
    finally:
        child.kill()
        child.wait(10)


def test_each_process_is_put_in_its_tier():
    assert peers.classify_project("redis", "redis-server", "redis-server 127.0.0.1:1") == "redis"
    assert peers.classify_project("model_server", "python", "python run_model_server.py") == "model server"
    assert peers.classify_project("apache", "apache2", "(wsgi:localhost:8000:0)") == "wsgi daemons"
    assert peers.classify_project("apache", "apache2", "/usr/sbin/apache2 -f httpd.conf") == "apache workers"
    assert peers.classify_ray("ray", "ray::ServeReplica:tiny:TinyDeployment", "") == "serve replicas"
    assert peers.classify_ray("ray", "ray::ProxyActor", "") == "serve proxy"
    assert peers.classify_ray("ray", "raylet", "/x/raylet --node") == "ray core"


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="this machine has nvidia-smi: it is a GPU run")
def test_the_gpu_run_fails_fast_and_says_why_where_there_is_no_gpu():
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "bench.gpu"], cwd=PROJECT, capture_output=True, text=True,
                          timeout=60, env={**os.environ, "PATH": "/usr/bin:/bin"})
    assert done.returncode == 2
    assert "no NVIDIA GPU" in done.stderr and "bench.benchmark" in done.stderr
    assert time.monotonic() - started < 30  # before any install


def test_the_comparison_is_against_the_best_peer_at_each_client_count():
    def row(system: str, clients: int, rps: float, p99: float) -> dict:
        return {"system": system, "clients": clients, "requests_per_s": rps, "p99_ms": p99}

    lines = peers.comparisons([row(peers.Project.name, 32, 300.0, 100.0), row("BentoML", 32, 150.0, 200.0),
                               row("Ray Serve", 32, 100.0, 400.0), row(peers.Project.name, 1, 50.0, 20.0)])
    assert lines == ["- 32 clients: this project 300.0 req/s = 2.00x the best peer (BentoML, 150.0); "
                     "p99 100 ms vs 200 ms"]

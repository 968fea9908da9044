"""Serving overhead side by side: this project, BentoML and Ray Serve, one near-zero model.

The model is bench/tiny_model.py (pooling + a 10-way dense layer, ~0.1 ms per image), so
what each system adds per request (HTTP, multipart, decode, batching, queueing, JSON) is
nearly all that is measured. Every system decodes with this project's `imaging.decode_image`,
batches at most 32 images, and answers the same top-5 JSON; the same client
(a bounded threaded client as in stress_test.py, one keep-alive session per client) sends the same JPEG, on the
same machine, in one run:

  * this project: Redis, one model server, Apache + mod_wsgi daemons (bench/stack.py `Stack`);
  * BentoML: `@bentoml.service` + `@bentoml.api(batchable=True)`, `bentoml serve`;
  * Ray Serve: a deployment with a `@serve.batch` method behind Serve's HTTP proxy.

The peers are bench-only: each is installed on first use into its own virtual environment
(bench/.venv-bentoml, bench/.venv-ray, git-ignored), made from Debian's /usr/bin/python3.
CPU per request is read from /proc for each system's own process tree, split by tier.

Usage:  .venv/bin/python -m bench.peers                 # about 6 minutes
        .venv/bin/python -m bench.peers --seconds 3 --systems project ray   # a quick look
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from tests.support.harness import PROJECT, Stack, free_port, wait_until  # noqa: E402

import requests  # noqa: E402

from bench import cpu, tiny_model  # noqa: E402

# Pinned: the figures in docs/performance.md are for these versions.
PEER_PACKAGES = {
    "bentoml": ["bentoml==1.4.40"],
    "ray": ["ray[serve]==2.60.0", "python-multipart"],
}
# What the peers' model needs, the same Keras backend as the project's model server.
MODEL_PACKAGES = ["keras>=3.0", "tensorflow-cpu>=2.16", "pillow>=10.0", "numpy>=1.26"]
BASE_PYTHON = "/usr/bin/python3"
MAX_BATCH = 32
TIMEOUT = 60.0  # per request, for every system


# ---- peer environments ------------------------------------------------------------------

def peer_venv(name: str) -> Path:
    """The peer's virtual environment, created and filled on first use (minutes, once)."""
    venv = PROJECT / "bench" / f".venv-{name}"
    wanted = " ".join(PEER_PACKAGES[name] + MODEL_PACKAGES)
    stamp = venv / ".bench-packages"
    if stamp.exists() and stamp.read_text() == wanted:
        return venv
    print(f"installing {name} into {venv} (first time: a few minutes)", flush=True)
    if not (venv / "bin" / "python").exists():
        subprocess.run([BASE_PYTHON, "-m", "venv", str(venv)], check=True, timeout=300)
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", *PEER_PACKAGES[name], *MODEL_PACKAGES],
                   check=True, timeout=1800)
    stamp.write_text(wanted)
    return venv


# ---- CPU of a process tree, from /proc --------------------------------------------------

def tree_cpu(roots: dict[str, int], classify: Callable[[str, str, str], str]) -> dict[str, float]:
    """CPU seconds so far of every process under each root pid, by tier (`classify(root, name, cmdline)`)."""
    table = cpu.processes()
    children: dict[int, list[int]] = {}
    for pid, (ppid, *_rest) in table.items():
        children.setdefault(ppid, []).append(pid)
    totals: dict[str, float] = {}
    for root_name, root in roots.items():
        stack = [root]
        while stack:
            pid = stack.pop()
            stack.extend(children.get(pid, []))
            if pid in table:
                _, name, cmdline, seconds = table[pid]
                tier = classify(root_name, name, cmdline)
                totals[tier] = totals.get(tier, 0.0) + seconds
    return totals


def classify_project(root: str, name: str, cmdline: str) -> str:
    if root == "redis":
        return "redis"
    if root.startswith("model_server"):
        return "model server"
    if cmdline.startswith("(wsgi:"):
        return "wsgi daemons"  # mod_wsgi renames its daemon processes "(wsgi:GROUP)"
    if name in ("apache2", "httpd"):
        return "apache workers"
    return "other"


def classify_bentoml(root: str, name: str, cmdline: str) -> str:
    # `bentoml serve` runs a supervisor (circus arbiter) that forks the service's worker processes.
    return "bentoml workers" if "worker-id" in cmdline or "_internal.server" in cmdline else "bentoml supervisor"


def classify_ray(root: str, name: str, cmdline: str) -> str:
    for marker, tier in (("ServeReplica", "serve replicas"), ("ProxyActor", "serve proxy"),
                         ("ServeController", "serve controller")):
        if marker in name or marker in cmdline:
            return tier
    return "ray core"  # gcs_server, raylet, the driver, idle workers


# ---- the three systems ------------------------------------------------------------------

class System:
    """A server under test: `start` returns its /predict URL; `cpu` its CPU seconds by tier."""

    name = ""

    def __init__(self, workdir: Path, model: Path, labels: Path, env: dict[str, str]) -> None:
        self.workdir, self.model, self.labels, self.env = workdir, model, labels, env

    def start(self) -> str:
        raise NotImplementedError

    def cpu(self) -> dict[str, float]:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError


class Project(System):
    name = "this project"

    def start(self) -> str:
        settings = {"MODEL": str(self.model), "MODEL_LABELS": str(self.labels), "MODEL_PREPROCESSING": "unit",
                    "BATCH_SIZE": MAX_BATCH, "BATCH_WAIT_MS": 0, "KEY_PREFIX": "peers", "LOG_LEVEL": "WARNING",
                    "WSGI_PROCESSES": 2, "WSGI_THREADS": 32, "MAX_QUEUE_LENGTH": 2000,
                    "REQUEST_TIMEOUT": TIMEOUT, **self.env}
        self.stack = Stack(self.workdir, settings)
        self.stack.start(timeout=300)
        return f"{self.stack.url}/predict"

    def cpu(self) -> dict[str, float]:
        roots = {name: p.pid for name, p in self.stack.processes.items()}
        roots["redis"] = self.stack.redis.process.pid
        return tree_cpu(roots, classify_project)

    def stop(self) -> None:
        self.stack.stop()


class Peer(System):
    """A peer server as one process group, started from its own virtual environment."""

    venv_name = ""

    def command(self, venv: Path, port: int) -> list[str]:
        raise NotImplementedError

    def ready_url(self, port: int) -> str:
        raise NotImplementedError

    def start(self) -> str:
        venv = peer_venv(self.venv_name)
        port = free_port()
        env = {**os.environ, **self.env, "PEER_MODEL": str(self.model), "PEER_LABELS": str(self.labels),
               "PEER_MAX_BATCH": str(MAX_BATCH), "PEER_WORKERS": "2", "PYTHONPATH": str(PROJECT),
               "TF_CPP_MIN_LOG_LEVEL": "2", "BENTOML_DO_NOT_TRACK": "true", "RAY_USAGE_STATS_ENABLED": "0",
               "VIRTUAL_ENV": str(venv), "PATH": f"{venv / 'bin'}:{os.environ.get('PATH', '')}"}
        self.log_path = self.workdir / f"{self.venv_name}.log"
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(self.command(venv, port), cwd=PROJECT, env=env, stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True)
        wait_until(lambda: self._ready(self.ready_url(port)), 300, f"{self.name} on port {port} (log {self.log_path})")
        return f"http://127.0.0.1:{port}/predict"

    def _ready(self, url: str) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(f"{self.name} exited: {self.log_path.read_text(errors='replace')[-3000:]}")
        try:
            return requests.get(url, timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def stop(self) -> None:
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(60)
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)


class BentoML(Peer):
    name = "BentoML 1.4.40"
    venv_name = "bentoml"

    def command(self, venv: Path, port: int) -> list[str]:
        return [str(venv / "bin" / "bentoml"), "serve", "bench.peer_services.bentoml_service:TinyService",
                "--host", "127.0.0.1", "--port", str(port), "--working-dir", str(PROJECT)]

    def ready_url(self, port: int) -> str:
        return f"http://127.0.0.1:{port}/readyz"

    def cpu(self) -> dict[str, float]:
        return tree_cpu({"bentoml": self.process.pid}, classify_bentoml)


class RayServe(Peer):
    name = "Ray Serve 2.60.0"
    venv_name = "ray"

    def command(self, venv: Path, port: int) -> list[str]:
        return [str(venv / "bin" / "python"), "-m", "bench.peer_services.ray_service", str(port)]

    def ready_url(self, port: int) -> str:
        # The proxy answers its health route before the app is deployed; the app's own route
        # answers 405 to GET only once the deployment is running.
        return f"http://127.0.0.1:{port}/-/routes"

    def _ready(self, url: str) -> bool:
        if not super()._ready(url):
            return False
        try:
            return "/predict" in requests.get(url, timeout=2).text
        except requests.RequestException:
            return False

    def cpu(self) -> dict[str, float]:
        # Ray's workers are forked by the raylet, which the driver started: all one tree.
        return tree_cpu({"ray": self.process.pid}, classify_ray)


SYSTEMS: dict[str, type[System]] = {"project": Project, "bentoml": BentoML, "ray": RayServe}


# ---- measuring ----------------------------------------------------------------------------

def client_cpu() -> float:
    times = os.times()
    return times.user + times.system


def answered_ok(response: requests.Response) -> bool:
    """A 200 with top-5 JSON: a dict as POST /predict answers, or the one-item list a batchable
    BentoML API answers (each request is a batch of one there)."""
    if response.status_code != 200:
        return False
    try:
        body = response.json()
    except ValueError:
        return False
    if isinstance(body, list) and len(body) == 1:
        body = body[0]
    return (isinstance(body, dict) and body.get("success") is True
            and isinstance(body.get("predictions"), list) and len(body["predictions"]) == 5)


def closed_loop(url: str, image: bytes, concurrency: int, seconds: float) -> dict[str, Any]:
    """`concurrency` clients, each with one keep-alive session, sending back to back for `seconds`.

    The same client as stress_test.run_closed_loop (requests, one session per thread), with an
    answer check that accepts each system's shape of the same top-5 JSON.
    """
    import threading

    from keras_rest_api.stress import percentile

    lock = threading.Lock()
    latencies: list[float] = []
    failures: dict[str, int] = {}
    examples: dict[str, str] = {}
    ok = [0]
    first_last = [None, None]
    end_at = time.perf_counter() + seconds

    def worker() -> None:
        with requests.Session() as session:
            while time.perf_counter() < end_at:
                start = time.perf_counter()
                with lock:
                    first_last[0] = first_last[0] or start
                kind, detail = None, ""
                try:
                    response = session.post(url, files={"image": ("chelsea.jpg", image, "image/jpeg")},
                                            timeout=TIMEOUT)
                    if not answered_ok(response):
                        kind, detail = f"HTTP {response.status_code}", response.text[:300]
                except requests.RequestException as exc:
                    kind, detail = type(exc).__name__, str(exc)[:300]
                done = time.perf_counter()
                with lock:
                    first_last[1] = done
                    if kind is None:
                        ok[0] += 1
                        latencies.append(1000 * (done - start))
                    else:
                        failures[kind] = failures.get(kind, 0) + 1
                        examples.setdefault(kind, detail)

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:  # every request ends within TIMEOUT of the phase's end
        thread.join(seconds + TIMEOUT + 5)
    stuck = sum(thread.is_alive() for thread in threads)
    if stuck:
        failures["no answer"] = failures.get("no answer", 0) + stuck
    wall = (first_last[1] - first_last[0]) if first_last[0] and first_last[1] else 0.0
    return {"ok": ok[0], "failed": sum(failures.values()), "failures": failures, "failure_examples": examples,
            "requests_per_s": ok[0] / wall if wall > 0 else 0.0,
            "p50_ms": percentile(latencies, 50) if latencies else 0.0,
            "p99_ms": percentile(latencies, 99) if latencies else 0.0}


def run_system(system: System, image: Path, clients: list[int], seconds: float) -> list[dict[str, Any]]:
    print(f"\n{system.name}: starting", flush=True)
    url = system.start()
    data = image.read_bytes()
    rows = []
    try:
        # Warm connections, caches, thread pools and the model's traced batch shapes.
        closed_loop(url, data, max(clients), min(3.0, seconds))
        for concurrency in clients:
            cpu_before, client_before = system.cpu(), client_cpu()
            summary = closed_loop(url, data, concurrency, seconds)
            cpu_after, client_after = system.cpu(), client_cpu()
            ok = max(summary["ok"], 1)
            tiers = {tier: 1000 * max(0.0, cpu_after.get(tier, 0.0) - cpu_before.get(tier, 0.0)) / ok
                     for tier in sorted(set(cpu_before) | set(cpu_after))}
            row = {"system": system.name, "clients": concurrency, "ok": summary["ok"], "errors": summary["failed"],
                   "failures": summary["failures"], "failure_examples": summary["failure_examples"],
                   "requests_per_s": summary["requests_per_s"], "p50_ms": summary["p50_ms"],
                   "p99_ms": summary["p99_ms"], "cpu_ms_per_request": sum(tiers.values()),
                   "cpu_ms_per_request_by_tier": tiers,
                   "client_cpu_ms_per_request": 1000 * (client_after - client_before) / ok}
            rows.append(row)
            print(format_row(row), flush=True)
    finally:
        system.stop()
    return rows


def format_row(row: dict[str, Any]) -> str:
    tiers = ", ".join(f"{tier} {ms:.1f}" for tier, ms in row["cpu_ms_per_request_by_tier"].items() if ms >= 0.05)
    return (f"  {row['system']:<18}{row['clients']:>4} clients {row['requests_per_s']:8.1f} req/s  "
            f"p50 {row['p50_ms']:7.1f}  p99 {row['p99_ms']:7.1f} ms  errors {row['errors']:>3}  "
            f"CPU {row['cpu_ms_per_request']:5.1f} ms/req ({tiers})")


def markdown(results: dict[str, Any]) -> str:
    lines = [f"Tiny model (pool + dense, 224x224x3), max batch {MAX_BATCH}, {results['seconds']:.0f} s per phase, "
             f"{results['cpu_cores']} CPU cores, {results['date']}.", "",
             "| system | clients | req/s | p50 ms | p99 ms | errors | CPU ms/req (server) | CPU ms/req by tier | client CPU ms/req |",
             "|---|---:|---:|---:|---:|---:|---:|---|---:|"]
    for row in results["rows"]:
        tiers = ", ".join(f"{tier} {ms:.1f}" for tier, ms in row["cpu_ms_per_request_by_tier"].items() if ms >= 0.05)
        lines.append(f"| {row['system']} | {row['clients']} | {row['requests_per_s']:.1f} | {row['p50_ms']:.1f} | "
                     f"{row['p99_ms']:.1f} | {row['errors']} | {row['cpu_ms_per_request']:.1f} | {tiers} | "
                     f"{row['client_cpu_ms_per_request']:.1f} |")
    lines += ["", *comparisons(results["rows"])]
    return "\n".join(lines) + "\n"


def comparisons(rows: list[dict[str, Any]]) -> list[str]:
    """Per client count: this project's requests/s and p99 against the best peer's (issue 14's target:
    at least twice the requests/s of the best peer at 32 clients, with a lower p99)."""
    out = []
    for clients in sorted({row["clients"] for row in rows}):
        ours = [r for r in rows if r["clients"] == clients and r["system"] == Project.name]
        theirs = [r for r in rows if r["clients"] == clients and r["system"] != Project.name]
        if not ours or not theirs:
            continue
        best = max(theirs, key=lambda r: r["requests_per_s"])
        ratio = ours[0]["requests_per_s"] / best["requests_per_s"] if best["requests_per_s"] else float("inf")
        out.append(f"- {clients} clients: this project {ours[0]['requests_per_s']:.1f} req/s = {ratio:.2f}x the best "
                   f"peer ({best['system']}, {best['requests_per_s']:.1f}); p99 {ours[0]['p99_ms']:.0f} ms vs "
                   f"{best['p99_ms']:.0f} ms")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="seconds per load phase (default 20)")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--systems", nargs="+", choices=list(SYSTEMS), default=list(SYSTEMS))
    parser.add_argument("--json", default=str(PROJECT / "docs" / "peers.json"))
    parser.add_argument("--markdown", default=str(PROJECT / "docs" / "peers.md"))
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="a setting for this project's stack (e.g. WSGI_THREADS=8), for A/B runs; repeatable")
    args = parser.parse_args(argv)
    if args.seconds <= 0 or min(args.clients) < 1:
        parser.error("--seconds and --clients must be positive")

    from bench.benchmark import sample_image

    workdir = Path(tempfile.mkdtemp(prefix="kras-peers-"))
    image = sample_image(workdir)
    print(f"tiny model -> {workdir} ({os.cpu_count()} CPU cores, {args.seconds:.0f} s per phase)", flush=True)
    model, labels = tiny_model.save(workdir / "model")
    # Every system uses the same Keras backend, the project's default unless KERAS_BACKEND says otherwise.
    env = {"KERAS_BACKEND": os.environ.get("KERAS_BACKEND", "tensorflow")}
    if any("=" not in item for item in args.set):
        parser.error("--set takes NAME=VALUE")
    overrides = dict(item.split("=", 1) for item in args.set)
    results: dict[str, Any] = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "seconds": args.seconds,
                               "cpu_cores": os.cpu_count(), "max_batch": MAX_BATCH, "rows": [],
                               "keras_backend": env["KERAS_BACKEND"]}
    for key in args.systems:
        system = SYSTEMS[key](workdir, model, labels, {**env, **overrides} if key == "project" else env)
        try:
            results["rows"] += run_system(system, image, args.clients, args.seconds)
        except Exception as exc:  # one peer failing to start must not lose the others' figures
            print(f"  {system.name} failed: {exc}", flush=True)
            results.setdefault("failed_systems", {})[system.name] = str(exc)[:2000]
    table = markdown(results)
    print("\n" + table)
    Path(args.json).write_text(json.dumps(results, indent=2))
    Path(args.markdown).write_text(table)
    print(f"wrote {args.json} and {args.markdown}; logs in {workdir}")
    return 1 if results.get("failed_systems") else 0


if __name__ == "__main__":
    sys.exit(main())

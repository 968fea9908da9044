"""Page faults, CPU and resident memory of each web daemon (and the model server) per request.

Starts this project's stack with the tiny model of bench/peers.py, warms it up, then runs a
32-client closed loop and reads each process's minor page faults and CPU time from /proc
before and after. Settings to compare come as NAME=VALUE arguments, e.g.

    .venv/bin/python bench/daemon_faults.py MALLOC_KEEP_BYTES=0
    .venv/bin/python bench/daemon_faults.py                      # the defaults
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from bench import peers, tiny_model  # noqa: E402
from bench.benchmark import sample_image  # noqa: E402


def faults_and_cpu(pid: int) -> tuple[int, float]:
    """(minor faults, CPU seconds) of one process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[7]), (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main(argv: list[str]) -> int:
    overrides = dict(arg.split("=", 1) for arg in argv)
    workdir = Path(tempfile.mkdtemp(prefix="kras-faults-"))
    image = sample_image(workdir).read_bytes()
    model, labels = tiny_model.save(workdir / "model")
    project = peers.Project(workdir, model, labels,
                            {"KERAS_BACKEND": os.environ.get("KERAS_BACKEND", "tensorflow"), **overrides})
    url = project.start()
    try:
        peers.closed_loop(url, image, 32, 3)
        listing = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True, check=True).stdout
        port = url.split("://", 1)[1].split("/", 1)[0].rsplit(":", 1)[1]
        # This stack's daemons only: mod_wsgi names them (wsgi:HOST:PORT:UID).
        daemons = [int(line.split()[0]) for line in listing.splitlines() if f"(wsgi:127.0.0.1:{port}:" in line]
        processes = {f"wsgi daemon {pid}": pid for pid in daemons}
        processes["model server"] = project.stack.processes["model_server"].pid
        before = {name: faults_and_cpu(pid) for name, pid in processes.items()}
        load = peers.closed_loop(url, image, 32, 10)
        answered = max(1, load["ok"])
        print(f"{overrides or 'defaults'}: {load['requests_per_s']:.1f} req/s, {load['failed']} failed")
        for name, pid in processes.items():
            faults, cpu = (after - first for after, first in zip(faults_and_cpu(pid), before[name]))
            print(f"  {name:22s} {faults / answered:7.1f} faults/req  {cpu / answered * 1000:5.2f} ms CPU/req  "
                  f"{rss_mb(pid):6.0f} MB resident")
    finally:
        project.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

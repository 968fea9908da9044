"""Page faults, CPU and resident memory of each web daemon (and the model server) per request.

Starts this project's stack with the tiny model of bench/peers.py, warms it up, then runs a
32-client closed loop and reads each process's minor page faults and CPU time from /proc
before and after. Settings to compare come as NAME=VALUE arguments, e.g.

    .venv/bin/python -m bench.daemon_faults MALLOC_KEEP_BYTES=0
    .venv/bin/python -m bench.daemon_faults                      # the defaults
"""
from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from urllib.parse import urlsplit


from bench import cpu, peers, tiny_model  # noqa: E402
from bench.benchmark import sample_image  # noqa: E402


def faults_and_cpu(pids: list[int]) -> dict[int, tuple[int, float]]:
    """pid -> (minor page faults, CPU seconds) so far, for each of `pids`."""
    figures = {}
    for pid in pids:
        _, fields = cpu.read_stat(pid)
        figures[pid] = (int(fields[7]), cpu.cpu_seconds(fields))
    return figures


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main(argv: list[str]) -> int:
    if any("=" not in arg for arg in argv):
        print(f"usage: {sys.argv[0]} [NAME=VALUE ...]  (settings of the stack, e.g. MALLOC_KEEP_BYTES=0)")
        return 2
    overrides = dict(arg.split("=", 1) for arg in argv)
    workdir = Path(tempfile.mkdtemp(prefix="kras-faults-"))
    image = sample_image(workdir).read_bytes()
    model, labels = tiny_model.save(workdir / "model")
    project = peers.Project(workdir, model, labels,
                            {"KERAS_BACKEND": os.environ.get("KERAS_BACKEND", "tensorflow"), **overrides})
    url = project.start()
    try:
        peers.closed_loop(url, image, 32, 3)
        port = urlsplit(url).port
        # This stack's daemons only: mod_wsgi names them (wsgi:HOST:PORT:UID).
        processes = {f"wsgi daemon {pid}": pid for pid, (_, _, cmdline, _) in cpu.processes().items()
                     if cmdline.startswith(f"(wsgi:127.0.0.1:{port}:")}
        processes["model server"] = project.stack.processes["model_server"].pid
        before = faults_and_cpu(list(processes.values()))
        load = peers.closed_loop(url, image, 32, 10)
        after = faults_and_cpu(list(processes.values()))
        answered = max(1, load["ok"])
        print(f"{overrides or 'defaults'}: {load['requests_per_s']:.1f} req/s, {load['failed']} failed")
        for name, pid in processes.items():
            faults, seconds = after[pid][0] - before[pid][0], after[pid][1] - before[pid][1]
            print(f"  {name:22s} {faults / answered:7.1f} faults/req  {seconds / answered * 1000:5.2f} ms CPU/req  "
                  f"{rss_mb(pid):6.0f} MB resident")
    finally:
        project.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Where the CPU goes: CPU seconds of each part of the running system, from /proc.

On a machine where the model and the serving stack share the same cores, every millisecond
the web tier, Redis or the load generator spends is taken from the model. Reading each
process's CPU time before and after a phase says how much each part cost per request.
"""
from __future__ import annotations

import os
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")

# Parts, in the order the benchmark prints them.
PARTS = ("model server", "web daemons", "apache workers", "redis", "load generator", "other")


def classify(pid: int, name: str, cmdline: str) -> str:
    """Which part of the system a process is."""
    if pid == os.getpid():
        return "load generator"
    if "run_model_server.py" in cmdline:
        return "model server"
    if "run_web_server.py" in cmdline:
        return "web daemons"  # the gevent development server (bench/gevent_stack.py)
    if cmdline.startswith("(wsgi:"):
        return "web daemons"  # mod_wsgi renames its daemon processes "(wsgi:GROUP)"
    if name in ("apache2", "httpd"):
        return "apache workers"
    if name == "redis-server":
        return "redis"
    return "other"


def read_stat(pid: int | str) -> tuple[str, list[str]]:
    """A process's name and the fields of /proc/<pid>/stat after it (fields[7] minor faults,
    fields[11] and [12] user and system ticks). The name is in parentheses and may itself hold
    spaces or parentheses."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.index("(") + 1:stat.rindex(")")], stat[stat.rindex(")") + 2:].split()


def cpu_seconds(fields: list[str]) -> float:
    """User + system CPU seconds from `read_stat`'s fields."""
    return (int(fields[11]) + int(fields[12])) / _TICKS


def processes() -> dict[int, tuple[int, str, str, float]]:
    """pid -> (parent pid, name, command line, CPU seconds so far) for every process readable now."""
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            name, fields = read_stat(entry.name)
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:  # the process ended while we looked
            continue
        table[int(entry.name)] = (int(fields[1]), name, cmdline, cpu_seconds(fields))
    return table


def snapshot() -> dict[str, float]:
    """CPU seconds (user + system) used so far by each part, over every process on the machine."""
    totals = dict.fromkeys(PARTS, 0.0)
    for pid, (_, name, cmdline, seconds) in processes().items():
        totals[classify(pid, name, cmdline)] += seconds
    return totals


def used_between(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """CPU seconds each part used between two snapshots (processes that ended are not counted)."""
    return {part: max(0.0, after[part] - before[part]) for part in PARTS}

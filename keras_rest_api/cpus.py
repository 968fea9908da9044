"""How many CPUs this process may use: its affinity, capped by its cgroup's CPU quota.

A container started with `--cpus 2` on a 16-core host sees 16 CPUs in its affinity mask but is
throttled to 2 CPUs' worth of time by the CFS quota, so both are read. The quota is read from
cgroup v2 (`cpu.max`) or cgroup v1 (`cpu.cfs_quota_us` / `cpu.cfs_period_us`), for this
process's own cgroup and each ancestor (the tightest wins), so a limit set on a parent slice
(a Kubernetes pod, a systemd slice) counts too. Only the standard library: the settings read it.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Callable

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_SELF_CGROUP = Path("/proc/self/cgroup")


def parse_cpu_max(text: str) -> float | None:
    """CPUs allowed by a cgroup v2 `cpu.max` ("QUOTA PERIOD", QUOTA "max" for no limit)."""
    fields = text.split()
    if len(fields) != 2 or fields[0] == "max":
        return None
    return _ratio(fields[0], fields[1])


def parse_cfs(quota_text: str, period_text: str) -> float | None:
    """CPUs allowed by cgroup v1's cpu.cfs_quota_us and cpu.cfs_period_us (quota -1: no limit)."""
    return _ratio(quota_text.strip(), period_text.strip())


def _ratio(quota: str, period: str) -> float | None:
    try:
        quota_us, period_us = int(quota), int(period)
    except ValueError:
        return None  # unreadable: better no limit than a wrong one
    if quota_us <= 0 or period_us <= 0:
        return None
    return quota_us / period_us


def cgroup_paths(proc_self_cgroup: str) -> dict[str, str]:
    """This process's cgroup per controller from /proc/self/cgroup ("ID:CONTROLLERS:PATH" lines):
    "" for the unified (v2) hierarchy, each v1 controller name (cpu, cpuacct, ...) otherwise."""
    paths: dict[str, str] = {}
    for line in proc_self_cgroup.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if controllers == "":
            paths[""] = path
        for controller in controllers.split(","):
            if controller:
                paths[controller] = path
    return paths


def _ancestors(base: Path, path: str) -> list[Path]:
    """base/path and each parent up to base itself. In a container with its own cgroup namespace
    the path is "/"; in one without, the path is the host's, which does not exist under the
    container's mount, and base itself is the container's cgroup."""
    folder = base.joinpath(*[part for part in path.split("/") if part])
    folders = [folder]
    while folder != base:
        folder = folder.parent
        folders.append(folder)
    return folders


def _limits(folders: list[Path], read: Callable[[Path], float | None]) -> list[float]:
    limits = []
    for folder in folders:
        try:
            limit = read(folder)
        except OSError:  # no such file: no limit at this level
            continue
        if limit is not None:
            limits.append(limit)
    return limits


def cgroup_cpu_limit(root: Path = CGROUP_ROOT, proc_self_cgroup: Path = PROC_SELF_CGROUP) -> float | None:
    """The tightest CPU quota on this process's cgroup or its ancestors, in CPUs; None if none."""
    try:
        paths = cgroup_paths(proc_self_cgroup.read_text())
    except OSError:
        paths = {}
    limits: list[float] = []
    if "" in paths:  # cgroup v2 (cpu.max lives in the unified hierarchy's folders)
        for base in (root, root / "unified"):
            limits += _limits(_ancestors(base, paths[""]),
                              lambda folder: parse_cpu_max((folder / "cpu.max").read_text()))
    if "cpu" in paths:  # cgroup v1: the cpu controller, mounted alone or with cpuacct
        for name in ("cpu", "cpu,cpuacct", "cpuacct,cpu"):
            limits += _limits(_ancestors(root / name, paths["cpu"]), lambda folder: parse_cfs(
                (folder / "cpu.cfs_quota_us").read_text(), (folder / "cpu.cfs_period_us").read_text()))
    return min(limits) if limits else None


def usable_cpus(root: Path = CGROUP_ROOT, proc_self_cgroup: Path = PROC_SELF_CGROUP) -> int:
    """Whole CPUs this process can keep busy: its affinity, capped by the cgroup quota rounded
    down (a process per fraction of a CPU would only be throttled), and at least 1."""
    try:
        affinity = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        affinity = os.cpu_count() or 1
    quota = cgroup_cpu_limit(root, proc_self_cgroup)
    if quota is None:
        return max(1, affinity)
    return max(1, min(affinity, math.floor(quota)))

"""The web tier sizes itself: CPUs from the affinity mask, capped by the cgroup's CPU quota.

Each test lays out a cgroup tree as the kernel mounts it (v2 unified, v1 per controller, a
container's own namespace) in a temporary folder and reads it as /sys/fs/cgroup.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from keras_rest_api import settings
from keras_rest_api.cpus import cgroup_cpu_limit, cgroup_paths, parse_cfs, parse_cpu_max, usable_cpus

AFFINITY = len(os.sched_getaffinity(0))


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def proc_cgroup(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "proc-self-cgroup"
    path.write_text(text)
    return path


@pytest.mark.parametrize("text, cpus", [
    ("max 100000\n", None),
    ("200000 100000\n", 2.0),
    ("150000 100000", 1.5),
    ("50000 100000", 0.5),
    ("", None),
    ("garbage 100000", None),
    ("100000 0", None),
])
def test_cpu_max_is_quota_over_period(text, cpus):
    assert parse_cpu_max(text) == cpus


@pytest.mark.parametrize("quota, period, cpus", [
    ("-1\n", "100000\n", None),
    ("400000\n", "100000\n", 4.0),
    ("25000", "50000", 0.5),
])
def test_cfs_quota_over_period_and_minus_one_is_unlimited(quota, period, cpus):
    assert parse_cfs(quota, period) == cpus


def test_proc_self_cgroup_names_the_unified_and_each_v1_controller():
    paths = cgroup_paths("12:cpu,cpuacct:/docker/abc\n4:memory:/docker/abc\n0::/system.slice/x.service\n")
    assert paths == {"cpu": "/docker/abc", "cpuacct": "/docker/abc", "memory": "/docker/abc",
                     "": "/system.slice/x.service"}


def test_v2_quota_of_own_cgroup(tmp_path):
    root = tmp_path / "cgroup"
    write(root / "cpu.max", "max 100000\n")  # the root has none
    write(root / "kubepods" / "pod1" / "cpu.max", "300000 100000\n")
    assert cgroup_cpu_limit(root, proc_cgroup(tmp_path, "0::/kubepods/pod1\n")) == 3.0


def test_v2_tightest_of_the_ancestors_wins(tmp_path):
    root = tmp_path / "cgroup"
    write(root / "slice" / "cpu.max", "100000 100000\n")
    write(root / "slice" / "app" / "cpu.max", "max 100000\n")
    assert cgroup_cpu_limit(root, proc_cgroup(tmp_path, "0::/slice/app\n")) == 1.0


def test_v2_in_a_container_namespace_reads_the_mount_root(tmp_path):
    root = tmp_path / "cgroup"
    write(root / "cpu.max", "250000 100000\n")
    assert cgroup_cpu_limit(root, proc_cgroup(tmp_path, "0::/\n")) == 2.5


def test_v1_cfs_quota_under_the_cpu_controller(tmp_path):
    root = tmp_path / "cgroup"
    write(root / "cpu,cpuacct" / "cpu.cfs_quota_us", "-1\n")
    write(root / "cpu,cpuacct" / "cpu.cfs_period_us", "100000\n")
    write(root / "cpu,cpuacct" / "docker" / "abc" / "cpu.cfs_quota_us", "150000\n")
    write(root / "cpu,cpuacct" / "docker" / "abc" / "cpu.cfs_period_us", "100000\n")
    assert cgroup_cpu_limit(root, proc_cgroup(tmp_path, "3:cpu,cpuacct:/docker/abc\n")) == 1.5


def test_v1_container_without_cgroup_namespace_sees_its_own_cgroup_at_the_mount(tmp_path):
    # /proc/self/cgroup names the host's path, which the container's mount does not hold.
    root = tmp_path / "cgroup"
    write(root / "cpu" / "cpu.cfs_quota_us", "200000\n")
    write(root / "cpu" / "cpu.cfs_period_us", "100000\n")
    assert cgroup_cpu_limit(root, proc_cgroup(tmp_path, "2:cpu:/machine.slice/libpod-abc.scope\n")) == 2.0


def test_hybrid_layout_reads_v2_under_unified(tmp_path):
    root = tmp_path / "cgroup"
    write(root / "unified" / "app" / "cpu.max", "100000 100000\n")
    write(root / "cpu" / "cpu.cfs_quota_us", "-1\n")
    write(root / "cpu" / "cpu.cfs_period_us", "100000\n")
    assert cgroup_cpu_limit(root, proc_cgroup(tmp_path, "1:cpu:/\n0::/app\n")) == 1.0


def test_no_cgroup_files_is_no_limit(tmp_path):
    assert cgroup_cpu_limit(tmp_path / "none", tmp_path / "missing") is None


def test_usable_cpus_is_affinity_capped_by_the_quota_rounded_down(tmp_path):
    root = tmp_path / "cgroup"
    write(root / "cpu.max", "150000 100000\n")
    assert usable_cpus(root, proc_cgroup(tmp_path, "0::/\n")) == min(AFFINITY, 1)
    write(root / "cpu.max", "10000000 100000\n")  # 100 CPUs: the affinity is the cap
    assert usable_cpus(root, proc_cgroup(tmp_path, "0::/\n")) == AFFINITY


def test_a_fraction_of_a_cpu_still_gets_one_process(tmp_path):
    root = tmp_path / "cgroup"
    write(root / "cpu.max", "20000 100000\n")
    assert usable_cpus(root, proc_cgroup(tmp_path, "0::/\n")) == 1


def test_usable_cpus_follows_the_affinity_mask():
    if not hasattr(os, "sched_setaffinity"):
        pytest.skip("no sched_setaffinity on this platform")
    # In a child, so this test process keeps its own mask.
    pid = os.fork()
    if pid == 0:
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
        os._exit(0 if usable_cpus() == 1 else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_settings_default_processes_to_the_usable_cpus_and_clients_to_match():
    values = settings.load({})
    assert values["WSGI_PROCESSES"] == usable_cpus()
    assert values["APACHE_MAX_CLIENTS"] >= 2 * values["WSGI_PROCESSES"] * values["WSGI_THREADS"]
    many = settings.load({"WSGI_PROCESSES": "16", "WSGI_THREADS": "32"})
    assert many["APACHE_MAX_CLIENTS"] == 1024


def test_explicit_settings_are_kept():
    values = settings.load({"WSGI_PROCESSES": "3", "APACHE_MAX_CLIENTS": "100"})
    assert (values["WSGI_PROCESSES"], values["APACHE_MAX_CLIENTS"]) == (3, 100)


@pytest.mark.parametrize("name, raw", [("WSGI_PROCESSES", "-1"), ("WSGI_THREADS", "0"), ("APACHE_MAX_CLIENTS", "-5")])
def test_negative_or_zero_threads_fail_at_start_naming_the_setting(name, raw):
    with pytest.raises(ValueError, match=name):
        settings.load({name: raw})

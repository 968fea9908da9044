"""Several "machines" on one: Linux network namespaces joined by veth pairs to a private bridge.

    with Network() as net:
        redis_host = net.add_host("redis", "10.203.0.2")
        redis_host.spawn("redis", ["redis-server", "--bind", redis_host.address], env, log_dir)
        net.add_host("client", "10.203.0.9").run([...], env)

Layout: a "switch" namespace holds a bridge; every host is a namespace of its own whose only
interface (besides its loopback) is `eth0`, one end of a veth pair whose other end is a port
of that bridge. Nothing is added to the root namespace (no interface, address or route), so
the 10.203.0.0/24 addresses exist only inside the namespaces made here, and deleting the
namespaces deletes the bridge and every veth with them. Namespace names carry the pid and a
random tag, so a leftover from a crashed run cannot collide with a new one.

Needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN) and iproute2's `ip`. `ip netns exec` keeps the
environment of its caller; processes get theirs passed explicitly anyway.
"""
from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Mapping, Sequence

from tests.support.harness import PROJECT

PREFIX = "kras"  # every namespace made here is named kras-<pid>-<tag>-<name>


class NetnsUnavailable(RuntimeError):
    """This machine cannot make network namespaces (not root, no iproute2, no privilege)."""


def unavailable_reason() -> str | None:
    """Why network namespaces cannot be used here, or None when they (probably) can."""
    if os.geteuid() != 0:
        return "network namespaces need root (ip netns add); run the multihost test as root"
    if shutil.which("ip") is None:
        return "iproute2's `ip` is not installed (apt-get install iproute2)"
    return None


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run `ip ARGS` (bounded); on failure raise with its stderr."""
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: exit {result.returncode}: {result.stderr.strip()}")
    return result


def namespaces() -> list[str]:
    """Names of the network namespaces that exist now (`ip netns list`)."""
    output = ip("netns", "list", check=False).stdout
    return [line.split()[0] for line in output.splitlines() if line.strip()]


class Host:
    """One namespace with one address on the network: a machine."""

    def __init__(self, network: Network, name: str, namespace: str, address: str) -> None:
        self.network = network
        self.name = name
        self.namespace = namespace
        self.address = address

    def command(self, argv: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self.namespace, *argv]

    def spawn(self, name: str, argv: Sequence[str], env: Mapping[str, str], log_dir: Path,
              cwd: Path = PROJECT) -> subprocess.Popen:
        """Start a long-running process on this host, its output in log_dir/<name>.log; the
        network stops it (its whole process group) when it is torn down."""
        log = open(log_dir / f"{name}.log", "ab")
        try:
            process = subprocess.Popen(self.command(argv), cwd=cwd, env=dict(env), stdout=log,
                                       stderr=subprocess.STDOUT, start_new_session=True)
        finally:
            log.close()
        self.network.processes[name] = process
        self.network.logs[name] = log_dir / f"{name}.log"
        return process

    def run(self, argv: Sequence[str], env: Mapping[str, str], timeout: float,
            cwd: Path = PROJECT) -> subprocess.CompletedProcess:
        """Run a command on this host to completion (bounded by `timeout`), output captured."""
        return subprocess.run(self.command(argv), cwd=cwd, env=dict(env), capture_output=True,
                              text=True, timeout=timeout)


class Network:
    """A bridge in a namespace of its own, and hosts (namespaces) plugged into it."""

    def __init__(self, prefix_length: int = 24) -> None:
        self.tag = f"{PREFIX}-{os.getpid()}-{secrets.token_hex(2)}"
        self.prefix_length = prefix_length
        self.switch = f"{self.tag}-sw"
        self.hosts: dict[str, Host] = {}
        self.processes: dict[str, subprocess.Popen] = {}
        self.logs: dict[str, Path] = {}
        self._made: list[str] = []

    def __enter__(self) -> Network:
        try:
            self.create()
        except BaseException:
            self.destroy()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.destroy()

    def create(self) -> None:
        reason = unavailable_reason()
        if reason:
            raise NetnsUnavailable(reason)
        self._add_namespace(self.switch)
        ip("-n", self.switch, "link", "set", "lo", "up")
        ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
        ip("-n", self.switch, "link", "set", "br0", "up")

    def _add_namespace(self, name: str) -> None:
        result = ip("netns", "add", name, check=False)
        if result.returncode != 0:
            message = f"ip netns add {name}: {result.stderr.strip()}"
            if "permitted" in result.stderr or "denied" in result.stderr:
                raise NetnsUnavailable(message + " (needs CAP_SYS_ADMIN; in a container, --privileged)")
            raise RuntimeError(message)
        self._made.append(name)

    def add_host(self, name: str, address: str) -> Host:
        """A new namespace `name` with `eth0` at `address` on the bridge and its loopback up."""
        namespace = f"{self.tag}-{name}"
        port = f"p{len(self.hosts)}"  # the bridge-side end, named inside the switch namespace only
        self._add_namespace(namespace)
        ip("-n", self.switch, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", namespace)
        ip("-n", self.switch, "link", "set", port, "master", "br0", "up")
        ip("-n", namespace, "addr", "add", f"{address}/{self.prefix_length}", "dev", "eth0")
        ip("-n", namespace, "link", "set", "eth0", "up")
        ip("-n", namespace, "link", "set", "lo", "up")
        host = Host(self, name, namespace, address)
        self.hosts[name] = host
        return host

    def log(self, name: str, tail: int = 3000) -> str:
        path = self.logs.get(name)
        if path is None or not path.exists():
            return ""
        return path.read_text(errors="replace")[-tail:]

    def logs_tail(self, tail: int = 1500) -> str:
        """The end of every process's log, for an assertion message."""
        return "\n".join(f"--- {name} ---\n{self.log(name, tail)}" for name in self.logs)

    def destroy(self) -> None:
        """Stop every process, then delete every namespace (and with them the veths and the
        bridge). Tries everything even when a step fails; raises the first failure at the end."""
        errors: list[str] = []
        for process in self.processes.values():
            for signum in (signal.SIGCONT, signal.SIGTERM):
                try:
                    os.killpg(process.pid, signum)
                except ProcessLookupError:
                    break
        for name, process in self.processes.items():
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                errors.append(f"{name} ignored SIGTERM for 20 s; killed")
                try:
                    os.killpg(process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                process.wait(5)
        # Hosts first, the switch last; anything still running inside a namespace would keep it
        # alive after `ip netns del` (unnamed), so kill stragglers first.
        for namespace in reversed(self._made):
            try:
                self._kill_stragglers(namespace)
                ip("netns", "del", namespace)
            except Exception as exc:  # keep going: the other namespaces must go too
                errors.append(str(exc))
        self._made.clear()
        if errors:
            raise RuntimeError("network teardown: " + "; ".join(errors))

    @staticmethod
    def _kill_stragglers(namespace: str) -> None:
        for _ in range(3):
            pids = [int(p) for p in ip("netns", "pids", namespace, check=False).stdout.split()]
            if not pids:
                return
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.2)

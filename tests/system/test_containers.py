"""The containers, built and run for real with podman: the image (deploy/Dockerfile), the compose
stack (deploy/docker-compose.yml, with podman-compose) and the Kubernetes manifests
(deploy/kubernetes/, validated offline and played with `podman kube play`).

The image is built on a Debian base made here without a registry (scripts/container-base.sh,
kept by name between runs, as is the built image's layer cache). Every container, pod, volume,
network and secret a test makes is removed by its fixture's finalizer, even when it fails, and
the tests check that nothing is left. Run alone with `./test.sh -m containers`.
"""
from __future__ import annotations

import base64
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest
import requests
import yaml

from keras_rest_api import settings as settings_module
from keras_rest_api import stress
from tests.support.harness import PROJECT, free_port, wait_until

pytestmark = pytest.mark.containers

BASE_IMAGE = "localhost/debian:bookworm"
IMAGE = "localhost/keras-rest-api:test"
CONTAINERS_CONF = PROJECT / "deploy" / "container" / "containers.conf"
COMPOSE_FILE = PROJECT / "deploy" / "docker-compose.yml"
KUBERNETES = PROJECT / "deploy" / "kubernetes"
SAMPLE = PROJECT / "samples" / "chelsea.jpg"
CATS = {"tabby", "tiger_cat", "Egyptian_cat"}
# Debian packages the tests need; installed here (as root) when missing.
PACKAGES = ("podman", "runc", "debootstrap")
LOST = ("ConnectionError", "Timeout", stress.NO_ANSWER)


def podman_env() -> dict[str, str]:
    return {**os.environ, "CONTAINERS_CONF": str(CONTAINERS_CONF)}


def podman(*args: str, check: bool = True, timeout: float = 120, **kwargs: Any) -> subprocess.CompletedProcess:
    return subprocess.run(["podman", *args], env=kwargs.pop("env", podman_env()), capture_output=True, text=True,
                          timeout=timeout, check=check, **kwargs)


def install_missing_packages() -> str | None:
    """Install podman, runc and debootstrap if missing; why podman cannot run, or None."""
    missing = [p for p in PACKAGES if shutil.which(p) is None]
    if missing:
        if os.geteuid() != 0 or shutil.which("apt-get") is None:
            return f"{', '.join(missing)} missing and cannot be installed here (needs root and apt-get)"
        subprocess.run(["apt-get", "update", "-q"], capture_output=True, timeout=300)
        done = subprocess.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *PACKAGES, "catatonit",
                               "netavark", "aardvark-dns", "uidmap"],
                              env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"}, capture_output=True,
                              text=True, timeout=600)
        if done.returncode != 0:
            return f"apt-get install {' '.join(PACKAGES)} failed: {done.stderr.strip()[-500:]}"
    info = podman("info", check=False, timeout=60)
    if info.returncode != 0:
        return f"podman cannot run here: {info.stderr.strip()[-500:]}"
    probe = podman("run", "--rm", "--network", "none", BASE_IMAGE, "true", check=False, timeout=120) \
        if podman("image", "exists", BASE_IMAGE, check=False).returncode == 0 else None
    if probe is not None and probe.returncode != 0:
        return f"podman cannot start a container here: {probe.stderr.strip()[-500:]}"
    return None


@pytest.fixture(scope="module")
def image() -> str:
    """The service's image, built from deploy/Dockerfile on the registry-free base image."""
    reason = install_missing_packages()
    if reason:
        pytest.skip(reason)
    subprocess.run([str(PROJECT / "scripts" / "container-base.sh"), BASE_IMAGE], env=podman_env(), check=True,
                   timeout=600)
    started = time.monotonic()
    # docker format: OCI images carry no HEALTHCHECK.
    build = ["build", "--format", "docker", "-f", "deploy/Dockerfile", "--build-arg", f"BASE_IMAGE={BASE_IMAGE}", "-t", IMAGE]
    ca_bundle = Path("/etc/ssl/certs/ca-certificates.crt")
    if ca_bundle.exists():  # pip behind a TLS-inspecting proxy trusts what this machine trusts
        build += ["--volume", "/etc/ssl/certs:/etc/ssl/host-certs:ro",
                  "--build-arg", "PIP_CERT=/etc/ssl/host-certs/ca-certificates.crt"]
    done = podman(*build, ".", cwd=PROJECT, check=False, timeout=1500)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    size = int(podman("image", "inspect", "--format", "{{.Size}}", IMAGE).stdout.strip())
    print(f"\n[containers] image {IMAGE} built in {time.monotonic() - started:.0f} s, {size / 1e6:.0f} MB")
    return IMAGE


def test_image_runs_each_part_as_its_own_unprivileged_user(image):
    users = podman("run", "--rm", "--network", "none", image, "sh", "-c",
                   "id -un; id -u model; id -u redis; ls -ln /opt/keras-rest-api/model-cache").stdout.split("\n")
    assert users[:3] == ["web", "10002", "10003"]
    # The converted weights belong to root: no tier can replace what the model server loads.
    assert re.search(r"-r.-r--r-- +1 0 0 .* efficientnet_lite0-v\d+-[0-9a-f]{16}\.keras", "\n".join(users))


def test_image_sizes_the_web_tier_to_the_container_cpu_quota(image):
    def processes(*limits: str) -> int:
        out = podman("run", "--rm", "--network", "none", *limits, image, "python", "settings.py").stdout
        return int(re.search(r"^WSGI_PROCESSES=(\d+)$", out, re.M).group(1))

    assert processes("--cpus", "1") == 1
    assert processes("--cpuset-cpus", "0") == 1
    assert processes() == len(os.sched_getaffinity(0))


def test_image_loads_its_model_offline(image):
    # No network at all: the shipped weights, converted at build time, are all it needs.
    out = podman("run", "--rm", "--network", "none", "--user", "model", image, "python", "-c",
                 "from keras_rest_api.models.efficientnet_lite0 import load_efficientnet_lite0 as load; "
                 "import os; m = load({'MODEL_CACHE_DIR': os.environ['MODEL_CACHE_DIR']}); print(m.details)",
                 timeout=300)
    assert "efficientnet" in out.stdout and "converting" not in out.stderr, out.stderr[-2000:]


# --- compose ------------------------------------------------------------------------------------

def leftovers(project: str) -> dict[str, list[str]]:
    """Containers, volumes, networks and pods whose names carry `project`."""
    found = {}
    for kind, args in (("containers", ["ps", "-a", "--format", "{{.Names}}"]),
                       ("volumes", ["volume", "ls", "--format", "{{.Name}}"]),
                       ("networks", ["network", "ls", "--format", "{{.Name}}"]),
                       ("pods", ["pod", "ps", "--format", "{{.Name}}"]),
                       ("secrets", ["secret", "ls", "--format", "{{.Name}}"])):
        names = podman(*args).stdout.split()
        found[kind] = [name for name in names if project in name]
    return found


def compose(project: str, env: dict[str, str], *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    command = [str(Path(sys.executable).parent / "podman-compose"), "-p", project, "-f", str(COMPOSE_FILE), *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout, cwd=PROJECT)


class ComposeStack:
    def __init__(self, project: str, env: dict[str, str], url: str, api_key: str, probe_key: str) -> None:
        self.project, self.env, self.url, self.api_key, self.probe_key = project, env, url, api_key, probe_key

    def container(self, service: str) -> str:
        """`service`'s container; "model-server_2" names the second replica."""
        return f"{self.project}_{service}" if re.search(r"_\d+$", service) else f"{self.project}_{service}_1"

    def inspect(self, service: str, template: str) -> str:
        return podman("inspect", "--format", template, self.container(service)).stdout.strip()


@pytest.fixture
def compose_stack(image, tmp_path) -> Iterator[ComposeStack]:
    project = f"krastest{uuid.uuid4().hex[:8]}"
    secrets = tmp_path / "secrets"
    subprocess.run([str(PROJECT / "deploy" / "compose-secrets.sh"), str(secrets)], check=True, capture_output=True)
    keys = dict(line.split(":", 1) for line in (secrets / "api_keys").read_text().split())
    port = free_port()
    env = {**podman_env(), "IMAGE": image, "WEB_PORT": str(port), "SECRETS_DIR": str(secrets)}
    stack = ComposeStack(project, env, f"http://127.0.0.1:{port}", keys["client"], keys["probe"])
    try:
        up = compose(project, env, "up", "-d", "--no-build")
        assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
        yield stack
    finally:
        logs = compose(project, env, "logs", timeout=60)
        (tmp_path / "compose.log").write_text(logs.stdout + logs.stderr)
        down = compose(project, env, "down", "-v", "-t", "20", timeout=300)
        assert down.returncode == 0, down.stderr[-3000:]
        assert leftovers(project) == {"containers": [], "volumes": [], "networks": [], "pods": [], "secrets": []}


def wait_ready(url: str, api_key: str, timeout: float) -> None:
    def ready() -> bool:
        try:
            return requests.get(f"{url}/ready", headers={"Authorization": f"Bearer {api_key}"}, timeout=5).status_code == 200
        except requests.RequestException:
            return False

    wait_until(ready, timeout, f"{url}/ready to answer 200")


def healthy(container: str, retries: int = 3) -> bool:
    """Whether the container's health check passes, given the retries its health check allows
    (a check may time out once on a loaded machine)."""
    for _ in range(retries):
        if podman("healthcheck", "run", container, check=False).returncode == 0:
            return True
        time.sleep(2)
    return False


def pending_claims(stack: ComposeStack) -> dict[str, int]:
    """Images each model server (consumer name) has claimed and not answered, from Redis."""
    stream = "kras:queue:image_queue:efficientnet_lite0:1"
    out = podman("exec", stack.container("redis"), "sh", "-c",
                 'REDISCLI_AUTH="$(cat /run/secrets/redis_admin_password)" redis-cli --no-auth-warning '
                 f"--user admin XPENDING {stream} model_servers").stdout.split()
    pairs = out[3:]  # count, smallest id, largest id, then consumer and count pairs
    return {pairs[i]: int(pairs[i + 1]) for i in range(0, len(pairs) - 1, 2)}


def probe_output(container: str) -> str:
    """What the container's health check says, for a failure's message."""
    health = podman("inspect", "--format", "{{json .State.Healthcheck}}", container, check=False)
    probe = podman("exec", container, "sh", "-xc", "probe.sh ready || echo exit $?", check=False)
    return health.stdout[-1500:] + probe.stdout[-1000:] + probe.stderr[-1500:]


def servers_alive(stack: ComposeStack) -> int:
    response = requests.get(f"{stack.url}/ready", headers={"Authorization": f"Bearer {stack.api_key}"}, timeout=5)
    return int(response.json().get("model_servers_alive", 0))


def classify(url: str, api_key: str) -> list[str]:
    with open(SAMPLE, "rb") as photo:
        response = requests.post(f"{url}/predict", headers={"Authorization": f"Bearer {api_key}"},
                                 files={"image": ("chelsea.jpg", photo, "image/jpeg")}, timeout=60)
    assert response.status_code == 200, response.text
    return [p["label"] for p in response.json()["predictions"]]


def test_compose_stack_classifies_and_survives_a_model_server_crash_under_a_flood(compose_stack):
    stack = compose_stack
    # Start-up: two model servers load and warm up their model (JAX compiles each batch size);
    # about 2.5 min on this shared 2-core machine.
    wait_ready(stack.url, stack.api_key, 420)
    assert classify(stack.url, stack.api_key)[0] in CATS
    # Keys are on: without one, nothing but liveness.
    assert requests.get(f"{stack.url}/ready", timeout=5).status_code == 401
    assert requests.get(f"{stack.url}/health", timeout=5).status_code == 200
    # Only the web port is published, and only on loopback; Redis is not published at all.
    assert podman("port", stack.container("redis")).stdout.strip() == ""
    assert podman("port", stack.container("web")).stdout.strip().startswith("8000/tcp -> 127.0.0.1:")
    # Each part as its own user; the health checks pass (podman runs them on demand here: it
    # schedules them with systemd timers, which this machine has not).
    for service, user in (("redis", "redis"), ("model-server", "model"), ("web", "web")):
        assert podman("exec", stack.container(service), "id", "-un").stdout.strip() == user
        assert healthy(stack.container(service)), (service, probe_output(stack.container(service)))
    # The model server cannot read the web tier's password or the API keys: they are not mounted there.
    secrets = podman("exec", stack.container("model-server"), "ls", "/run/secrets").stdout.split()
    assert secrets == ["redis_model_server_password"]

    # SIGKILL one of the two model servers (from outside, as a crash would) while it holds a
    # claimed batch, under a flood: the other takes over that batch, and it is started again.
    wait_until(lambda: servers_alive(stack) == 2, 300, "both model servers to be serving")
    replicas = {stack.inspect(f"model-server_{n}", "{{.Config.Hostname}}"): n for n in (1, 2)}
    killed: dict[str, Any] = {}

    # Pids and restart counts are read before the flood, so that the kill follows the sight of a
    # claim at once: a batch is answered within about a second, and one read of the claims is
    # kept (a second read may find the batch already answered, as CI once did).
    before = {n: (stack.inspect(f"model-server_{n}", "{{.State.Pid}}"),
                  int(stack.inspect(f"model-server_{n}", "{{.RestartCount}}"))) for n in (1, 2)}

    def crash() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            holders = [name for name, count in pending_claims(stack).items() if count]
            if holders:
                n = replicas[holders[0].split(":")[0]]
                pid, restarts = before[n]
                killed.update(service=f"model-server_{n}", pid=pid, restarts=restarts)
                os.kill(int(pid), signal.SIGKILL)
                return
            time.sleep(0.05)

    injector = threading.Thread(target=crash)
    injector.start()
    try:
        summary = stress.run_flood(f"{stack.url}/predict", SAMPLE, requests_total=40, interval=0.2,
                                   timeout=90, api_key=stack.api_key)
    finally:
        injector.join(90)
    lost = sum(summary["failures"].get(kind, 0) for kind in LOST)
    print(f"\n[compose flood] killed {killed.get('service')} holding a batch; sent {summary['sent']} "
          f"ok {summary['ok']} lost {lost} failures {summary['failures']}")
    assert killed, "no model server was killed"
    wait_until(lambda: int(stack.inspect(killed["service"], "{{.RestartCount}}")) > killed["restarts"], 60,
               f"{killed['service']} to be restarted")
    assert stack.inspect(killed["service"], "{{.State.Pid}}") != killed["pid"]
    # Every request was accepted (the queue had room) and every one was answered.
    assert lost == 0 and summary["ok"] == summary["sent"], summary["failure_examples"]
    assert classify(stack.url, stack.api_key)[0] in CATS


# --- Kubernetes ---------------------------------------------------------------------------------

def manifests() -> list[dict[str, Any]]:
    return [doc for path in sorted(KUBERNETES.glob("*.yaml")) for doc in yaml.safe_load_all(path.read_text()) if doc]


def by_kind(kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in manifests() if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, (kind, name)
    return found[0]


def secret_manifests(directory: Path) -> str:
    done = subprocess.run([str(KUBERNETES / "make-secrets.sh"), str(directory)], capture_output=True, text=True,
                          check=True, timeout=30)
    return done.stdout


def test_every_manifest_validates_against_the_kubernetes_schemas(tmp_path):
    (tmp_path / "secrets.yaml").write_text(secret_manifests(tmp_path / "secrets"))
    files = [*sorted(str(p) for p in KUBERNETES.glob("*.yaml") if p.name != "keda.yaml"), str(tmp_path / "secrets.yaml")]
    done = subprocess.run([str(Path(sys.executable).parent / "kubernetes-validate"), "--strict", *files],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "passed" in done.stdout and "WARN" not in done.stdout


def test_keda_scales_the_model_servers_on_their_consumer_groups_pending_count(tmp_path):
    # KEDA's CRDs have no schema offline: their fields are checked against what the other
    # manifests and the settings name.
    settings = by_kind("ConfigMap")["data"]
    scaled = by_kind("ScaledObject")
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    target = by_kind("Deployment", scaled["spec"]["scaleTargetRef"]["name"])
    assert target["spec"]["template"]["spec"]["containers"][0]["command"] == ["keras-model-server"]
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "redis-streams"
    meta = trigger["metadata"]
    assert meta["stream"] == f"{settings['KEY_PREFIX']}:queue:{settings['QUEUE_NAME']}:{settings['MODEL']}:1"
    assert meta["consumerGroup"] == settings["CONSUMER_GROUP"] and int(meta["pendingEntriesCount"]) > 0
    assert meta["address"] == settings["REDIS_URL"].split("//")[1].split("/")[0]
    auth = by_kind("TriggerAuthentication", trigger["authenticationRef"]["name"])
    secret = yaml.safe_load_all(secret_manifests(tmp_path / "secrets"))
    keys = {doc["metadata"]["name"]: set(doc["data"]) for doc in secret}
    for ref in auth["spec"]["secretTargetRef"]:
        assert ref["key"] in keys[ref["name"]]


def test_the_configmap_holds_only_settings_that_exist():
    names = set(by_kind("ConfigMap")["data"])
    assert names <= set(settings_module.defaults()), names - set(settings_module.defaults())
    assert settings_module.load(by_kind("ConfigMap")["data"])  # each value parses


def test_every_pod_runs_as_non_root_with_probes_and_resources():
    for workload in (d for d in manifests() if d["kind"] in ("Deployment", "StatefulSet")):
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        for container in pod["containers"]:
            assert {"requests", "limits"} <= set(container["resources"]), workload["metadata"]["name"]
            assert "livenessProbe" in container
    web = by_kind("Deployment", "web")["spec"]["template"]["spec"]["containers"][0]
    assert web["readinessProbe"]["exec"]["command"] == ["probe.sh", "ready"]
    assert web["livenessProbe"]["httpGet"]["path"] == "/health"
    gpu = by_kind("Deployment", "model-server-gpu")["spec"]["template"]["spec"]["containers"][0]
    assert gpu["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert {d["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"]
            for d in manifests() if d["kind"] == "PodDisruptionBudget"} == {"web", "model-server"}


def for_podman(image: str, port: int, suffix: str, secrets_yaml: str, secrets_root: Path) -> str:
    """The manifests as `podman kube play` can run them: the same pod templates, with the
    StatefulSet played as a Deployment (podman plays no StatefulSet) and its volume claim as a
    PersistentVolumeClaim, one replica each, the web port on a loopback hostPort, REDIS_URL naming
    the Redis pod (no Service is played), names suffixed so that a run cannot collide with
    another, and the CPU-only parts (no GPU, KEDA, Services or PodDisruptionBudgets, which need a
    cluster). podman 4.3 writes a Secret's `data` into its files still base64-encoded, so each
    Secret's keys are written, decoded, into a folder under `secrets_root` and its secret volumes
    mount that folder instead (with every key: `items` are not applied)."""
    played: list[dict[str, Any]] = []
    for doc in yaml.safe_load_all(secrets_yaml):
        folder = secrets_root / doc["metadata"]["name"]
        folder.mkdir(parents=True, mode=0o755)
        folder.chmod(0o755)
        for key, value in doc["data"].items():
            (folder / key).write_bytes(base64.b64decode(value))
            (folder / key).chmod(0o444)
    for doc in manifests():
        kind, name = doc["kind"], doc["metadata"]["name"]
        if kind in ("Service", "PodDisruptionBudget", "ScaledObject", "TriggerAuthentication") or name.endswith("-gpu"):
            continue
        doc = json.loads(json.dumps(doc))
        doc["metadata"]["name"] = f"{name}-{suffix}"
        if kind == "ConfigMap":
            # A pod is found by its name on the network (the Service "redis" is not played).
            doc["data"]["REDIS_URL"] = f"redis://redis-{suffix}-pod-0:6379/0"
        if kind in ("Deployment", "StatefulSet"):
            pod = doc["spec"]["template"]["spec"]
            for volume in pod.get("volumes", []):
                if "secret" in volume:
                    source = volume.pop("secret")
                    volume["hostPath"] = {"path": str(secrets_root / source["secretName"]), "type": "Directory"}
            for container in pod["containers"]:
                container["image"] = image
                for source in container.get("envFrom", []):
                    source["configMapRef"]["name"] += f"-{suffix}"
                for port_spec in container.get("ports", []):
                    if port_spec["containerPort"] == 8000:
                        port_spec.update(hostPort=port, hostIP="127.0.0.1")
            doc["spec"]["replicas"] = 1
        if kind == "StatefulSet":
            for claim in doc["spec"].pop("volumeClaimTemplates"):
                claim_name = f"{claim['metadata']['name']}-{suffix}"
                played.append({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                               "metadata": {"name": claim_name}, "spec": claim["spec"]})
                pod.setdefault("volumes", []).append(
                    {"name": claim["metadata"]["name"], "persistentVolumeClaim": {"claimName": claim_name}})
            doc["kind"] = "Deployment"
            doc["spec"].pop("serviceName")
        played.append(doc)
    return yaml.safe_dump_all(played)


@pytest.fixture
def kube_pods(image, tmp_path) -> Iterator[tuple[str, str, str]]:
    suffix = f"k{uuid.uuid4().hex[:6]}"
    port = free_port()
    secrets_yaml = secret_manifests(tmp_path / "secrets")
    keys = dict(line.split(":", 1) for line in (tmp_path / "secrets" / "api_keys").read_text().split())
    played = tmp_path / "play.yaml"
    played.write_text(for_podman(image, port, suffix, secrets_yaml, tmp_path / "secret-volumes"))
    network = f"kras-{suffix}"
    podman("network", "create", network)
    try:
        done = podman("kube", "play", "--network", network, str(played), check=False, timeout=300)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        yield f"http://127.0.0.1:{port}", keys["client"], suffix
    finally:
        logs = podman("pod", "logs", f"web-{suffix}-pod-0", check=False)
        (tmp_path / "web.log").write_text(logs.stdout + logs.stderr)
        podman("kube", "down", str(played), check=False, timeout=300)
        # kube down keeps volumes (as kubectl delete keeps a claim's data) and, in podman 4.3,
        # the secrets it made: this test's go too.
        for volume in podman("volume", "ls", "--format", "{{.Name}}").stdout.split():
            if suffix in volume:
                podman("volume", "rm", "-f", volume, check=False)
        for secret in podman("secret", "ls", "--format", "{{.Name}}").stdout.split():
            if suffix in secret:
                podman("secret", "rm", secret, check=False)
        podman("network", "rm", "-f", network, check=False)
        assert leftovers(suffix) == {"containers": [], "volumes": [], "networks": [], "pods": [], "secrets": []}


def test_kube_play_runs_the_manifests_and_classifies_a_photo(kube_pods):
    url, api_key, suffix = kube_pods
    wait_ready(url, api_key, 420)
    assert classify(url, api_key)[0] in CATS
    names = podman("ps", "--format", "{{.Names}}").stdout.split()
    assert {n for n in names if suffix in n and not n.endswith("-infra")} >= {
        f"redis-{suffix}-pod-0-redis", f"model-server-{suffix}-pod-0-model-server", f"web-{suffix}-pod-0-web"}

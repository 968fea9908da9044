"""A model rolled from version 1 to version 2 under a steady flood, through the real stack.

Apache (mod_wsgi daemon mode), Redis, a model-server process serving a model repository: the
new version folder appears mid-flood; the model server loads it, moves the default traffic to
it once it answers, drains version 1 and unloads it. No request may fail or be answered twice,
and every answer names the version that produced it.
"""
from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import pytest
import requests

from tests.support.harness import Stack, wait_until
from tests.support.web_checks import png_bytes

pytestmark = pytest.mark.e2e

CONFIG = """{
  "input": {"height": 32, "width": 32},
  "preprocessing": {"resize": "center_crop", "interpolation": "bilinear", "normalization": "unit"},
  "labels": "labels.txt",
  "batching": {"max_batch_size": 4, "max_wait_ms": 0}
}
"""


@pytest.fixture()
def repository(tmp_path: Path, tiny_model_files: dict[str, str]) -> Path:
    root = tmp_path / "repository"
    (root / "tiny" / "1").mkdir(parents=True)
    shutil.copy(tiny_model_files["MODEL"], root / "tiny" / "1" / "model.keras")
    shutil.copy(tiny_model_files["MODEL_LABELS"], root / "tiny" / "labels.txt")
    (root / "tiny" / "config.json").write_text(CONFIG)
    root.chmod(0o755)
    return root


def test_rolling_to_a_new_version_under_a_flood_fails_nothing(tmp_path, repository):
    stack = Stack(tmp_path, {
        "MODEL_REPOSITORY": str(repository), "MODEL": "tiny", "DEFAULT_MODEL": "tiny", "KEY_PREFIX": "rollout",
        "REPOSITORY_POLL_SECONDS": 0.5, "DRAIN_GRACE_SECONDS": 3, "METADATA_CACHE_SECONDS": 1,
        "HEARTBEAT_INTERVAL": 0.5, "QUEUE_BLOCK_MS": 200, "REQUEST_TIMEOUT": 20, "RESULT_TTL": 30,
        "WSGI_PROCESSES": 2, "WSGI_THREADS": 8,
    })
    answers: list[tuple[float, int, str]] = []
    stop = threading.Event()

    def client(seed: int) -> None:
        image = png_bytes(seed)
        with requests.Session() as session:
            while not stop.is_set():
                try:
                    response = session.post(f"{stack.url}/predict", files={"image": ("x.png", image)},
                                            headers=stack.auth_headers, timeout=30)
                    answers.append((time.monotonic(), response.status_code, response.json().get("version", "")))
                except requests.RequestException as exc:
                    answers.append((time.monotonic(), 0, repr(exc)))

    try:
        stack.start()
        clients = [threading.Thread(target=client, args=(seed,)) for seed in range(6)]
        for thread in clients:
            thread.start()
        time.sleep(2)
        # A new version appears as a whole folder (written aside, then moved in).
        staging = tmp_path / "staging-2"
        shutil.copytree(repository / "tiny" / "1", staging)
        staging.rename(repository / "tiny" / "2")
        wait_until(lambda: "version 1 drained and unloaded" in stack.log("model_server"), 60,
                   "version 1 to be drained and unloaded")
        time.sleep(1)
        stop.set()
        for thread in clients:
            thread.join(40)
        queue = stack.queue()
        left = list(queue.redis.scan_iter(match=queue.keys.all_results))

        def listed() -> list[tuple[str, str]]:
            body = requests.get(f"{stack.url}/models", headers=stack.auth_headers, timeout=5).json()
            return [(v["version"], v["state"]) for model in body["models"] for v in model["versions"]]

        # The next heartbeat, and the web tier's next look at it, no longer list version 1.
        wait_until(lambda: listed() == [("2", "ready")], 10, "GET /models to list version 2 alone")
    finally:
        stop.set()
        stack.stop()

    statuses = [status for _, status, _ in answers]
    versions = [version for _, _, version in answers]
    print(f"\n[rollout] {len(answers)} requests: {versions.count('1')} by version 1, {versions.count('2')} by "
          f"version 2, statuses {sorted(set(statuses))}")
    assert set(statuses) == {200}, [a for a in answers if a[1] != 200][:5]
    assert versions.count("1") > 0 and versions.count("2") > 0
    # The default traffic moves once: after the first answer by version 2, version 1 answers
    # only what web processes sent it before they saw the switch (their cache, one second).
    first_v2 = min(t for t, _, version in answers if version == "2")
    assert all(t < first_v2 + 3 for t, _, version in answers if version == "1")
    assert versions[-1] == "2"
    assert left == []  # no request answered twice

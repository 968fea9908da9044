"""A model rolled from version 1 to version 2 under a steady flood, through the real stack.

Apache (mod_wsgi daemon mode), Redis, a model-server process serving a model repository: the
new version folder appears mid-flood; the model server loads it, moves the default traffic to
it once it answers, drains version 1 and unloads it. No request may fail or be answered twice,
and every answer names the version that produced it: version 2 is version 1 with its output
classes rotated, so each answer's probabilities tell which version computed them, and each is
checked against what that version gives for that client's image (computed here, in-process).
Results are kept for RESULT_TTL = 600 s, longer than the test, so a second answer to any request
is still in Redis to be counted at the end.
"""
from __future__ import annotations

import shutil
import threading
import time
import uuid
from pathlib import Path

import numpy as np

import pytest
import requests

from keras_rest_api import settings
from keras_rest_api.imaging.decode import decode_image
from keras_rest_api.models import ModelRepository
from tests.support.checked_flood import distinct_images, wrong_answer
from tests.support.harness import Stack, wait_until

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


@pytest.fixture()
def version_2(tmp_path: Path, repository: Path) -> Path:
    """Version 2's folder, written aside: version 1 with its output classes rotated by one."""
    import keras

    model = keras.saving.load_model(repository / "tiny" / "1" / "model.keras")
    dense = model.layers[-1]
    kernel, bias = dense.get_weights()
    dense.set_weights([np.roll(kernel, 1, axis=1), np.roll(bias, 1)])
    folder = tmp_path / "staging-2"
    folder.mkdir()
    model.save(folder / "model.keras")
    return folder


def expected_by_version(repository: Path, version_2: Path, images: list[bytes]) -> dict[str, list[dict[str, float]]]:
    """What each version answers for each image: loaded here from a copy of the repository
    holding both versions, as the model server loads them."""
    both = repository.parent / "both-versions"
    shutil.copytree(repository, both)
    shutil.copytree(version_2, both / "tiny" / "2")
    loaded = ModelRepository(str(both), settings.load())
    expected = {}
    for version in ("1", "2"):
        model = loaded.load("tiny", version)
        pixels = np.stack([decode_image(data, model.contract, 10**8) for data in images])
        expected[version] = [{label: float(p) for label, p in zip(model.labels, row)} for row in model.predict(pixels)]
    for one, two in zip(expected["1"], expected["2"]):  # each image's answer tells the versions apart
        assert max(one, key=one.get) != max(two, key=two.get), (one, two)
    return expected


def test_rolling_to_a_new_version_under_a_flood_fails_nothing(tmp_path, repository, version_2):
    images = distinct_images(6)
    expected = expected_by_version(repository, version_2, images)
    stack = Stack(tmp_path, {
        "MODEL_REPOSITORY": str(repository), "MODEL": "tiny", "DEFAULT_MODEL": "tiny", "KEY_PREFIX": "rollout",
        "REPOSITORY_POLL_SECONDS": 0.5, "DRAIN_GRACE_SECONDS": 3, "METADATA_CACHE_SECONDS": 1,
        "HEARTBEAT_INTERVAL": 0.5, "QUEUE_BLOCK_MS": 200, "REQUEST_TIMEOUT": 20, "RESULT_TTL": 600,
        "WSGI_PROCESSES": 2, "WSGI_THREADS": 8,
    })
    answers: list[tuple[float, int, str]] = []  # (when, status, version)
    wrong: list[str] = []
    stop = threading.Event()

    def client(index: int) -> None:
        with requests.Session() as session:
            while not stop.is_set():
                request_id = uuid.uuid4().hex
                try:
                    response = session.post(f"{stack.url}/predict", files={"image": ("x.png", images[index])},
                                            headers={**stack.auth_headers, "X-Request-ID": request_id}, timeout=30)
                except requests.RequestException as exc:
                    answers.append((time.monotonic(), 0, repr(exc)))
                    continue
                body = response.json()
                version = body.get("version", "")
                answers.append((time.monotonic(), response.status_code, version))
                if response.headers.get("X-Request-ID") != request_id:
                    wrong.append(f"request {request_id} answered as {response.headers.get('X-Request-ID')}")
                elif response.status_code == 200:
                    why = wrong_answer(body, expected[version][index]) if version in expected else "no version"
                    if why:
                        wrong.append(f"image {index}, labelled version {version!r}: {why}")

    try:
        stack.start()
        clients = [threading.Thread(target=client, args=(index,)) for index in range(len(images))]
        for thread in clients:
            thread.start()
        time.sleep(2)
        # A new version appears as a whole folder (written aside, then moved in).
        version_2.rename(repository / "tiny" / "2")
        wait_until(lambda: "version 1 drained and unloaded" in stack.log("model_server"), 60,
                   "version 1 to be drained and unloaded")
        time.sleep(1)
        stop.set()
        for thread in clients:
            thread.join(40)
        queue = stack.queue()
        # Each answer is an element of its request's result list: a second one stays there.
        left = sum(queue.redis.llen(key) for key in queue.redis.scan_iter(match=queue.keys.all_results))

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
          f"version 2, statuses {sorted(set(statuses))}, wrong {len(wrong)}, answers left over {left}")
    assert set(statuses) == {200}, [a for a in answers if a[1] != 200][:5]
    assert not wrong, wrong[:5]  # every answer is its own image's, by the version it names
    assert versions.count("1") > 0 and versions.count("2") > 0
    # The default traffic moves once: after the first answer by version 2, version 1 answers
    # only what web processes sent it before they saw the switch (their cache, one second).
    first_v2 = min(t for t, _, version in answers if version == "2")
    assert all(t < first_v2 + 3 for t, _, version in answers if version == "1")
    assert versions[-1] == "2"
    assert left == 0  # no request answered twice

"""Features models through the real stack: Apache (mod_wsgi daemons), Redis, a model-server process.

The two example models are trained by the README's own commands from the data inside
scikit-learn's wheel, served from a model repository, and called as a client would: the
README's curl as written, a batch of 100 instances in one request, each kind of field error,
tritonclient over the Open Inference Protocol, an asynchronous job, and a version rolled in
under a flood of JSON requests with no request failing.
"""
from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import requests
import tritonclient.http as httpclient

from keras_rest_api.models import open_repository
from tests.support.harness import PROJECT, VENV_PYTHON, Stack, wait_until

pytestmark = pytest.mark.e2e

README = PROJECT / "README.md"
PATIENT = {"age": 48, "sex": "2", "bmi": 27.5, "bp": 94, "s1": 190, "s2": 115, "s3": 48, "s4": 4.0, "s5": 4.6, "s6": 91}


def readme_example() -> list[str]:
    """The command lines of the README's worked example (the sh block after its marker)."""
    text = README.read_text(encoding="utf-8")
    block = re.search(r"<!-- features-example -->\s*```sh\n(.*?)```", text, re.S)
    assert block, "README.md lost its features-example block"
    return [line for line in block.group(1).splitlines() if line.strip()]


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The model repository the README's training commands write, run as written from a scratch folder."""
    workdir = tmp_path_factory.mktemp("features")
    for line in readme_example():
        if "keras_rest_api.models.examples" in line:
            argv = shlex.split(line)
            assert argv[0] == ".venv/bin/python"
            subprocess.run([str(VENV_PYTHON), *argv[1:]], cwd=workdir, check=True, timeout=300,
                           env={"PATH": "/usr/bin:/bin", "TF_CPP_MIN_LOG_LEVEL": "2", "HOME": str(workdir)})
    root = workdir / "my_models"
    assert (root / "diabetes" / "1" / "model.keras").is_file() and (root / "breast_cancer" / "config.json").is_file()
    for path in [root, *root.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)  # Apache's daemons and the model server read it
    workdir.chmod(0o755)
    return root


@pytest.fixture(scope="module")
def local(repository: Path):
    """The same model versions loaded in this process, for the answers the service must give."""
    repo = open_repository({"MODEL_REPOSITORY": str(repository), "BATCH_SIZE": 8, "BATCH_WAIT_MS": 0,
                            "FEATURES_BATCH_SIZE": 256, "MODEL_PRECISION": "float32"})
    return {name: repo.load(name, "1") for name in ("diabetes", "breast_cancer")}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, repository: Path):
    stack = Stack(tmp_path_factory.mktemp("features-stack"), {
        "MODEL_REPOSITORY": str(repository), "MODEL": "diabetes,breast_cancer", "DEFAULT_MODEL": "diabetes",
        "KEY_PREFIX": "features", "REPOSITORY_POLL_SECONDS": 0.5, "DRAIN_GRACE_SECONDS": 3,
        "METADATA_CACHE_SECONDS": 1, "HEARTBEAT_INTERVAL": 0.5, "QUEUE_BLOCK_MS": 200, "REQUEST_TIMEOUT": 20,
        "RESULT_TTL": 30, "WSGI_PROCESSES": 2, "WSGI_THREADS": 8,
    })
    try:
        stack.start()
        yield stack
    finally:
        stack.stop()


def row_of(local_model, instance: dict) -> np.ndarray:
    """An instance as the queue row the web tier makes of it (a category as its index)."""
    return np.array([[f.vocabulary.index(str(instance[f.name])) if f.type == "categorical" else instance[f.name]
                      for f in local_model.contract.features]], dtype=np.float64)


def breast_cancer_instances(count: int) -> tuple[list[dict], np.ndarray, np.ndarray]:
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    names = [re.sub(r"[^A-Za-z0-9_.-]", "_", n) for n in data.feature_names]
    rows = data.data[:count]
    return [dict(zip(names, map(float, row))) for row in rows], rows, 1 - data.target[:count]


def test_the_readme_worked_example_runs_as_written(stack, local):
    (curl,) = [line for line in readme_example() if line.startswith("curl ")]
    argv = [arg.replace("http://127.0.0.1:8000", stack.url) for arg in shlex.split(curl)]
    done = subprocess.run([*argv, "--silent", "--show-error", "--max-time", "30"], capture_output=True, check=True)
    body = json.loads(done.stdout)
    assert body["success"] is True and body["model"] == "diabetes" and body["version"] == "1"
    (value,) = body["predictions"]
    assert value["name"] == "progression" and value["unit"] == "points"
    expected = float(local["diabetes"].predict(row_of(local["diabetes"], PATIENT))[0, 0])
    assert value["value"] == pytest.approx(expected, rel=1e-5)
    print(f"\n[features] README curl: {done.stdout.decode().strip()}")


def test_a_batch_of_100_instances_is_answered_in_one_request(stack, local):
    instances, rows, malignant = breast_cancer_instances(100)
    response = requests.post(f"{stack.url}/models/breast_cancer/predict", json={"instances": instances}, timeout=60)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == "breast_cancer" and len(body["predictions"]) == 100
    answered = np.array([p[0]["probability"] for p in body["predictions"]])
    assert all(p[0]["label"] == "malignant" for p in body["predictions"])
    np.testing.assert_allclose(answered, local["breast_cancer"].predict(rows)[:, 0], rtol=1e-5, atol=1e-6)
    assert np.mean((answered >= 0.5) == malignant) > 0.85


def test_each_field_error_is_listed_in_one_400(stack):
    instances = [
        PATIENT,
        {k: v for k, v in PATIENT.items() if k != "bmi"},   # 1: missing
        {**PATIENT, "bp": "high"},                           # 2: wrong type
        {**PATIENT, "age": -3},                              # 3: out of range
        {**PATIENT, "sex": "3"},                             # 4: unknown category
        {**PATIENT, "weight": 80},                           # 5: a field the model does not take
        {**PATIENT, "s1": "__NAN__"},                        # 6: not finite (JSON's NaN, as Python sends it)
    ]
    data = json.dumps({"instances": instances}).replace('"__NAN__"', "NaN")
    response = requests.post(f"{stack.url}/models/diabetes/predict", data=data,
                             headers={"Content-Type": "application/json"}, timeout=30)
    assert response.status_code == 400 and response.headers["Content-Type"].startswith("application/json")
    body = response.json()
    assert body["success"] is False and "6 field error(s) in 6 of 7 instance(s)" in body["error"]
    assert [(e["instance"], e["field"], e["problem"]) for e in body["errors"]] == [
        (1, "bmi", "missing"), (2, "bp", "wrong_type"), (3, "age", "out_of_range"), (4, "sex", "unknown_category"),
        (5, "weight", "unknown_field"), (6, "s1", "not_finite")]
    assert "one of its categories: 1, 2" in body["errors"][3]["message"]
    # An image to a features model, and JSON to its image routes' cousin: 415 saying what to send.
    upload = requests.post(f"{stack.url}/models/diabetes/predict", files={"image": ("x.png", b"x")}, timeout=30)
    assert upload.status_code == 415 and "Content-Type: application/json" in upload.json()["error"]


def test_an_asynchronous_job_of_a_features_model(stack, local):
    accepted = requests.post(f"{stack.url}/predict?async=1", json=PATIENT, timeout=30)
    assert accepted.status_code == 202
    url = f"{stack.url}{accepted.json()['status_url']}"
    wait_until(lambda: requests.get(url, timeout=5).status_code == 200, 30, "the job's result")
    (value,) = requests.get(url, timeout=5).json()["predictions"]
    assert value["value"] == pytest.approx(float(local["diabetes"].predict(row_of(local["diabetes"], PATIENT))[0, 0]),
                                           rel=1e-5)


def test_tritonclient_calls_the_same_models_unchanged(stack, local):
    client = httpclient.InferenceServerClient(stack.url.removeprefix("http://"), network_timeout=30)
    try:
        metadata = client.get_model_metadata("breast_cancer")
        assert metadata["inputs"][0] == {"name": "features", "datatype": "FP32", "shape": [-1, 30]}
        _, rows, _ = breast_cancer_instances(8)
        tensor = httpclient.InferInput("features", [8, 30], "FP32")
        tensor.set_data_from_numpy(rows.astype(np.float32), binary_data=True)
        result = client.infer("breast_cancer", [tensor], outputs=[httpclient.InferRequestedOutput("probability")])
        np.testing.assert_allclose(result.as_numpy("probability")[:, 0],
                                   local["breast_cancer"].predict(rows.astype(np.float32).astype(np.float64))[:, 0],
                                   rtol=1e-5, atol=1e-6)

        inputs = []
        for name, value in PATIENT.items():
            if name == "sex":
                tensor = httpclient.InferInput(name, [1, 1], "BYTES")
                tensor.set_data_from_numpy(np.array([[value.encode()]], dtype=np.object_))
            else:
                tensor = httpclient.InferInput(name, [1, 1], "FP32")
                tensor.set_data_from_numpy(np.array([[value]], dtype=np.float32))
            inputs.append(tensor)
        result = client.infer("diabetes", inputs)
        expected = local["diabetes"].predict(row_of(local["diabetes"], PATIENT).astype(np.float32).astype(np.float64))
        assert result.as_numpy("values")[0, 0] == pytest.approx(float(expected[0, 0]), rel=1e-5)
    finally:
        client.close()


def test_a_version_rolls_in_under_a_json_flood_with_no_error(stack, repository):
    answers: list[tuple[float, int, str]] = []
    stop = threading.Event()

    def client(seed: int) -> None:
        rng = np.random.default_rng(seed)
        with requests.Session() as session:
            while not stop.is_set():
                patient = {**PATIENT, "age": int(rng.integers(20, 80))}
                batch = {"instances": [patient] * int(rng.integers(1, 5))}
                try:
                    response = session.post(f"{stack.url}/predict", json=batch if seed % 2 else patient, timeout=30)
                    answers.append((time.monotonic(), response.status_code, response.json().get("version", "")))
                except (requests.RequestException, ValueError) as exc:
                    answers.append((time.monotonic(), 0, repr(exc)))

    queue = stack.queue()
    # Results kept on purpose (an asynchronous job's, for GET /result) are not this flood's.
    kept = set(queue.redis.scan_iter(match=queue.keys.all_results))
    clients = [threading.Thread(target=client, args=(seed,)) for seed in range(6)]
    try:
        for thread in clients:
            thread.start()
        time.sleep(2)
        staging = repository.parent / "staging-2"
        shutil.copytree(repository / "diabetes" / "1", staging)
        staging.rename(repository / "diabetes" / "2")
        wait_until(lambda: "model diabetes: version 1 drained and unloaded" in stack.log("model_server"), 60,
                   "diabetes version 1 to be drained and unloaded")
        time.sleep(1)
    finally:
        stop.set()
        for thread in clients:
            thread.join(40)
    statuses = [status for _, status, _ in answers]
    versions = [version for _, _, version in answers]
    print(f"\n[features rollout] {len(answers)} JSON requests: {versions.count('1')} by version 1, "
          f"{versions.count('2')} by version 2, statuses {sorted(set(statuses))}")
    assert set(statuses) == {200}, [a for a in answers if a[1] != 200][:5]
    assert versions.count("1") > 0 and versions.count("2") > 0 and versions[-1] == "2"
    assert set(queue.redis.scan_iter(match=queue.keys.all_results)) - kept == set()  # none answered twice

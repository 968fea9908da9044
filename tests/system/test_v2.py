"""The Open Inference Protocol (v2) routes, called by the real `tritonclient[http]` through real
Apache, Redis and a model-server process; a few raw requests check what that client cannot send.

Every probability is compared with the tiny model's own output on the same pixels.
"""
from __future__ import annotations

import json
import os
import signal
import shutil
import struct
import threading
import time

import numpy as np
import pytest
import redis
import requests
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from keras_rest_api.imaging.decode import decode_image
from tests.support.harness import Stack, running_stack, wait_until
from tests.support.web_checks import png_bytes

pytestmark = pytest.mark.e2e

PREFIX = "v2"
MAX_QUEUE = 12
LABELS = ["cat", "dog", "fish", "bird", "horse"]


@pytest.fixture(scope="module")
def stack(tmp_path_factory, tiny_model_files):
    settings = {**tiny_model_files, "KEY_PREFIX": PREFIX, "BATCH_SIZE": 4, "BATCH_WAIT_MS": 10, "QUEUE_BLOCK_MS": 200,
                "REQUEST_TIMEOUT": 4, "MAX_QUEUE_LENGTH": MAX_QUEUE, "MAX_UPLOAD_BYTES": 2_000_000,
                "WSGI_PROCESSES": 1, "WSGI_THREADS": 8}
    with running_stack(tmp_path_factory.mktemp("v2"), settings) as s:
        yield s


@pytest.fixture()
def client(stack):
    c = httpclient.InferenceServerClient(stack.url.removeprefix("http://"), network_timeout=30)
    yield c
    c.close()


def files_input(files: list[bytes], binary: bool = True) -> httpclient.InferInput:
    tensor = httpclient.InferInput("image", [len(files)], "BYTES")
    tensor.set_data_from_numpy(np.array(files, dtype=np.object_), binary_data=binary)
    return tensor


def pixels_input(pixels: np.ndarray, datatype: str = "UINT8", binary: bool = True) -> httpclient.InferInput:
    tensor = httpclient.InferInput("pixels", list(pixels.shape), datatype)
    tensor.set_data_from_numpy(pixels, binary_data=binary)
    return tensor


def expected(tiny_model, files: list[bytes]) -> np.ndarray:
    return tiny_model.predict(np.stack([decode_image(data, (32, 32), 50_000_000) for data in files]))


def error_of(call) -> InferenceServerException:
    with pytest.raises(InferenceServerException) as caught:
        call()
    return caught.value


# --- health, metadata, repository -------------------------------------------------------------------

def test_health_and_server_metadata(client):
    assert client.is_server_live()
    assert client.is_server_ready()
    metadata = client.get_server_metadata()
    assert metadata["name"] == "keras-rest-api"
    assert {"binary_tensor_data", "classification", "model_repository"} <= set(metadata["extensions"])


def test_model_metadata_describes_the_served_model(client):
    for version in ("", "1"):
        metadata = client.get_model_metadata("tiny", model_version=version)
        assert metadata["name"] == "tiny"
        assert metadata["versions"] == ["1"]
        inputs = {tensor["name"]: tensor for tensor in metadata["inputs"]}
        assert inputs["image"] == {"name": "image", "datatype": "BYTES", "shape": [-1]}
        assert inputs["pixels"]["shape"] == [-1, 32, 32, 3] and inputs["pixels"]["datatype"] == "UINT8"
        assert metadata["outputs"] == [{"name": "probabilities", "datatype": "FP32", "shape": [-1, 5]}]


def test_repository_index_lists_the_model_and_its_version(client):
    assert client.get_model_repository_index() == [{"name": "tiny", "version": "1", "state": "READY", "reason": ""}]


def test_model_readiness(client):
    assert client.is_model_ready("tiny")
    assert client.is_model_ready("tiny", model_version="1")
    assert not client.is_model_ready("tiny", model_version="2")
    assert not client.is_model_ready("no-such-model")


def test_load_and_unload_are_refused_with_an_explanation(client):
    error = error_of(lambda: client.load_model("tiny"))
    assert error.status() == "400" and "model server" in error.message()
    error = error_of(lambda: client.unload_model("tiny"))
    assert error.status() == "400" and "model server" in error.message()
    assert client.is_model_ready("tiny")  # and nothing was unloaded


# --- inference ---------------------------------------------------------------------------------------

def test_a_batch_of_encoded_images_in_binary(client, tiny_model):
    files = [png_bytes(seed, size=(30 + 7 * seed, 50 - 3 * seed)) for seed in range(3)]
    result = client.infer("tiny", [files_input(files)], request_id="batch-1")
    probabilities = result.as_numpy("probabilities")
    assert probabilities.dtype == np.float32 and probabilities.shape == (3, 5)
    np.testing.assert_allclose(probabilities, expected(tiny_model, files), atol=1e-6)
    response = result.get_response()
    assert response["id"] == "batch-1" and response["model_name"] == "tiny" and response["model_version"] == "1"
    assert response["outputs"][0]["parameters"]["binary_data_size"] == 3 * 5 * 4


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_classification_extension(client, tiny_model, binary):
    files = [png_bytes(10), png_bytes(11)]
    output = httpclient.InferRequestedOutput("probabilities", binary_data=binary, class_count=3)
    result = client.infer("tiny", [files_input(files)], model_version="1", outputs=[output])
    classes = result.as_numpy("probabilities")
    assert classes.shape == (2, 3)
    assert result.get_output("probabilities")["datatype"] == "BYTES"
    for row, model_row in zip(classes, expected(tiny_model, files)):
        top = np.argsort(-model_row)[:3]
        parsed = [(element.decode() if isinstance(element, bytes) else element).split(":", 2) for element in row]
        assert [int(index) for _, index, _ in parsed] == top.tolist()
        assert [label for _, _, label in parsed] == [LABELS[i] for i in top]
        np.testing.assert_allclose([float(score) for score, _, _ in parsed], model_row[top], atol=1e-6)


def test_pixels_as_a_json_tensor_and_json_output(client, tiny_model):
    pixels = np.random.default_rng(3).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    output = httpclient.InferRequestedOutput("probabilities", binary_data=False)
    result = client.infer("tiny", [pixels_input(pixels, binary=False)], outputs=[output])
    assert "parameters" not in result.get_output("probabilities")  # the data came in the JSON
    np.testing.assert_allclose(result.as_numpy("probabilities"), tiny_model.predict(pixels), atol=1e-6)


def test_fp32_pixels_are_rounded_to_the_queues_uint8(client, tiny_model):
    pixels = np.random.default_rng(4).integers(0, 256, (1, 32, 32, 3), dtype=np.uint8)
    nudged = pixels.astype(np.float32) + np.float32(0.3) * (pixels < 255)
    result = client.infer("tiny", [pixels_input(nudged, "FP32")])
    np.testing.assert_allclose(result.as_numpy("probabilities"), tiny_model.predict(pixels), atol=1e-6)


REPOSITORY_CONFIG = """{
  "input": {"height": 32, "width": 32},
  "preprocessing": {"resize": "squash", "interpolation": "bilinear", "normalization": "unit"},
  "labels": "labels.txt",
  "batching": {"max_batch_size": 4, "max_wait_ms": 10}
}
"""


def test_every_image_of_a_batch_is_a_job_on_its_models_queue(tmp_path, tiny_model_files):
    # Two models served, so "the same queue" is a choice: every image of a request to `other`
    # must be queued for `other`, none for `tiny`, and be answered from there.
    root = tmp_path / "repository"
    for name in ("tiny", "other"):
        (root / name / "1").mkdir(parents=True)
        shutil.copy(tiny_model_files["MODEL"], root / name / "1" / "model.keras")
        shutil.copy(tiny_model_files["MODEL_LABELS"], root / name / "labels.txt")
        (root / name / "config.json").write_text(REPOSITORY_CONFIG)
    stack = Stack(tmp_path, {"MODEL_REPOSITORY": str(root), "MODEL": "tiny,other", "DEFAULT_MODEL": "tiny",
                             "KEY_PREFIX": "v2-queues", "QUEUE_BLOCK_MS": 200, "REQUEST_TIMEOUT": 30,
                             "WSGI_PROCESSES": 1, "WSGI_THREADS": 4})
    try:
        stack.start()
        queues = {name: stack.queue().for_model(name, "1") for name in ("tiny", "other")}
        files = [png_bytes(seed) for seed in range(6)]
        answers: list = []
        client = httpclient.InferenceServerClient(stack.url.removeprefix("http://"), network_timeout=60)
        sender = threading.Thread(target=lambda: answers.append(client.infer("other", [files_input(files)])))
        stack.signal("model_server", signal.SIGSTOP)  # the jobs stay in their queues to be looked at
        try:
            sender.start()
            wait_until(lambda: queues["other"].length() == 6, 20, "the request's 6 images in other's queue")
            assert queues["tiny"].length() == 0
        finally:
            stack.signal("model_server", signal.SIGCONT)
            sender.join(60)
            client.close()
        [result] = answers
        assert result.get_response()["model_name"] == "other" and result.as_numpy("probabilities").shape == (6, 5)
    finally:
        stack.stop()


# --- errors --------------------------------------------------------------------------------------------

def test_unknown_model_and_version(client):
    error = error_of(lambda: client.infer("resnet", [files_input([png_bytes(1)])]))
    assert error.status() == "404" and "Served models: tiny" in error.message()
    error = error_of(lambda: client.infer("tiny", [files_input([png_bytes(1)])], model_version="7"))
    assert error.status() == "404" and "Served versions: 1" in error.message()
    assert error_of(lambda: client.get_model_metadata("resnet")).status() == "404"


@pytest.mark.parametrize("shape", [(1, 16, 16, 3), (1, 32, 32, 1), (32, 32, 3)])
def test_pixels_of_the_wrong_shape(client, shape):
    pixels = np.zeros(shape, dtype=np.uint8)
    error = error_of(lambda: client.infer("tiny", [pixels_input(pixels)]))
    assert error.status() == "400" and "[N, 32, 32, 3]" in error.message()


@pytest.mark.parametrize("name, datatype, dtype", [("pixels", "INT32", np.int32), ("pixels", "FP64", np.float64),
                                                   ("image", "UINT8", np.uint8)])
def test_wrong_datatypes(client, name, datatype, dtype):
    tensor = httpclient.InferInput(name, [1, 32, 32, 3], datatype)
    tensor.set_data_from_numpy(np.zeros((1, 32, 32, 3), dtype=dtype))
    error = error_of(lambda: client.infer("tiny", [tensor]))
    assert error.status() == "400" and "datatype" in error.message()


def test_unknown_input_and_output_names(client):
    tensor = httpclient.InferInput("input0", [1], "BYTES")
    tensor.set_data_from_numpy(np.array([png_bytes(1)], dtype=np.object_))
    assert "Unknown input 'input0'" in error_of(lambda: client.infer("tiny", [tensor])).message()
    output = httpclient.InferRequestedOutput("logits")
    error = error_of(lambda: client.infer("tiny", [files_input([png_bytes(1)])], outputs=[output]))
    assert error.status() == "400" and "'probabilities'" in error.message()


def test_fp32_pixels_out_of_range(client):
    for bad in (300.0, -1.0, np.nan):
        pixels = np.full((1, 32, 32, 3), 128, np.float32)
        pixels[0, 5, 5, 1] = bad
        error = error_of(lambda: client.infer("tiny", [pixels_input(pixels, "FP32")]))
        assert error.status() == "400" and "0 to 255" in error.message()


def test_a_file_that_is_not_an_image(client):
    files = [png_bytes(1), b"just some text, not a picture"]
    error = error_of(lambda: client.infer("tiny", [files_input(files)]))
    assert error.status() == "400"
    assert "element 1" in error.message() and "not an image" in error.message()


def test_classification_beyond_the_models_classes(client):
    output = httpclient.InferRequestedOutput("probabilities", class_count=6)
    error = error_of(lambda: client.infer("tiny", [files_input([png_bytes(1)])], outputs=[output]))
    assert error.status() == "400" and "5 classes" in error.message()


def post_infer(stack: Stack, body: bytes, header_length: int | None = None) -> requests.Response:
    headers = {} if header_length is None else {"Inference-Header-Content-Length": str(header_length)}
    return requests.post(f"{stack.url}/v2/models/tiny/infer", data=body, headers=headers, timeout=30)


def binary_request(files: list[bytes], declared_size: int | None = None, mangle=lambda blob: blob):
    blob = mangle(b"".join(struct.pack("<I", len(data)) + data for data in files))
    header = json.dumps({"inputs": [{"name": "image", "shape": [len(files)], "datatype": "BYTES",
                                     "parameters": {"binary_data_size": declared_size or len(blob)}}]}).encode()
    return header + blob, len(header)


@pytest.mark.parametrize("case", ["length prefix past the end", "size mismatch", "header length too long",
                                  "not json", "json array", "raw binary", "two inputs", "no data",
                                  "nested too deep", "json nested beyond the parser", "batch beyond the queue"])
def test_malformed_requests_get_400_with_an_error_object(stack, case):
    files = [png_bytes(1), png_bytes(2)]
    if case == "length prefix past the end":
        body, length = binary_request(files, mangle=lambda blob: blob[:-10])
    elif case == "size mismatch":
        body, length = binary_request(files, declared_size=99)
    elif case == "header length too long":
        body, _ = binary_request(files)
        length = len(body) + 1
    elif case == "not json":
        body, length = b"{inputs: nope", None
    elif case == "json array":
        body, length = b"[1, 2]", None
    elif case == "raw binary":
        body, length = files[0], 0
    elif case == "two inputs":
        tensor = {"name": "pixels", "shape": [1, 32, 32, 3], "datatype": "UINT8", "data": [0] * 3072}
        body, length = json.dumps({"inputs": [tensor, tensor]}).encode(), None
    elif case == "no data":
        body, length = json.dumps({"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES"}]}).encode(), None
    elif case == "nested too deep":
        tensor = {"name": "image", "shape": [1], "datatype": "BYTES", "data": [[[[[[[[[[["x"]]]]]]]]]]]}
        body, length = json.dumps({"inputs": [tensor]}).encode(), None
    elif case == "json nested beyond the parser":
        body, length = b'{"inputs": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", None
    else:
        body, length = binary_request([png_bytes(seed) for seed in range(MAX_QUEUE + 1)])
    response = post_infer(stack, body, length)
    assert response.status_code == 400, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    assert set(response.json()) == {"error"} and response.json()["error"]


def test_a_hand_made_binary_request_without_content_type(stack, tiny_model):
    body, length = binary_request([png_bytes(5)])
    response = post_infer(stack, body, length)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == "application/json"  # no output asked for binary
    got = np.asarray(response.json()["outputs"][0]["data"], dtype=np.float32)
    np.testing.assert_allclose(got, expected(tiny_model, [png_bytes(5)])[0], atol=1e-6)


def test_too_large_a_request_is_413(stack):
    response = post_infer(stack, b"{" + b" " * 2_100_000 + b"}")
    assert response.status_code == 413
    assert "error" in response.json()


# --- deadline and overload, as /predict (last: they stop the model server for a moment) ---------------

def test_deadline_then_full_queue_answer_504_then_503(client, stack):
    os.killpg(stack.model_server.pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        # The client's own deadline (microseconds), shorter than REQUEST_TIMEOUT.
        error = error_of(lambda: client.infer("tiny", [files_input([png_bytes(1)])], timeout=500_000))
        assert error.status() == "504" and time.monotonic() - started < 3

        queue = redis.Redis.from_url(stack.redis.url)
        queue_key = stack.model_queue().stream
        fillers = []
        while queue.xlen(queue_key) < MAX_QUEUE:
            fillers.append(queue.xadd(queue_key, {"v": "1", "id": "filler"}))
        body, length = binary_request([png_bytes(2)])
        full = post_infer(stack, body, length)
        assert full.status_code == 503 and full.headers["Retry-After"] == "1"
        assert "queue is full" in full.json()["error"]
        queue.xdel(queue_key, *fillers)
    finally:
        os.killpg(stack.model_server.pid, signal.SIGCONT)
    assert client.infer("tiny", [files_input([png_bytes(3)])]).as_numpy("probabilities").shape == (1, 5)

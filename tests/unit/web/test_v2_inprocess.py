"""The v2 routes' pieces without Apache: the job's full_output flag on the wire, the model
server's full answer, and the Flask app against real Redis and an in-process model server."""
from __future__ import annotations

import io
import json
import struct
import time

import numpy as np
from PIL import Image

from keras_rest_api.imaging.decode import decode_image
from keras_rest_api.queue.records import Job, Prediction, Result


def test_full_output_travels_with_the_job_and_brings_back_class_indices():
    pixels = np.zeros((4, 4, 3), dtype=np.uint8)
    full = Job(id="b" * 32, pixels=pixels, top_k=5, deadline=time.time() + 5, full_output=True)
    assert Job.from_redis({k.encode(): v for k, v in full.to_redis().items()}).full_output is True
    answer = Result.ok([Prediction("cat", 0.75, 3)], {}, probabilities=[0.1, 0.05, 0.1, 0.75])
    back = Result.from_redis(answer.to_redis())
    assert back.predictions[0].index == 3 and back.probabilities == [0.1, 0.05, 0.1, 0.75]
    # /predict's answers are unchanged: no index in the tutorial's JSON.
    assert back.as_response()["predictions"] == [{"label": "cat", "probability": 0.75}]
    plain = Result.from_redis(Result.ok([Prediction("cat", 0.75)], {}).to_redis())
    assert plain.predictions[0].index is None


def png(seed: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (20, 30, 3), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def test_infer_in_process_returns_the_models_probabilities_and_classes(client, model_server, tiny_model):
    files = [png(1), png(2)]
    blob = b"".join(struct.pack("<I", len(data)) + data for data in files)
    header = json.dumps({"id": "x", "inputs": [{"name": "image", "shape": [2], "datatype": "BYTES",
                                                "parameters": {"binary_data_size": len(blob)}}],
                         "outputs": [{"name": "probabilities"},
                                     {"name": "probabilities", "parameters": {"classification": 2}}]}).encode()
    response = client.post("/v2/models/tiny/infer", data=header + blob,
                           headers={"Inference-Header-Content-Length": str(len(header))})
    assert response.status_code == 200, response.get_data(as_text=True)
    body = response.get_json()
    assert body["id"] == "x"
    expected = tiny_model.predict(np.stack([decode_image(data, (32, 32), 10**7) for data in files]))
    np.testing.assert_allclose(np.asarray(body["outputs"][0]["data"]).reshape(2, 5), expected, atol=1e-6)
    top = np.argsort(-expected[0])[:2]
    assert [int(e.split(":")[1]) for e in body["outputs"][1]["data"][:2]] == top.tolist()


def test_without_a_model_server_v2_is_not_ready_and_infer_is_503(client, redis_client):
    assert client.get("/v2/health/live").status_code == 200
    assert client.get("/v2/health/ready").status_code == 503
    assert client.post("/v2/repository/index").get_json() == []
    response = client.post("/v2/models/tiny/infer", data=b"{}")
    assert response.status_code == 503 and response.headers["Retry-After"] == "1"
    assert set(response.get_json()) == {"error"}

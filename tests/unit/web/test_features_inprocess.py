"""A features model through the Flask app, real Redis and an in-process model server: JSON
instances in, field errors listed per instance, the v2 tensors, and the answers of the model."""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest

from keras_rest_api.model_server import ModelServer
from keras_rest_api.models import open_repository
from tests.support.features_model import churn_row, write_churn_model
from tests.support.web_fixtures import make_queue

GOOD = {"age": 50, "income": 200, "region": "south", "plan": "gold"}


@pytest.fixture(scope="module")
def churn_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("repository")
    write_churn_model(root)
    return root


@pytest.fixture()
def churn(churn_repository: Path, web_config: dict[str, Any]):
    return open_repository({**web_config, "MODEL_REPOSITORY": str(churn_repository)}).load("churn", "1")


@pytest.fixture()
def features_server(model_server_web_config, churn, redis_client) -> Iterator[ModelServer]:
    """The churn model served by a real ModelServer, connected as the model server's ACL user."""
    server = ModelServer(make_queue(model_server_web_config), churn, model_server_web_config)
    server.warm_up()
    server.announce()
    thread = threading.Thread(target=server.run, name="model-server", daemon=True)
    thread.start()
    yield server
    server.stop()
    thread.join(timeout=10)


def expected_probability(churn, instance: dict[str, Any]) -> float:
    return float(churn.predict(churn_row(instance))[0, 0])


def test_one_object_is_answered_with_the_probability_of_the_positive_class(client, features_server, churn):
    response = client.post("/models/churn/predict", json=GOOD)
    assert response.status_code == 200, response.get_data(as_text=True)
    body = response.get_json()
    assert body["success"] is True and body["model"] == "churn" and body["version"] == "1"
    (prediction,) = body["predictions"]
    assert prediction["label"] == "churn"
    assert prediction["probability"] == pytest.approx(expected_probability(churn, GOOD), abs=1e-6)


def test_the_default_model_route_takes_json_when_the_default_model_takes_features(client, features_server):
    response = client.post("/predict", json=GOOD)
    assert response.status_code == 200 and response.get_json()["predictions"][0]["label"] == "churn"


def test_instances_are_answered_in_order_with_defaults_and_the_unknown_bucket(client, features_server, churn):
    instances = [{**GOOD, "age": age, "region": region} for age, region in ((20, "north"), (70, "east"), (45, "south"))]
    del instances[1]["income"]  # the default stands in
    response = client.post("/models/churn/predict", json={"instances": instances})
    assert response.status_code == 200, response.get_data(as_text=True)
    answers = response.get_json()["predictions"]
    assert [a[0]["probability"] for a in answers] == pytest.approx(
        [expected_probability(churn, i) for i in instances], abs=1e-6)


def test_every_field_error_of_every_instance_comes_back_in_one_400(client, features_server):
    instances = [GOOD, {"income": 1, "region": "north", "plan": "gold"},          # 1: age missing
                 {**GOOD, "age": "fifty"},                                          # 2: wrong type
                 {**GOOD, "age": 130, "income": -5},                               # 3: two out of range
                 {**GOOD, "plan": "platinum"},                                     # 4: unknown category
                 {**GOOD, "agee": 3},                                               # 5: unknown field
                 "not an object"]                                                   # 6
    response = client.post("/models/churn/predict", json={"instances": instances})
    assert response.status_code == 400
    body = response.get_json()
    assert body["success"] is False and "field error" in body["error"]
    found = {(e["instance"], e["field"], e["problem"]) for e in body["errors"]}
    assert found == {(1, "age", "missing"), (2, "age", "wrong_type"), (3, "age", "out_of_range"),
                     (3, "income", "out_of_range"), (4, "plan", "unknown_category"), (5, "agee", "unknown_field"),
                     (6, None, "not_an_object")}
    assert all(e["message"] for e in body["errors"])


def test_a_value_that_is_not_finite_is_a_field_error(client, features_server):
    response = client.post("/models/churn/predict", data='{"age": NaN, "region": "north", "plan": "gold"}',
                           content_type="application/json")
    assert response.status_code == 400
    assert [(e["field"], e["problem"]) for e in response.get_json()["errors"]] == [("age", "not_finite")]


def test_bodies_that_are_not_instances_are_refused_clearly(make_client, features_server):
    client = make_client(MAX_INSTANCES=3, MAX_JSON_BYTES=300)
    assert client.post("/models/churn/predict", data="{", content_type="application/json").status_code == 400
    assert client.post("/models/churn/predict", json=[1, 2]).status_code == 400
    assert client.post("/models/churn/predict", json={"instances": []}).status_code == 400
    too_many = client.post("/models/churn/predict", json={"instances": [GOOD] * 4})
    assert too_many.status_code == 413 and "MAX_INSTANCES=3" in too_many.get_json()["error"]
    too_big = client.post("/models/churn/predict", json={"instances": [GOOD, {**GOOD, "x" * 300: 1}]})
    assert too_big.status_code == 413 and "MAX_JSON_BYTES" in too_big.get_json()["error"]
    upload = client.post("/models/churn/predict", data=b"\x89PNG...", content_type="image/png")
    assert upload.status_code == 415 and "application/json" in upload.get_json()["error"]


def test_v2_takes_one_fp32_tensor_in_contract_order(client, features_server, churn):
    rows = [[50, 200, 1, 1], [20, 500, 0, 0]]
    response = client.post("/v2/models/churn/infer", json={
        "inputs": [{"name": "features", "datatype": "FP32", "shape": [2, 4], "data": rows}]})
    assert response.status_code == 200, response.get_data(as_text=True)
    (output,) = response.get_json()["outputs"]
    assert output["name"] == "probability" and output["shape"] == [2, 1]
    np.testing.assert_allclose(output["data"], churn.predict(np.array(rows, dtype=np.float64))[:, 0], atol=1e-6)


def test_v2_takes_one_named_input_per_feature_with_bytes_for_categories(client, features_server, churn):
    response = client.post("/v2/models/churn/infer", json={"inputs": [
        {"name": "age", "datatype": "FP32", "shape": [1, 1], "data": [50]},
        {"name": "region", "datatype": "BYTES", "shape": [1, 1], "data": ["south"]},
        {"name": "plan", "datatype": "BYTES", "shape": [1], "data": ["gold"]}]})
    assert response.status_code == 200, response.get_data(as_text=True)
    without_income = {"age": 50, "region": "south", "plan": "gold"}  # its default, 500, stands in
    assert response.get_json()["outputs"][0]["data"][0] == pytest.approx(expected_probability(churn, without_income),
                                                                       abs=1e-6)
    bad = client.post("/v2/models/churn/infer", json={"inputs": [
        {"name": "age", "datatype": "FP32", "shape": [1], "data": [50]},
        {"name": "plan", "datatype": "BYTES", "shape": [1], "data": ["silver"]}]})
    assert bad.status_code == 400
    assert [(e["field"], e["problem"]) for e in bad.get_json()["errors"]] == [("region", "missing"),
                                                                              ("plan", "unknown_category")]


def test_v2_metadata_describes_the_features(client, features_server):
    body = client.get("/v2/models/churn").get_json()
    assert [i["name"] for i in body["inputs"]] == ["features", "age", "income", "region", "plan"]
    assert body["inputs"][0]["shape"] == [-1, 4] and body["inputs"][3]["datatype"] == "BYTES"
    assert body["outputs"] == [{"name": "probability", "datatype": "FP32", "shape": [-1, 1]}]


def test_the_openapi_document_holds_each_features_models_request_schema(client, features_server):
    spec = client.get("/openapi.json").get_json()
    operation = spec["paths"]["/models/churn/predict"]["post"]
    single, batch = operation["requestBody"]["content"]["application/json"]["schema"]["oneOf"]
    assert list(single["properties"]) == ["age", "income", "region", "plan"]
    assert single["required"] == ["age", "region", "plan"]
    assert single["properties"]["plan"]["enum"] == ["basic", "gold"]
    assert single["properties"]["age"]["minimum"] == 0 and single["properties"]["age"]["maximum"] == 120
    assert batch["properties"]["instances"]["items"] == single
    # The default model takes features: /predict documents the same body.
    assert spec["paths"]["/predict"]["post"] == operation

"""A features model in the model server against a real Redis: rows batched beyond BATCH_SIZE, each
answered as its output kind says, and every queued row checked against the contract again (a
record in Redis may be forged, or the model may have changed since the web tier looked)."""
from __future__ import annotations

import time

import numpy as np
import pytest

from keras_rest_api.model_server import ModelServer
from keras_rest_api.models import open_repository
from keras_rest_api.queue.jobs import JobQueue
from keras_rest_api.queue.records import NO_PIXELS, Job
from tests.support.features_model import churn_row, write_churn_model
from tests.support.harness import tier_queue


@pytest.fixture(scope="module")
def churn(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("repository")
    write_churn_model(root)
    return open_repository({"MODEL_REPOSITORY": str(root), "BATCH_SIZE": 4, "BATCH_WAIT_MS": 0,
                            "FEATURES_BATCH_SIZE": 256, "MODEL_PRECISION": "float32"}).load("churn", "1")


@pytest.fixture()
def queue(model_server_config, redis_client) -> JobQueue:
    """The churn queue as the model server's ACL user sees it."""
    q = tier_queue(model_server_config, "churn")
    q.ensure_group()
    return q


@pytest.fixture()
def web(config, queue) -> JobQueue:
    """The same queue as the web tier's ACL user: it submits and waits for answers."""
    return tier_queue(config, "churn")


@pytest.fixture()
def server(queue, churn, model_server_config) -> ModelServer:
    return ModelServer(queue, churn, {**model_server_config, "BATCH_SIZE": 4, "BATCH_WAIT_MS": 0, "QUEUE_BLOCK_MS": 200,
                                      "CLAIM_IDLE_MS": 1000, "MAX_DELIVERIES": 2}, name="ms-features")


def row_job(n: int, row: list[float]) -> Job:
    return Job(id=f"row-{n}", pixels=NO_PIXELS, features=np.array(row, dtype=np.float64), top_k=1,
               deadline=time.time() + 10)


def test_rows_are_batched_past_batch_size_and_answered_with_the_positive_class(web, server, churn):
    rows = [[20 + n, 500, n % 3, n % 2] for n in range(20)]
    for n, row in enumerate(rows):
        web.submit(row_job(n, row), max_length=100)
    server.run(burst=True)
    expected = churn.predict(np.array(rows, dtype=np.float64))[:, 0]
    for n in range(20):
        result = web.wait_result(f"row-{n}", timeout=1)
        assert result.success and result.predictions[0].label == "churn"
        assert result.predictions[0].probability == pytest.approx(float(expected[n]), abs=1e-6)
    assert server.batch_sizes == {20: 1}  # one batch: the contract's 64, not the server's BATCH_SIZE of 4


@pytest.mark.parametrize("row, problem", [
    ([130, 500, 0, 0], "feature 'age': 130 is outside the accepted range [0, 120]"),
    ([50, 500, 3, 0], "feature 'region': category index 3 is outside 0..2"),
    ([50, 500, 0, 0.5], "feature 'plan': category index 0.5 is outside 0..1"),
    ([50, 500, 0], "the row has 3 values but model churn takes 4 features"),
])
def test_a_row_that_does_not_fit_the_contract_is_answered_400_and_the_batch_goes_on(web, server, row, problem):
    web.submit(row_job(0, row), max_length=100)
    web.submit(row_job(1, [50, 500, 0, 0]), max_length=100)
    server.run(burst=True)
    refused = web.wait_result("row-0", timeout=1)
    assert refused.success is False and refused.status == 400 and problem in refused.error
    assert web.wait_result("row-1", timeout=1).success is True


def test_an_image_job_on_a_features_models_queue_is_answered_503(web, server):
    image = Job(id="image-0", pixels=np.zeros((1, 1, 3), dtype=np.uint8), top_k=1, deadline=time.time() + 10)
    web.submit(image, max_length=100)
    server.run(burst=True)
    answer = web.wait_result("image-0", timeout=1)
    assert answer.success is False and answer.status == 503 and "another kind of model" in answer.error


def test_the_churn_row_helper_matches_the_web_tiers_rows(churn):
    # The tests' expected answers rest on it: a category as its index, the bucket last, the default filled in.
    assert churn_row({"age": 1, "region": "east", "plan": "gold"}).tolist() == [[1, 500, 2, 1]]

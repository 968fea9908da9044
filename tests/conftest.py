"""Shared fixtures: a real Redis on a free loopback port, settings for tests, a tiny Keras model."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterator

import pytest
import redis

from keras_rest_api import settings
from keras_rest_api.queue import redis_users
from tests.support.harness import RedisServer

pytest_plugins = ["tests.support.web_fixtures"]

# The key prefix of the in-process tests: the tiers' ACL users (keras_rest_api/queue/redis_users.py)
# may touch only keys under the prefix they were made for. Each test starts on an emptied database.
TEST_PREFIX = "test"


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"), prefix=TEST_PREFIX, queue_name=settings.QUEUE_NAME)
    server.start()
    yield server
    server.stop()


@pytest.fixture()
def redis_client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_server.url)
    client.flushdb()
    yield client
    client.close()


@pytest.fixture()
def config(redis_server: RedisServer, redis_client: redis.Redis) -> dict[str, Any]:
    """The web tier's settings, pointed at the test Redis (emptied by `redis_client`) as the web
    tier's own ACL user, so a command that user is denied fails here as it would in production.
    The model server's: `model_server_config`. The tests inspect Redis through `redis_client`."""
    values = settings.load()
    values.update(
        **redis_server.settings_for(redis_users.WEB),
        KEY_PREFIX=TEST_PREFIX,
        REQUEST_TIMEOUT=10.0,
        TESTING=True,
    )
    return values


@pytest.fixture()
def model_server_config(config: dict[str, Any], redis_server: RedisServer) -> dict[str, Any]:
    """`config` as the model server's ACL user."""
    return {**config, **redis_server.settings_for(redis_users.MODEL_SERVER)}


@pytest.fixture(scope="session")
def tiny_model_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A small Keras image classifier (32x32 RGB, 5 classes) saved as .keras with its labels."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    directory = tmp_path_factory.mktemp("tiny_model")
    keras.utils.set_random_seed(7)
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(8, 3, activation="relu")(inputs)
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    # A wide dense layer so different images give clearly different probabilities.
    outputs = keras.layers.Dense(5, activation="softmax", kernel_initializer=keras.initializers.RandomNormal(stddev=2.0))(x)
    model = keras.Model(inputs, outputs)
    path = directory / "tiny.keras"
    model.save(path)
    labels = directory / "labels.txt"
    labels.write_text("\n".join(["cat", "dog", "fish", "bird", "horse"]) + "\n")
    return {"MODEL": str(path), "MODEL_LABELS": str(labels), "MODEL_PREPROCESSING": "unit"}


@pytest.fixture(scope="session")
def tiny_model(tiny_model_files: dict[str, str]):
    """The tiny model loaded through the same interface the model server uses."""
    import numpy as np

    from keras_rest_api.models import load_model
    from keras_rest_api.models.backends import warm_up_sizes

    model = load_model(tiny_model_files)
    # Traced/compiled for every batch size the tests form (at most 8), as the model server's
    # warm-up does: under JAX a first compile takes longer than the tests' 100 ms CLAIM_IDLE_MS.
    for size in warm_up_sizes(8):
        model.predict(np.zeros((size, *model.input_size, 3), np.uint8))
    return model


@pytest.fixture(scope="session")
def slow_model_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A model heavy enough (tens of ms a batch on a CPU) that a flood keeps batches in flight."""
    import keras

    directory = tmp_path_factory.mktemp("slow_model")
    keras.utils.set_random_seed(3)
    inputs = keras.Input((128, 128, 3))
    x = inputs
    for filters in (32, 64, 64):
        x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(4, activation="softmax")(x)
    path = directory / "slow.keras"
    keras.Model(inputs, outputs).save(path)
    labels = directory / "labels.txt"
    labels.write_text("north\nsouth\neast\nwest\n")
    return {"MODEL": str(path), "MODEL_LABELS": str(labels)}


@pytest.fixture()
def image_file(tmp_path: Path) -> Path:
    """A 320x240 JPEG upload of random pixels, for the load generators."""
    import numpy as np
    from PIL import Image

    path = tmp_path / "photo.jpg"
    pixels = np.random.default_rng(0).integers(0, 256, (240, 320, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, "JPEG")
    return path

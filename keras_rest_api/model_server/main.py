"""The model server: loads the model once, classifies queued images in batches, answers each one.

Run it as a daemon: `python run_model_server.py` in a checkout, or the `keras-model-server`
command where the package is installed. Several may share one Redis (one per GPU,
several machines): the consumer group gives each queued image to exactly one of them, and an
image claimed by a server that died is taken over by another once it has been idle for
CLAIM_IDLE_MS.

A batch runs when it is full (BATCH_SIZE) or when BATCH_WAIT_MS has passed since its first
image arrived, whichever comes first. Every wait is a blocking Redis call with a timeout.
"""
from __future__ import annotations

import logging
import os
import signal
import sys
import time
from typing import Any, Mapping

import redis

from keras_rest_api import models, settings
from keras_rest_api.models.backends import backend as keras_backend
from keras_rest_api.model_server.server import BACKOFF_FIRST, BACKOFF_MAX, ModelServer
from keras_rest_api.model_server.versions import NoModelLoaded, RepositorySource
from keras_rest_api.queue.jobs import queue_from_settings
from keras_rest_api.queue.redis_users import RedisSecurityError, redact_url

__all__ = ["build_server", "describe_device", "main", "wait_for_redis"]

log = logging.getLogger("model_server")


def describe_device() -> str:
    """Where Keras runs the model: a GPU when the backend sees one, else the CPU.

    Prefixed with the backend Keras itself reports (not KERAS_BACKEND, which Keras may not have
    honoured), so the heartbeat says which backend really runs.
    """
    backend = keras_backend()
    try:
        if backend == "tensorflow":
            import tensorflow as tf

            gpus = tf.config.list_physical_devices("GPU")
            return f"tensorflow:{gpus[0].name}" if gpus else "tensorflow:CPU"
        if backend == "jax":
            import jax

            return f"jax:{jax.devices()[0]}"
        if backend == "torch":
            import torch

            return f"torch:cuda:{torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else "torch:CPU"
    except Exception as exc:  # describing the device must never stop the server
        log.debug("could not describe the device: %s", exc)
    return f"{backend}:unknown"


def build_server(config: Mapping[str, Any]) -> ModelServer:
    """Load the configured models and connect to Redis, waiting (with backoff) for Redis to answer.

    MODEL names the models to serve from the model repository (comma-separated), or is the path
    of one saved .keras file (served as its only version, with MODEL_LABELS and MODEL_PREPROCESSING).
    """
    queue = queue_from_settings(config, read_timeout=config["QUEUE_BLOCK_MS"] / 1000 + 5.0)
    spec = str(config["MODEL"])
    unload = models.unload
    if spec.endswith(".keras") or os.path.sep in spec:
        model = models.load_model(config)
        wait_for_redis(queue, config)
        return ModelServer(queue, model, config, device=describe_device(), unload=unload)
    repository = models.open_repository(config)
    sources = [RepositorySource(repository, name.strip()) for name in spec.split(",") if name.strip()]
    wait_for_redis(queue, config)
    server = ModelServer(queue, sources, config, device=describe_device(), unload=unload)
    server.start()
    return server


def wait_for_redis(queue: Any, config: Mapping[str, Any]) -> None:
    """Return once Redis answers, retrying with backoff: the model server may start before Redis."""
    delay = BACKOFF_FIRST
    while True:
        try:
            queue.redis.ping()
            return
        except (redis.AuthenticationError, redis.ResponseError) as exc:  # retrying would not help: say so, stop
            raise RedisSecurityError(f"Redis at {redact_url(config['REDIS_URL'])} refused the user "
                                     f"{config.get('REDIS_USERNAME') or '(none)'} ({exc}). Check "
                                     "REDIS_USERNAME and REDIS_PASSWORD_FILE.") from None
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            log.warning("Redis unreachable (%s); retrying in %.1f s", exc, delay)
            time.sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX)


def main() -> int:
    """The daemon: settings from the environment, then serve until SIGTERM or SIGINT."""
    config = settings.start(log)
    if config is None:
        return 2
    try:
        server = build_server(config)
    except (models.ModelLoadError, NoModelLoaded, RedisSecurityError) as exc:
        log.error("cannot start: %s", exc)
        return 2
    signal.signal(signal.SIGTERM, server.stop)
    signal.signal(signal.SIGINT, server.stop)
    server.warm_up()
    server.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())

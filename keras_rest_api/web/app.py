"""The web tier's app factory: a Flask app that validates uploads, queues them and waits for
their answers.

Apache loads it through `keras_rest_api_app.wsgi`; `keras-web-dev-server` (web.devserver) serves
it on gevent for development. It never imports TensorFlow or Keras: it learns each model's
contract from the model servers' heartbeats in Redis.
"""
from __future__ import annotations

import time
from typing import Any, Mapping

from flask import Flask, Response, current_app, g, request

from keras_rest_api.ids import is_valid_request_id, new_request_id
from keras_rest_api.imaging.budget import DecodeBudget, set_malloc_policy
from keras_rest_api.queue.jobs import queue_from_settings
from keras_rest_api.web import auth, errors, multipart, page, v2
from keras_rest_api.web.dataplane import DataPlane
from keras_rest_api.web.limits import refuse_unparsed_bodies
from keras_rest_api.web.metrics import WebMetrics
from keras_rest_api.web.predict import PredictEndpoints
from keras_rest_api.web.served import ServedModels

# A Redis read may block for the whole request timeout (BLPOP); allow that plus this margin.
_READ_TIMEOUT_MARGIN = 5.0


def create_app(settings: Mapping[str, Any]) -> Flask:
    """The app for `settings`: every setting by name, as the entry point's
    `keras_rest_api.settings.load()` gives them (tests pass their own)."""
    app = Flask(__name__, static_folder=None)  # the pages' files are web.page's, under /ui
    app.config.update(settings)
    config = app.config
    config["MAX_CONTENT_LENGTH"] = config["MAX_UPLOAD_BYTES"]
    app.json.sort_keys = False  # type: ignore[attr-defined]
    multipart.install()  # no per-request regex compiles in multipart parsing (~0.4 ms of CPU)
    # One per process: every decode of this process (v1 and v2 routes) reserves its bytes here.
    set_malloc_policy(config["MALLOC_KEEP_BYTES"])

    queue = queue_from_settings(config, read_timeout=config["REQUEST_TIMEOUT"] + _READ_TIMEOUT_MARGIN)
    served = ServedModels(queue, config["HEARTBEAT_TTL"], config["METADATA_CACHE_SECONDS"], config["DEFAULT_MODEL"])
    budget = DecodeBudget(config["DECODE_MEMORY_BUDGET"], config["DECODE_WAIT_MS"] / 1000,
                          config["RETRY_AFTER_SECONDS"])
    plane = DataPlane(queue, served, budget, config)
    metrics = WebMetrics(str(config.get("METRICS_DIR") or ""))
    # What the hooks and the error table reach through the app (v2.register adds the data plane).
    app.extensions.update(served=served, decode_budget=budget, metrics=metrics)

    app.before_request(_start_request)
    app.after_request(_tag_response)
    PredictEndpoints(plane, metrics, config).register(app)
    auth.install(app)  # after the request id is set; answers 401 before any route runs
    # After the key check: a caller without a key learns nothing about bodies (401, not 415).
    app.before_request(refuse_unparsed_bodies)
    errors.register(app)
    v2.register(app, plane)
    page.register(app)
    return app


def _start_request() -> None:
    supplied = request.headers.get("X-Request-ID", "")
    g.request_id = supplied if is_valid_request_id(supplied) else new_request_id()
    g.started = time.perf_counter()


def _tag_response(response: Response) -> Response:
    response.headers["X-Request-ID"] = g.get("request_id", "")
    # The route's pattern, not the path: /result/<job_id> is one series, not one per job.
    endpoint = request.url_rule.rule if request.url_rule is not None else "unmatched"
    current_app.extensions["metrics"].observe_request(endpoint, request.method, response.status_code,
                                                     time.perf_counter() - g.started)
    return response

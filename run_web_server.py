"""The web tier: a Flask app that validates uploads, queues them and waits for their answers.

Apache loads it through `keras_rest_api_app.wsgi`. Run as a script, it serves the same app on
gevent's WSGI server for development: `python run_web_server.py`.

It never imports TensorFlow or Keras: it learns the model's input size from the model
servers' heartbeats in Redis.
"""
if __name__ == "__main__":
    # Cooperative sockets must be in place before redis-py creates any.
    from gevent import monkey

    monkey.patch_all()

import logging
import time
from typing import Any, Mapping, Sequence

import numpy as np
import redis
from flask import Flask, Response, current_app, g, jsonify, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

import auth
import fast_multipart
import inference_v2
import metrics
import settings
import web_page
from decode_budget import DecodeBudget, set_malloc_policy
from helpers import configure_logging, is_valid_job_id, is_valid_request_id, new_request_id
from imaging import ImageError, decode_image
from jobqueue import JobQueue, QueueFull, queue_from_settings
from openapi import build_spec
from protocol import Job, ModelContract, Result
from registry import ModelNotFound, ModelRegistry, NoModelServer, VersionView
from request_limits import check_upload_type, refuse_unparsed_bodies

log = logging.getLogger("web")

# A Redis read may block for the whole request timeout (BLPOP); allow that plus this margin.
_READ_TIMEOUT_MARGIN = 5.0
# Seconds past a pending job's deadline before GET /result calls it expired: a model server that
# took it just before the deadline may still be answering.
_EXPIRY_GRACE = 2.0


class ServiceUnavailable(Exception):
    """Answered with 503 and Retry-After: the client should try again shortly."""


def create_app(test_config: Mapping[str, Any] | None = None) -> Flask:
    """Build the app: defaults, then settings (and so the environment), then `test_config`."""
    app = Flask(__name__)
    app.config.from_object(settings)
    if test_config:
        app.config.update(test_config)
    app.config["MAX_CONTENT_LENGTH"] = app.config["MAX_UPLOAD_BYTES"]
    app.json.sort_keys = False
    fast_multipart.install()  # no per-request regex compiles in multipart parsing (~0.4 ms of CPU)

    queue = queue_from_settings(app.config, read_timeout=app.config["REQUEST_TIMEOUT"] + _READ_TIMEOUT_MARGIN)
    app.extensions["jobqueue"] = queue
    app.extensions["models"] = ModelRegistry(
        queue, app.config["HEARTBEAT_TTL"], app.config["METADATA_CACHE_SECONDS"], app.config["DEFAULT_MODEL"]
    )
    # One per process: every decode of this process (v1 and v2 routes) reserves its bytes here.
    set_malloc_policy(app.config["MALLOC_KEEP_BYTES"])
    app.extensions["decode_budget"] = DecodeBudget(
        app.config["DECODE_MEMORY_BUDGET"], app.config["DECODE_WAIT_MS"] / 1000, app.config["RETRY_AFTER_SECONDS"]
    )
    _register_routes(app)
    auth.install(app)  # after the request id is set; answers 401 before any route runs
    _register_error_handlers(app)
    inference_v2.register(app)
    web_page.register(app)
    return app


def _register_routes(app: Flask) -> None:
    app.before_request(_start_request)
    app.before_request(refuse_unparsed_bodies)
    app.after_request(_tag_response)
    # The JSON description; GET / (web_page) answers it too, to clients that do not ask for HTML.
    app.add_url_rule("/api", view_func=index, methods=["GET"])
    app.add_url_rule("/health", view_func=health, methods=["GET"])
    app.add_url_rule("/ready", view_func=ready, methods=["GET"])
    app.add_url_rule("/predict", view_func=predict, methods=["POST"])
    app.add_url_rule("/models", view_func=list_models, methods=["GET"])
    app.add_url_rule("/models/<name>", view_func=describe_model, methods=["GET"])
    app.add_url_rule("/models/<name>/predict", view_func=predict, methods=["POST"])
    app.add_url_rule("/models/<name>/versions/<version>/predict", view_func=predict, methods=["POST"])
    app.add_url_rule("/result/<job_id>", view_func=result, methods=["GET"])
    app.add_url_rule("/metrics", view_func=metrics_endpoint, methods=["GET"])
    app.add_url_rule("/openapi.json", view_func=openapi_document, methods=["GET"])


def _start_request() -> None:
    supplied = request.headers.get("X-Request-ID", "")
    g.request_id = supplied if is_valid_request_id(supplied) else new_request_id()
    g.started = time.perf_counter()


def _tag_response(response: Response) -> Response:
    response.headers["X-Request-ID"] = g.get("request_id", "")
    # The route's pattern, not the path: /result/<job_id> is one series, not one per job.
    endpoint = request.url_rule.rule if request.url_rule is not None else "unmatched"
    metrics.observe_request(endpoint, request.method, response.status_code, time.perf_counter() - g.started)
    return response


def index() -> Response:
    return jsonify(
        service="Keras REST API: image classification",
        endpoints={
            "POST /predict": "multipart field 'image' (or a raw image/* body); optional top_k; "
                             "?async=1 or 'Prefer: respond-async' answers 202 with a job URL",
            "POST /models/<name>/predict": "the same, with the newest ready version of that model",
            "POST /models/<name>/versions/<version>/predict": "the same, with that version",
            "GET /models": "every served model and version: state, servers, input contract",
            "GET /result/<id>": "an asynchronous job's answer: 200, 202 while pending, 404 if unknown",
            "GET /health": "the web process is alive",
            "GET /ready": "Redis is reachable and a model server is alive",
            "GET /metrics": "Prometheus metrics",
            "GET /openapi.json": "the OpenAPI 3 document of this API",
            "GET /docs": "the API in Swagger UI; GET / in a browser: a page to classify a photo",
            "/v2/...": "the Open Inference Protocol (KServe v2 REST), e.g. for tritonclient[http]; "
                       "POST /v2/repository/index lists the models",
        },
        example="curl -F image=@dog.jpg http://127.0.0.1:8000/predict",
    )


def openapi_document() -> Response:
    config = current_app.config
    return jsonify(build_spec(config["MAX_TOP_K"], config["DEFAULT_TOP_K"], config["MAX_UPLOAD_BYTES"]))


def metrics_endpoint() -> Response:
    body = metrics.render(current_app.extensions["jobqueue"], current_app.config["HEARTBEAT_TTL"])
    return Response(body, mimetype=None, content_type=metrics.CONTENT_TYPE_LATEST)


def health() -> Response:
    return jsonify(success=True, status="alive")


def ready() -> tuple[Response, int]:
    queue: JobQueue = current_app.extensions["jobqueue"]
    try:
        servers = queue.live_servers(current_app.config["HEARTBEAT_TTL"])
    except redis.RedisError as exc:
        log.warning("request %s: /ready: Redis error: %s", g.get("request_id"), exc)
        return jsonify(success=False, ready=False, error="The queue (Redis) is unreachable."), 503
    ready_models = sorted({m.contract.name for s in servers for m in s.models if m.state == "ready"})
    body = {
        "success": bool(ready_models),
        "ready": bool(ready_models),
        "models": ready_models,
        "model_servers_alive": len(servers),
    }
    # Host names and pids only to callers with an API key; an open API says how many, not where.
    if auth.is_authenticated():
        body["model_servers"] = [
            {"name": s.name, "host": s.host, "pid": s.pid, "device": s.device, "seen": s.seen,
             "models": [f"{m.contract.name}:{m.contract.version}:{m.state}" for m in s.models]}
            for s in servers
        ]
    if not servers:
        body["error"] = "No model server is running. Start run_model_server.py."
    elif not ready_models:
        body["error"] = "The model servers are still loading their models."
    return jsonify(body), 200 if ready_models else 503


def list_models() -> Response:
    registry: ModelRegistry = current_app.extensions["models"]
    table = registry.models()
    try:
        default = registry.default_name(table)
    except (ModelNotFound, NoModelServer):
        default = None
    return jsonify(success=True, default_model=default,
                   models=[_model_json(name, versions) for name, versions in sorted(table.items())])


def describe_model(name: str) -> tuple[Response, int]:
    versions = current_app.extensions["models"].models().get(name)
    if not versions:
        raise ModelNotFound(f"No model {name!r} is served. GET /models lists the served models.")
    return jsonify(success=True, **_model_json(name, versions)), 200


def _model_json(name: str, versions: Mapping[str, VersionView]) -> dict[str, Any]:
    ordered = sorted(versions.values(), key=lambda view: int(view.contract.version))
    return {"name": name, "versions": [
        {"version": view.contract.version, "state": view.state, "servers": sorted(view.states),
         "contract": view.contract.as_json()} for view in ordered]}


def predict(name: str | None = None, version: str | None = None) -> tuple[Response, int] | Response:
    """POST /predict (the default model), /models/<name>/predict, /models/<name>/versions/<v>/predict."""
    config = current_app.config
    contract = current_app.extensions["models"].resolve(name, version)
    queue: JobQueue = current_app.extensions["jobqueue"].for_model(contract.name, contract.version)
    # Refuse before reading and decoding the upload; submit's atomic check still enforces the bound.
    if not queue.admits(config["MAX_QUEUE_LENGTH"]):
        raise ServiceUnavailable(f"The queue is full ({config['MAX_QUEUE_LENGTH']} images waiting). Retry shortly.")
    top_k = _top_k(config)
    data = _upload_bytes()

    decode_started = time.perf_counter()
    pixels = decode_image(data, contract, config["MAX_IMAGE_PIXELS"],  # as the model declares
                          budget=current_app.extensions["decode_budget"])
    decode_ms = (time.perf_counter() - decode_started) * 1000

    wants_async = _wants_async()
    sync_wait = config["SYNC_WAIT_MS"] / 1000
    # With SYNC_WAIT_MS a plain request may turn into a job fetched later, so it lives as one:
    # the queue answers it even if it expires there, and GET /result can say so.
    fetch_later = wants_async or sync_wait > 0
    timeout = config["ASYNC_TIMEOUT"] if fetch_later else config["REQUEST_TIMEOUT"]
    job = Job(id=new_request_id(), pixels=pixels, top_k=top_k, deadline=time.time() + timeout,
              fetch_later=fetch_later, request_id=g.request_id)
    # Jobs that may be fetched later are marked pending, so GET /result can tell "not yet" from "unknown".
    pending_ttl = timeout + config["RESULT_TTL"] if fetch_later else 0
    submit(queue, job, pending_ttl)
    if wants_async:
        return _accepted(job.id)
    request_timeout = config["REQUEST_TIMEOUT"]
    wait = min(sync_wait, request_timeout) if sync_wait > 0 else request_timeout
    answer = queue.wait_result(job.id, timeout=wait)
    if answer is None:
        if sync_wait > 0 and sync_wait < request_timeout:
            return _accepted(job.id)
        log.warning("request %s (job %s): no answer within %.1f s", g.request_id, job.id, config["REQUEST_TIMEOUT"])
        return _error(504, no_answer_message(config["REQUEST_TIMEOUT"]))
    if fetch_later:
        queue.forget_pending(job.id)  # answered here: GET /result must not say pending for ever
    response = _answer(answer)
    timing = {"decode": decode_ms, **answer.timing}
    timing["total"] = (time.perf_counter() - g.started) * 1000
    response[0].headers["Server-Timing"] = _server_timing(timing)
    return response


def submit(queue: JobQueue, job: Job, pending_ttl: float = 0) -> None:
    """Queue one job on its model version's queue; ServiceUnavailable (503) when that queue is full."""
    config = current_app.config
    try:
        queue.submit(job, config["MAX_QUEUE_LENGTH"], pending_ttl=pending_ttl)
    except QueueFull:
        raise ServiceUnavailable(
            f"The queue is full ({config['MAX_QUEUE_LENGTH']} images waiting). Retry shortly."
        ) from None


def classify(contract: ModelContract, images: Sequence[np.ndarray], top_k: int, timeout: float,
             full_output: bool = False) -> list[Result | None]:
    """Queue each image as a job of its own for the model version `contract` names, then wait for
    every answer until one deadline.

    Each image is batched by the model servers with everyone else's, exactly as a /predict
    upload is. An answer is None when it did not come in time.
    """
    queue: JobQueue = current_app.extensions["jobqueue"].for_model(contract.name, contract.version)
    deadline = time.time() + timeout
    jobs = [Job(id=new_request_id(), pixels=pixels, top_k=top_k, deadline=deadline, request_id=g.request_id,
                full_output=full_output) for pixels in images]
    for job in jobs:
        submit(queue, job)
    return [queue.wait_result(job.id, timeout=deadline - time.time()) for job in jobs]


def no_answer_message(timeout: float) -> str:
    """The 504 message."""
    return (f"No answer from the model within {timeout:g} s. "
            "The service is overloaded or no model server is running; retry later.")


def result(job_id: str) -> tuple[Response, int]:
    queue: JobQueue = current_app.extensions["jobqueue"]
    answer, deadline = queue.peek_result(job_id) if is_valid_job_id(job_id) else (None, None)
    if answer is not None:
        return _answer(answer)
    if deadline is not None and time.time() > deadline + _EXPIRY_GRACE:
        # Past its deadline and no model server answered (none running, or all overloaded).
        return _error(504, "The job expired in the queue before a model server could take it. Submit it again.")
    if deadline is not None:
        response = jsonify(success=True, id=job_id, status="pending", status_url=f"/result/{job_id}")
        response.headers["Retry-After"] = str(current_app.config["RETRY_AFTER_SECONDS"])
        return response, 202
    return _error(404, f"No job {job_id!r}: it never existed or its result expired "
                       f"({current_app.config['RESULT_TTL']:g} s after it was ready).")


def _wants_async() -> bool:
    if request.args.get("async", "").lower() in ("1", "true", "yes"):
        return True
    prefer = request.headers.get("Prefer", "")
    return any(part.strip().lower() == "respond-async" for part in prefer.split(","))


def _accepted(job_id: str) -> tuple[Response, int]:
    status_url = f"/result/{job_id}"
    response = jsonify(success=True, id=job_id, status_url=status_url)
    response.headers["Location"] = status_url
    if "respond-async" in request.headers.get("Prefer", ""):
        response.headers["Preference-Applied"] = "respond-async"
    return response, 202


def _answer(answer: Result) -> tuple[Response, int]:
    """The HTTP answer for a model server's result."""
    if not answer.success:
        log.error("request %s: model server answered %d: %s", g.request_id, answer.status, answer.error)
        if answer.status == 500:  # its text may name hosts, batches or exceptions: that stays in the log
            return _error(500, f"The model failed on this image (request id {g.request_id}); the log has the "
                               "details. Retry; if it persists, contact the operator.")
        return _error(answer.status, answer.error)
    return jsonify(answer.as_response()), 200


def _top_k(config: Mapping[str, Any]) -> int:
    raw = request.values.get("top_k")
    if raw is None or raw == "":
        return int(config["DEFAULT_TOP_K"])
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if not 1 <= value <= config["MAX_TOP_K"]:
        raise ImageError(f"top_k must be an integer from 1 to {config['MAX_TOP_K']}, received {raw!r}.")
    return value


def _upload_bytes() -> bytes:

    content_type = request.mimetype or ""
    check_upload_type(content_type)
    if content_type == "multipart/form-data":
        upload = request.files.get("image")
        if upload is None:
            raise ImageError(
                "Missing the multipart field 'image'. "
                "Send the file as: curl -F image=@dog.jpg http://HOST/predict"
            )
        return upload.read()
    data = request.get_data(cache=False)  # image/* or application/octet-stream
    # A body streamed without Content-Length is cut at the limit rather than refused, so
    # one that reaches the limit may have been longer.
    if request.content_length is None and len(data) >= current_app.config["MAX_UPLOAD_BYTES"]:
        raise RequestEntityTooLarge()
    return data


def _server_timing(timing: Mapping[str, float]) -> str:
    return ", ".join(f"{name};dur={value:.1f}" for name, value in timing.items())


def _error(status: int, message: str, headers: Mapping[str, str] | None = None) -> tuple[Response, int]:
    response = jsonify(success=False, error=message)
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response, status


def _register_error_handlers(app: Flask) -> None:
    retry_after = str(app.config["RETRY_AFTER_SECONDS"])

    @app.errorhandler(ImageError)
    def image_error(exc: ImageError) -> tuple[Response, int]:
        log.log(logging.WARNING if exc.status >= 500 else logging.INFO,
                "request %s: rejected upload (%d): %s", g.get("request_id"), exc.status, exc)
        return _error(exc.status, str(exc), exc.headers)

    @app.errorhandler(ModelNotFound)
    def model_not_found(exc: ModelNotFound) -> tuple[Response, int]:
        return _error(404, str(exc))

    @app.errorhandler(ServiceUnavailable)
    @app.errorhandler(NoModelServer)
    def unavailable(exc: Exception) -> tuple[Response, int]:
        log.warning("request %s: 503: %s", g.get("request_id"), exc)
        return _error(503, str(exc), {"Retry-After": retry_after})

    @app.errorhandler(redis.RedisError)
    def redis_down(exc: redis.RedisError) -> tuple[Response, int]:
        log.error("request %s: Redis error: %s", g.get("request_id"), exc)
        app.extensions["models"].forget()
        # The exception's text (addresses, users) stays in the log.
        return _error(503, "The queue (Redis) is unavailable. Retry shortly.", {"Retry-After": retry_after})

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> tuple[Response, int]:
        status = exc.code or 500
        message = exc.description or exc.name
        if status == 413:
            message = (
                f"The upload is larger than {app.config['MAX_UPLOAD_BYTES']} bytes. Send a smaller image."
            )
        return _error(status, message)

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> tuple[Response, int]:
        log.exception("request %s: unexpected error", g.get("request_id"))
        return _error(500, f"Internal error (request id {g.get('request_id')}); the log has the details.")


def main() -> None:
    from gevent.pywsgi import WSGIServer

    configure_logging(settings.LOG_LEVEL)
    app = create_app()
    log.info("serving on http://%s:%d (development server; use Apache in production)", settings.HOST, settings.PORT)
    WSGIServer((settings.HOST, settings.PORT), app, log=None).serve_forever()


if __name__ == "__main__":
    main()

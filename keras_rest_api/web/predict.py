"""The tutorial's REST routes: POST /predict and its per-model forms, GET /result/<id>, the served
models, readiness, metrics and the API's description.

These functions translate HTTP (multipart or raw uploads, `top_k`, `?async=1`, `Prefer`) into
calls on the data plane (web.dataplane) and its answers back into JSON; errors are raised and
rendered by web.errors.
"""
from __future__ import annotations

import json
import logging
import time
from typing import Any, Mapping

import redis
from flask import Flask, Response, g, jsonify, request
from werkzeug.exceptions import RequestEntityTooLarge

from keras_rest_api.errors import (BadRequest, GatewayTimeout, ModelNotFound, NoModelServer, NotFound, RequestTooLarge,
                                   ServiceError, UnsupportedMediaType, clip)
from keras_rest_api.ids import is_valid_job_id
from keras_rest_api.queue.records import ModelContract, Result
from keras_rest_api.web import auth
from keras_rest_api.web.features import example_instance, instances_of, parse_json, predictions_json, rows_of
from keras_rest_api.web.dataplane import DataPlane, check_answer, no_answer_message
from keras_rest_api.web.errors import REDIS_UNAVAILABLE, log_redis_error
from keras_rest_api.web.limits import check_upload_type, read_at_most
from keras_rest_api.web.metrics import CONTENT_TYPE_LATEST, WebMetrics
from keras_rest_api.web.openapi import build_spec
from keras_rest_api.web.served import ServedModels, VersionView

log = logging.getLogger("web")

# Seconds past a pending job's deadline before GET /result calls it expired: a model server that
# took it just before the deadline may still be answering.
_EXPIRY_GRACE = 2.0


class PredictEndpoints:
    """The routes, over one data plane and the app's settings."""

    def __init__(self, plane: DataPlane, metrics: WebMetrics, settings: Mapping[str, Any]) -> None:
        self.plane = plane
        self.metrics = metrics
        self.settings = settings

    # --- the service ------------------------------------------------------------------------

    def index(self) -> Response:
        return jsonify(
            service="Keras REST API: image classification",
            endpoints={
                "POST /predict": "multipart field 'image' (or a raw image/* body); optional top_k; "
                                 "?async=1 or 'Prefer: respond-async' answers 202 with a job URL",
                "POST /models/<name>/predict": "the same, with the newest ready version of that model; a features "
                                               "model takes application/json: one object of its named features, "
                                               "or {\"instances\": [...]}",
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

    def openapi_document(self) -> Response:
        config = self.settings
        features, default = self._features_models()
        return jsonify(build_spec(config["MAX_TOP_K"], config["DEFAULT_TOP_K"], config["MAX_UPLOAD_BYTES"],
                                  features, default, config["MAX_INSTANCES"]))

    def _features_models(self) -> tuple[list[ModelContract], str | None]:
        """The newest version of each served features model, and the default model's name (for the
        document; without Redis or model servers, the document describes the image routes alone)."""
        try:
            table = self.plane.served.models()
            default = self.plane.served.default_name(table) if table else None
        except redis.RedisError:
            return [], None
        except ServiceError:
            default = None
        newest = [max(versions.values(), key=lambda view: int(view.contract.version)).contract
                  for _, versions in sorted(table.items())]
        return [c for c in newest if c.takes_features], default

    def metrics_endpoint(self) -> Response:
        body = self.metrics.render(self.plane.queue, self.settings["HEARTBEAT_TTL"])
        return Response(body, mimetype=None, content_type=CONTENT_TYPE_LATEST)

    def health(self) -> Response:
        return jsonify(success=True, status="alive")

    def ready(self) -> tuple[Response, int]:
        try:
            servers = self.plane.queue.live_servers(self.settings["HEARTBEAT_TTL"])
        except redis.RedisError as exc:
            log_redis_error(exc)
            # The one answer every route gives for Redis, in /ready's shape.
            response = jsonify(success=False, ready=False, error=REDIS_UNAVAILABLE)
            response.headers["Retry-After"] = str(self.settings["RETRY_AFTER_SECONDS"])
            return response, 503
        ready_models = sorted({m.contract.name for s in servers for m in s.models if m.state == "ready"})
        body: dict[str, Any] = {
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

    # --- the served models ------------------------------------------------------------------

    def list_models(self) -> Response:
        served: ServedModels = self.plane.served
        table = served.models()
        try:
            default = served.default_name(table)
        except (ModelNotFound, NoModelServer):
            default = None
        return jsonify(success=True, default_model=default,
                       models=[_model_json(name, versions) for name, versions in sorted(table.items())])

    def describe_model(self, name: str) -> tuple[Response, int]:
        versions = self.plane.served.models().get(name)
        if not versions:
            raise ModelNotFound(f"No model {clip(name)} is served. GET /models lists the served models.")
        return jsonify(success=True, **_model_json(name, versions)), 200

    # --- inference --------------------------------------------------------------------------

    def predict(self, name: str | None = None, version: str | None = None) -> tuple[Response, int] | Response:
        """POST /predict (the default model), /models/<name>/predict, /models/<name>/versions/<v>/predict."""
        config = self.settings
        contract = self.plane.resolve(name, version)
        if contract.takes_features or request.mimetype == "application/json":
            return self.predict_features(contract)
        # Refuse before reading and decoding the upload; the submit's atomic check still enforces the bound.
        self.plane.check_room(contract)
        # The form and the upload are parsed while the decode budget holds what that may cost.
        with self.plane.parsing(self.plane.parse_cost(request.content_length), _UPLOAD_ADVICE):
            top_k = _top_k(config)
            data = _upload_bytes(config["MAX_UPLOAD_BYTES"])

        decode_started = time.perf_counter()
        pixels = self.plane.decode(data, contract)
        decode_ms = (time.perf_counter() - decode_started) * 1000

        wants_async = _wants_async()
        sync_wait = config["SYNC_WAIT_MS"] / 1000
        # With SYNC_WAIT_MS a plain request may turn into a job fetched later, so it lives as one:
        # the queue answers it even if it expires there, and GET /result can say so.
        fetch_later = wants_async or sync_wait > 0
        timeout = config["ASYNC_TIMEOUT"] if fetch_later else config["REQUEST_TIMEOUT"]
        # Jobs that may be fetched later are marked pending, so GET /result can tell "not yet" from "unknown".
        pending_ttl = timeout + config["RESULT_TTL"] if fetch_later else 0
        (job,) = self.plane.enqueue(contract, [pixels], top_k, timeout, g.request_id, fetch_later=fetch_later,
                                    pending_ttl=pending_ttl, owner=auth.owner())
        if wants_async:
            return _accepted(job.id)
        request_timeout = config["REQUEST_TIMEOUT"]
        wait = min(sync_wait, request_timeout) if sync_wait > 0 else request_timeout
        (answer,) = self.plane.wait(contract, [job], wait)
        if answer is None:
            if 0 < sync_wait < request_timeout:
                return _accepted(job.id)
            log.warning("request %s (job %s): no answer within %.1f s", g.request_id, job.id, request_timeout)
            raise GatewayTimeout(no_answer_message(request_timeout))
        if fetch_later:
            self.plane.queue_for(contract).forget_pending(job.id)  # answered here: GET /result must not say pending
        response = _answer(answer)
        timing = {"decode": decode_ms, **answer.timing}
        timing["total"] = (time.perf_counter() - g.started) * 1000
        response.headers["Server-Timing"] = _server_timing(timing)
        return response

    def predict_features(self, contract: ModelContract) -> tuple[Response, int] | Response:
        """A features model's instances (JSON) through the same queue: one job per instance."""
        config = self.settings
        _check_features_request(contract)
        # The body is read, parsed and checked while the decode budget holds what that may cost.
        limit = config["MAX_JSON_BYTES"]
        _refuse_json_over(limit)
        declared = request.content_length if request.content_length is not None else limit
        with self.plane.parsing(self.plane.parse_cost(declared, declared), _JSON_ADVICE):
            body = parse_json(_json_bytes(limit), limit)
            instances, single = instances_of(body, config["MAX_INSTANCES"])
            del body
            rows = rows_of(instances, contract)
            del instances
        self.plane.check_room(contract, len(rows))
        top_k = min(_top_k(config), contract.classes)
        if _wants_async():
            timeout = config["ASYNC_TIMEOUT"]
            jobs = self.plane.enqueue_rows(contract, rows, top_k, timeout, g.request_id, fetch_later=True,
                                           pending_ttl=timeout + config["RESULT_TTL"], owner=auth.owner())
            if single:
                return _accepted(jobs[0].id)
            return jsonify(success=True, jobs=[{"id": job.id, "status_url": f"/result/{job.id}"} for job in jobs]), 202
        answers = self.plane.predict_rows(contract, rows, top_k, config["REQUEST_TIMEOUT"], g.request_id)
        response = jsonify(success=True, predictions=predictions_json(answers, single),
                           model=answers[0].model or contract.name, version=answers[0].version or contract.version)
        timing = {**answers[0].timing, "total": (time.perf_counter() - g.started) * 1000}
        response.headers["Server-Timing"] = _server_timing(timing)
        return response

    def result(self, job_id: str) -> tuple[Response, int] | Response:
        queue = self.plane.queue
        # Another key's job is answered as an unknown one: the same 404, the same words.
        answer, deadline = queue.peek_result(job_id, auth.owner()) if is_valid_job_id(job_id) else (None, None)
        if answer is not None:
            return _answer(answer)
        if deadline is not None and time.time() > deadline + _EXPIRY_GRACE:
            # Past its deadline and no model server answered (none running, or all overloaded).
            raise GatewayTimeout("The job expired in the queue before a model server could take it. Submit it again.")
        if deadline is not None:
            response = jsonify(success=True, id=job_id, status="pending", status_url=f"/result/{job_id}")
            response.headers["Retry-After"] = str(self.settings["RETRY_AFTER_SECONDS"])
            return response, 202
        # The id stays out of the message, so out of the log too: with its key, it is what reads the result.
        raise NotFound(f"No job with this id: it never existed, its result expired ({self.settings['RESULT_TTL']:g} s "
                       "after it was ready), or another API key created it.")

    def register(self, app: Flask) -> None:
        """Add the routes to `app`, under the endpoint names of their methods."""
        for rule, view, method in (
            # The JSON description; GET / (web.page) answers it too, to clients that do not ask for HTML.
            ("/api", self.index, "GET"),
            ("/health", self.health, "GET"),
            ("/ready", self.ready, "GET"),
            ("/predict", self.predict, "POST"),
            ("/models", self.list_models, "GET"),
            ("/models/<name>", self.describe_model, "GET"),
            ("/models/<name>/predict", self.predict, "POST"),
            ("/models/<name>/versions/<version>/predict", self.predict, "POST"),
            ("/result/<job_id>", self.result, "GET"),
            ("/metrics", self.metrics_endpoint, "GET"),
            ("/openapi.json", self.openapi_document, "GET"),
        ):
            app.add_url_rule(rule, view_func=view, methods=[method])


def _model_json(name: str, versions: Mapping[str, VersionView]) -> dict[str, Any]:
    ordered = sorted(versions.values(), key=lambda view: int(view.contract.version))
    return {"name": name, "versions": [
        {"version": view.contract.version, "state": view.state, "servers": sorted(view.states),
         "contract": view.contract.as_json()} for view in ordered]}


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


def _answer(answer: Result) -> Response:
    """The HTTP answer for a model server's result (its error raised, for the error table)."""
    check_answer(answer, g.request_id)
    return jsonify(answer.as_response())


_JSON_ADVICE = "Send fewer instances per request (MAX_INSTANCES), or several requests."
_UPLOAD_ADVICE = "Send a smaller image."


def _top_k(config: Mapping[str, Any]) -> int:
    raw = request.values.get("top_k")
    if raw is None or raw == "":
        return int(config["DEFAULT_TOP_K"])
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if not 1 <= value <= config["MAX_TOP_K"]:
        raise BadRequest(f"top_k must be an integer from 1 to {config['MAX_TOP_K']}, received {clip(raw)}.")
    return value


def _check_features_request(contract: ModelContract) -> None:
    """415 for a JSON body to an image model, or an upload to a features model, saying what to send."""
    where = f"Model {contract.name!r} (version {contract.version})"
    if not contract.takes_features:
        raise UnsupportedMediaType(f"{where} classifies images: a body of type 'application/json' is for features "
                                   "models. Send the image as multipart/form-data (curl -F image=@dog.jpg), or "
                                   "the raw image bytes with Content-Type image/* or application/octet-stream.")
    if request.mimetype != "application/json":
        example = json.dumps(example_instance(contract))
        raise UnsupportedMediaType(
            f"{where} takes a JSON object of its features, not {request.mimetype or 'a body without a type'!r}: "
            f"curl -H 'Content-Type: application/json' -d '{example[:300]}' .../models/{contract.name}/predict "
            '(or {"instances": [...]} for several).')


def _refuse_json_over(limit: int) -> None:
    """413 for a JSON body declared longer than `limit`, before any byte of it is read."""
    if request.content_length is not None and request.content_length > limit:
        raise RequestTooLarge(f"The JSON body is {request.content_length} bytes, more than MAX_JSON_BYTES={limit}. "
                              "Send fewer instances per request.")


def _json_bytes(limit: int) -> bytes:
    """The JSON body, whose declared length the caller checked against `limit` (a streamed one is
    read up to one byte past it, for parse_json's 413)."""
    return read_at_most(limit + 1) if request.content_length is None else request.get_data(cache=False)


def _upload_bytes(max_upload_bytes: int) -> bytes:
    content_type = request.mimetype or ""
    check_upload_type(content_type)
    if content_type == "multipart/form-data":
        upload = request.files.get("image")
        if upload is None:
            raise BadRequest(
                "Missing the multipart field 'image'. "
                "Send the file as: curl -F image=@dog.jpg http://HOST/predict"
            )
        return upload.read()
    data = request.get_data(cache=False)  # image/* or application/octet-stream
    # A body streamed without Content-Length is cut at the limit rather than refused, so
    # one that reaches the limit may have been longer.
    if request.content_length is None and len(data) >= max_upload_bytes:
        raise RequestEntityTooLarge()
    return data


def _server_timing(timing: Mapping[str, float]) -> str:
    return ", ".join(f"{name};dur={value:.1f}" for name, value in timing.items())


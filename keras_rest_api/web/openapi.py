"""The OpenAPI 3 document of the API, served at GET /openapi.json.

Kept true by tests/system/test_openapi.py, which runs schemathesis against the live service through
Apache: every answer must have a documented status, content type and body.
"""
from __future__ import annotations

from typing import Any, Sequence

from keras_rest_api.queue.records import ModelContract
from keras_rest_api.web.features import example_instance, instance_schema

_ERROR = {"$ref": "#/components/responses/Error"}
_JOB = {"$ref": "#/components/responses/Job"}


def _errors(*statuses: int) -> dict[str, Any]:
    return {str(status): _ERROR for status in statuses}


def build_spec(max_top_k: int, default_top_k: int, max_upload_bytes: int,
               features_models: Sequence[ModelContract] = (), default_model: str | None = None,
               max_instances: int = 512) -> dict[str, Any]:
    """The document, with the limits this deployment is configured with, and the request schema
    of each served features model (from its contract) on its own predict path."""
    spec: dict[str, Any] = {
        "openapi": "3.0.3",
        "info": {
            "title": "Keras REST API",
            "version": "1.0.0",
            "description": "Image classification: POST an image, get the most probable labels.",
        },
        "paths": {
            "/predict": {"post": _predict_operation("Classify an image with the default model", [], max_top_k,
                                                    default_top_k, max_upload_bytes)},
            "/models/{name}/predict": {"post": _predict_operation(
                "Classify an image with the newest ready version of a model", [_NAME], max_top_k, default_top_k,
                max_upload_bytes)},
            "/models/{name}/versions/{version}/predict": {"post": _predict_operation(
                "Classify an image with one version of a model", [_NAME, _VERSION], max_top_k, default_top_k,
                max_upload_bytes)},
            "/models": {"get": {"summary": "Every served model and version, with its state and input contract",
                                "responses": {"200": {"description": "The served models.", "content": {
                                    "application/json": {"schema": {"$ref": "#/components/schemas/Models"}}}}}}},
            "/models/{name}": {"get": {"summary": "One served model's versions", "parameters": [_NAME],
                                       "responses": {"200": {"description": "The model.", "content": {
                                           "application/json": {"schema": {"type": "object"}}}},
                                           **_errors(404)}}},
            "/result/{job_id}": {
                "get": {
                    "summary": "The answer to an asynchronous job",
                    "parameters": [{"name": "job_id", "in": "path", "required": True, "schema": {"type": "string"}}],
                    "responses": {
                        "200": {"description": "The job's answer.",
                                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Predictions"}}}},
                        "202": {"description": "Not answered yet; retry after Retry-After seconds.",
                                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Pending"}}}},
                        **_errors(404, 422, 500, 503, 504),
                    },
                },
            },
            "/ready": {
                "get": {
                    "summary": "Redis reachable and at least one live model server",
                    "responses": {
                        "200": {"description": "Ready.", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Ready"}}}},
                        "503": {"description": "Not ready.", "content": {"application/json": {"schema": {"type": "object"}}}},
                    },
                },
            },
            "/health": {"get": {"summary": "The web process is alive", "responses": {
                "200": {"description": "Alive.", "content": {"application/json": {"schema": {"type": "object"}}}}}}},
            "/": {"get": {"summary": "A page to classify a photo (browsers); the JSON description (other clients)",
                          "responses": {"200": {"description": "HTML when the client asks for text/html, else JSON.",
                                                "content": {"text/html": {"schema": {"type": "string"}},
                                                            "application/json": {"schema": {"type": "object"}}}}}}},
            "/api": {"get": {"summary": "What the service is", "responses": {
                "200": {"description": "A description.", "content": {"application/json": {"schema": {"type": "object"}}}}}}},
            "/docs": {"get": {"summary": "This document in Swagger UI", "responses": {
                "200": {"description": "A page.", "content": {"text/html": {"schema": {"type": "string"}}}}}}},
            **_v2_paths(max_upload_bytes),
            "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {
                "200": {"description": "Text exposition format.", "content": {"text/plain": {"schema": {"type": "string"}}}},
                **_errors(503)}}},
            "/openapi.json": {"get": {"summary": "This document", "responses": {
                "200": {"description": "OpenAPI 3.", "content": {"application/json": {"schema": {"type": "object"}}}}}}},
        },
        "components": {
            "schemas": {
                "Predictions": {
                    "type": "object",
                    "required": ["success", "predictions"],
                    "properties": {
                        "success": {"type": "boolean", "enum": [True]},
                        "model": {"type": "string"},
                        "version": {"type": "string"},
                        # Labelled probabilities; a regression (features) model's job: named values.
                        "predictions": {"type": "array", "items": {"oneOf": [{
                            "type": "object", "required": ["label", "probability"],
                            "properties": {"label": {"type": "string"},
                                           "probability": {"type": "number", "minimum": 0, "maximum": 1}}},
                            {"$ref": "#/components/schemas/NamedValue"}]}},
                    },
                },
                "Job": {
                    "type": "object",
                    "required": ["success", "id", "status_url"],
                    "properties": {"success": {"type": "boolean"}, "id": {"type": "string"},
                                   "status_url": {"type": "string"}},
                },
                "Pending": {
                    "type": "object",
                    "required": ["success", "id", "status", "status_url"],
                    "properties": {"success": {"type": "boolean"}, "id": {"type": "string"},
                                   "status": {"type": "string", "enum": ["pending"]},
                                   "status_url": {"type": "string"}},
                },
                "Ready": {
                    "type": "object",
                    "required": ["ready", "models", "model_servers_alive"],
                    "properties": {"ready": {"type": "boolean"},
                                   "models": {"type": "array", "items": {"type": "string"}},
                                   "model_servers_alive": {"type": "integer", "minimum": 0},
                                   # Listed (names, hosts, pids) only to callers with an API key.
                                   "model_servers": {"type": "array", "items": {"type": "object"}}},
                },
                "NamedValue": {
                    "type": "object", "required": ["name", "value", "unit"],
                    "properties": {"name": {"type": "string"}, "value": {"type": "number"}, "unit": {"type": "string"}},
                },
                "Prediction": {
                    "type": "object", "required": ["label", "probability"],
                    "properties": {"label": {"type": "string"}, "probability": {"type": "number"}},
                },
                "Models": {
                    "type": "object",
                    "required": ["success", "default_model", "models"],
                    "properties": {"success": {"type": "boolean"}, "default_model": {"type": "string", "nullable": True},
                                   "models": {"type": "array", "items": {"type": "object"}}},
                },
                **_V2_SCHEMAS,
                "Error": {
                    "type": "object",
                    "required": ["success", "error"],
                    "properties": {"success": {"type": "boolean", "enum": [False]},
                                   "error": {"type": "string", "minLength": 1}},
                },
            },
            "responses": {
                "V2Error": {"description": "What went wrong and what to do (Open Inference Protocol error).",
                            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/V2Error"}}}},
                "Error": {"description": "What went wrong and what to do.",
                          "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
                "Job": {"description": "Accepted: fetch the answer from status_url.",
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Job"}}}},
            },
            # When the deployment sets API_KEYS, every route but PUBLIC_PATHS needs this (else 401).
            "securitySchemes": {"apiKey": {"type": "http", "scheme": "bearer",
                                           "description": "Only when the deployment configures API keys."}},
        },
        # Empty alternative: an open deployment needs no key. Swagger UI shows its Authorize
        # button for the scheme and sends the key typed there on "Try it out" calls.
        "security": [{}, {"apiKey": []}],
    }
    # Liveness and the pages' public files answer without a key even when keys are configured
    # (auth.py, web_page.py); GET / only its HTML, so it keeps the global alternatives.
    for path in PUBLIC_PATHS:
        spec["paths"][path]["get"]["security"] = []
    for contract in features_models:
        operation = _features_operation(contract, max_instances)
        spec["paths"][f"/models/{contract.name}/predict"] = {"post": operation}
        if contract.name == default_model:
            spec["paths"]["/predict"] = {"post": operation}
    return spec


def _features_operation(contract: ModelContract, max_instances: int) -> dict[str, Any]:
    """POST of a features model: its instance schema, alone or as TensorFlow Serving's instances."""
    instance = instance_schema(contract)
    answer = ({"$ref": "#/components/schemas/NamedValue"} if contract.output_kind == "regression"
              else {"$ref": "#/components/schemas/Prediction"})
    one = {"type": "array", "items": answer}
    return {
        "summary": f"Predict with features model {contract.name} ({contract.output_kind})",
        "parameters": [{"name": "async", "in": "query", "required": False,
                        "description": "1: answer 202 at once with a job URL (one per instance)",
                        "schema": {"type": "string", "enum": ["0", "1"]}}],
        "requestBody": {
            "required": True,
            "description": "One instance (an object of the model's features), or {\"instances\": [...]} with up to "
                           f"{max_instances} of them.",
            "content": {"application/json": {
                "schema": {"oneOf": [instance, {
                    "type": "object", "required": ["instances"], "additionalProperties": False,
                    "properties": {"instances": {"type": "array", "minItems": 1, "maxItems": max_instances,
                                                 "items": instance}}}]},
                "example": example_instance(contract)}},
        },
        "responses": {
            "200": {"description": "The instance's prediction, or one list per instance.",
                    "content": {"application/json": {"schema": {
                        "type": "object", "required": ["success", "predictions", "model", "version"],
                        "properties": {"success": {"type": "boolean"}, "model": {"type": "string"},
                                       "version": {"type": "string"},
                                       "predictions": {"oneOf": [one, {"type": "array", "items": one}]}}}}}},
            "202": {"description": "Accepted: fetch each answer from its status_url.",
                    "content": {"application/json": {"schema": {"type": "object"}}}},
            **_errors(400, 413, 415, 500, 503, 504),
        },
    }


PUBLIC_PATHS = ("/health", "/v2/health/live", "/docs", "/openapi.json")


_NAME = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
_VERSION = {"name": "version", "in": "path", "required": True, "schema": {"type": "string"}}


def _predict_operation(summary: str, path_parameters: list[dict[str, Any]], max_top_k: int, default_top_k: int,
                       max_upload_bytes: int) -> dict[str, Any]:
    operation = {
        "summary": "Classify an image",
        "parameters": [
            {"name": "top_k", "in": "query", "required": False,
             "schema": {"type": "integer", "minimum": 1, "maximum": max_top_k, "default": default_top_k}},
            {"name": "async", "in": "query", "required": False,
             "description": "1: answer 202 at once with a job URL",
             "schema": {"type": "string", "enum": ["0", "1"]}},
        ],
        "requestBody": {
            "required": True,
            "description": f"An image of at most {max_upload_bytes} bytes: JPEG, PNG, GIF, BMP, WebP, "
                           "TIFF or PPM.",
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["image"],
                        "properties": {
                            "image": {"type": "string", "format": "binary"},
                            "top_k": {"type": "integer", "minimum": 1, "maximum": max_top_k},
                        },
                    },
                },
                "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
                "image/png": {"schema": {"type": "string", "format": "binary"}},
            },
        },
        "responses": {
            "200": {"description": "The most probable labels, highest first.",
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Predictions"}}}},
            "202": _JOB,
            **_errors(400, 413, 415, 422, 500, 503, 504),
        },
    }
    operation["summary"] = summary
    operation["parameters"] = path_parameters + operation["parameters"]
    if path_parameters:
        operation["responses"].update(_errors(404))
    return operation


# --- the Open Inference Protocol (v2) routes: inference_v2.py ---------------------------------------

_V2_ERROR = {"$ref": "#/components/responses/V2Error"}


def _v2_errors(*statuses: int) -> dict[str, Any]:
    return {str(status): _V2_ERROR for status in statuses}


def _json(schema: dict[str, Any], description: str = "OK.") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


_PARAMETERS = {"type": "object", "additionalProperties": {"anyOf": [{"type": "string"}, {"type": "number"},
                                                                   {"type": "boolean"}]}}
_V2_SCHEMAS: dict[str, Any] = {
    "V2Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string", "minLength": 1}}},
    "V2Tensor": {"type": "object", "required": ["name", "datatype", "shape"],
                 "properties": {"name": {"type": "string"}, "datatype": {"type": "string"},
                                "shape": {"type": "array", "items": {"type": "integer"}}}},
    "V2InferenceRequest": {
        "type": "object",
        "required": ["inputs"],
        "description": "Exactly one input: 'image', BYTES [N], encoded image files (binary data: each a 4-byte "
                       "little-endian length, then the file); or 'pixels', UINT8 or FP32 [N, H, W, 3], RGB values "
                       "0..255 at the model's input size (FP32 is rounded). Output 'probabilities', FP32 "
                       "[N, classes], or with parameters.classification = k, BYTES [N, k] of 'score:index:label'.",
        "properties": {
            "id": {"type": "string"},
            "parameters": _PARAMETERS,
            "inputs": {"type": "array", "minItems": 1, "items": {
                "type": "object", "required": ["name", "shape", "datatype"],
                "properties": {"name": {"type": "string", "enum": ["image", "pixels"]},
                               "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
                               "datatype": {"type": "string", "enum": ["BYTES", "UINT8", "FP32"]},
                               "parameters": _PARAMETERS,
                               "data": {"type": "array"}}}},
            "outputs": {"type": "array", "items": {
                "type": "object", "required": ["name"],
                "properties": {"name": {"type": "string", "enum": ["probabilities"]}, "parameters": _PARAMETERS}}},
        },
    },
    "V2InferenceResponse": {
        "type": "object", "required": ["model_name", "outputs"],
        "properties": {"model_name": {"type": "string"}, "model_version": {"type": "string"}, "id": {"type": "string"},
                       "outputs": {"type": "array", "items": {
                           "type": "object", "required": ["name", "shape", "datatype"],
                           "properties": {"name": {"type": "string"}, "datatype": {"type": "string"},
                                          "shape": {"type": "array", "items": {"type": "integer"}},
                                          "parameters": _PARAMETERS, "data": {"type": "array"}}}}},
    },
    "V2ModelMetadata": {
        "type": "object", "required": ["name", "platform", "inputs", "outputs"],
        "properties": {"name": {"type": "string"}, "versions": {"type": "array", "items": {"type": "string"}},
                       "platform": {"type": "string"},
                       "inputs": {"type": "array", "items": _ref("V2Tensor")},
                       "outputs": {"type": "array", "items": _ref("V2Tensor")}},
    },
}


def _v2_paths(max_upload_bytes: int) -> dict[str, Any]:
    name = {"name": "model_name", "in": "path", "required": True, "schema": {"type": "string"}}
    version = {"name": "model_version", "in": "path", "required": True, "schema": {"type": "string"}}
    model_metadata = {"get": {"summary": "v2: a model's metadata (its tensors)", "responses": {
        "200": _json(_ref("V2ModelMetadata")), **_v2_errors(404, 503)}}}
    model_ready = {"get": {"summary": "v2: whether a model is ready", "responses": {
        "200": _json({"type": "object", "required": ["name", "ready"],
                      "properties": {"name": {"type": "string"}, "ready": {"type": "boolean"}}}),
        **_v2_errors(404, 503)}}}
    infer = {"post": {
        "summary": "v2: classify a batch of images",
        "description": "The Open Inference Protocol's inference request, with the binary tensor data and "
                       "classification extensions. Each image is queued and batched as a /predict upload is.",
        "parameters": [{"name": "Inference-Header-Content-Length", "in": "header", "required": False,
                        "description": "With binary tensor data: the length of the JSON header that starts the body.",
                        "schema": {"type": "integer", "minimum": 1}}],
        "requestBody": {
            "required": True,
            "description": f"At most {max_upload_bytes} bytes.",
            "content": {"application/json": {"schema": _ref("V2InferenceRequest")},
                        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
        },
        "responses": {
            "200": {"description": "The outputs; binary outputs follow the JSON header "
                                   "(Inference-Header-Content-Length gives its length).",
                    "content": {"application/json": {"schema": _ref("V2InferenceResponse")},
                                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}},
            **_v2_errors(400, 404, 413, 415, 422, 500, 503, 504),
        },
    }}
    paths = {
        "/v2": {"get": {"summary": "v2: server metadata", "responses": {"200": _json({
            "type": "object", "required": ["name", "version", "extensions"],
            "properties": {"name": {"type": "string"}, "version": {"type": "string"},
                           "extensions": {"type": "array", "items": {"type": "string"}}}})}}},
        "/v2/health/live": {"get": {"summary": "v2: the server is live", "responses": {
            "200": _json({"type": "object", "properties": {"live": {"type": "boolean"}}})}}},
        "/v2/health/ready": {"get": {"summary": "v2: the server is ready (a model server is alive)", "responses": {
            "200": _json({"type": "object", "properties": {"ready": {"type": "boolean"}}}),
            "503": _json({"type": "object", "required": ["ready", "error"],
                          "properties": {"ready": {"type": "boolean"}, "error": {"type": "string"}}}, "Not ready.")}}},
        "/v2/models/{model_name}": {"parameters": [name], **model_metadata},
        "/v2/models/{model_name}/versions/{model_version}": {"parameters": [name, version], **model_metadata},
        "/v2/models/{model_name}/ready": {"parameters": [name], **model_ready},
        "/v2/models/{model_name}/versions/{model_version}/ready": {"parameters": [name, version], **model_ready},
        "/v2/models/{model_name}/infer": {"parameters": [name], **infer},
        "/v2/models/{model_name}/versions/{model_version}/infer": {"parameters": [name, version], **infer},
        "/v2/repository/index": {"post": {
            "summary": "v2: every model and version the service answers for",
            "requestBody": {"required": False, "content": {"application/json": {"schema": {
                "type": "object", "properties": {"ready": {"type": "boolean"}}}}}},
            "responses": {"200": _json({"type": "array", "items": {
                "type": "object", "required": ["name", "state", "reason"],
                "properties": {"name": {"type": "string"}, "version": {"type": "string"},
                               "state": {"type": "string"}, "reason": {"type": "string"}}}}),
                **_v2_errors(400, 503)}}},
        "/v2/repository/models/{model_name}/load": {"parameters": [name], "post": {
            "summary": "v2: refused: models are served by starting model servers",
            "responses": _v2_errors(400)}},
        "/v2/repository/models/{model_name}/unload": {"parameters": [name], "post": {
            "summary": "v2: refused: a model stops being served when its model servers stop",
            "responses": _v2_errors(400)}},
    }
    for path in paths.values():
        for method in ("get", "post"):
            if method in path:
                path[method]["tags"] = ["Open Inference Protocol (v2)"]
    return paths

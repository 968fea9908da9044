"""The OpenAPI 3 document of the API, served at GET /openapi.json.

Kept true by tests/test_openapi.py, which runs schemathesis against the live service through
Apache: every answer must have a documented status, content type and body.
"""
from __future__ import annotations

from typing import Any

_ERROR = {"$ref": "#/components/responses/Error"}
_JOB = {"$ref": "#/components/responses/Job"}


def _errors(*statuses: int) -> dict[str, Any]:
    return {str(status): _ERROR for status in statuses}


def build_spec(max_top_k: int, default_top_k: int, max_upload_bytes: int) -> dict[str, Any]:
    """The document, with the limits this deployment is configured with."""
    return {
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
            "/": {"get": {"summary": "What the service is", "responses": {
                "200": {"description": "A description.", "content": {"application/json": {"schema": {"type": "object"}}}}}}},
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
                        "predictions": {"type": "array", "items": {
                            "type": "object", "required": ["label", "probability"],
                            "properties": {"label": {"type": "string"},
                                           "probability": {"type": "number", "minimum": 0, "maximum": 1}}}},
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
                    "required": ["ready", "models", "model_servers"],
                    "properties": {"ready": {"type": "boolean"},
                                   "models": {"type": "array", "items": {"type": "string"}},
                                   "model_servers": {"type": "array", "items": {"type": "object"}}},
                },
                "Models": {
                    "type": "object",
                    "required": ["success", "default_model", "models"],
                    "properties": {"success": {"type": "boolean"}, "default_model": {"type": "string", "nullable": True},
                                   "models": {"type": "array", "items": {"type": "object"}}},
                },
                "Error": {
                    "type": "object",
                    "required": ["success", "error"],
                    "properties": {"success": {"type": "boolean", "enum": [False]},
                                   "error": {"type": "string", "minLength": 1}},
                },
            },
            "responses": {
                "Error": {"description": "What went wrong and what to do.",
                          "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
                "Job": {"description": "Accepted: fetch the answer from status_url.",
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Job"}}}},
            },
        },
    }


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
                           "TIFF, ICO or PPM.",
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
            **_errors(400, 413, 422, 500, 503, 504),
        },
    }
    operation["summary"] = summary
    operation["parameters"] = path_parameters + operation["parameters"]
    if path_parameters:
        operation["responses"].update(_errors(404))
    return operation

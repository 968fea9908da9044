"""A features model's requests: JSON instances checked against its contract, turned into queue rows.

A request body is one instance (a JSON object of the model's named features) or, as TensorFlow
Serving's REST predict API takes them, `{"instances": [...]}`, each instance an object (or a
list of values in the contract's order). Every field of every instance is checked before
anything is queued: a required field missing, a value of the wrong type, a number that is not
finite or outside the feature's range, a category outside its vocabulary (unless the feature
has an unknown bucket), a field the model does not take. All of them come back in one 400
(`InvalidInstances`), each naming its instance and field.

A checked instance becomes one row of float64 values in the contract's order (a category as its
vocabulary index), which the model server checks again and encodes (models.features).
"""
from __future__ import annotations

import json
import math
from typing import Any, Sequence

import numpy as np

from keras_rest_api.errors import BadRequest, InvalidInstances, RequestTooLarge, clip
from keras_rest_api.queue.records import FeatureSpec, ModelContract, Result

# How many field errors one answer lists; past that, the count.
MAX_LISTED_ERRORS = 100


def parse_json(data: bytes, limit: int) -> Any:
    """The request body as JSON; 413 past `limit` bytes, 400 when it is not JSON."""
    if len(data) > limit:
        raise RequestTooLarge(f"The JSON body is larger than MAX_JSON_BYTES={limit} bytes. Send fewer instances "
                              "per request.")
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise BadRequest(f"The body is not valid JSON ({str(exc)[:200]}). Send one JSON object of the model's "
                         'features, or {"instances": [{...}, ...]}.') from None


def instances_of(body: Any, max_instances: int) -> tuple[list[Any], bool]:
    """The instances a body holds, and whether it was a single instance (not a list of them)."""
    if isinstance(body, dict) and "instances" in body:
        instances = body["instances"]
        extra = sorted(set(body) - {"instances", "signature_name"})
        if extra:
            raise BadRequest(f'A body with "instances" holds nothing else; received also {clip(extra)}.')
        if not isinstance(instances, list) or not instances:
            raise BadRequest('"instances" must be a non-empty list of instances (objects of the model\'s features).')
        if len(instances) > max_instances:
            raise RequestTooLarge(f"{len(instances)} instances in one request; at most MAX_INSTANCES={max_instances}. "
                                  "Split them over several requests.")
        return instances, False
    if isinstance(body, dict):
        return [body], True
    raise BadRequest(f"The body must be a JSON object of the model's features, or {{\"instances\": [...]}}; "
                     f"received a JSON {type(body).__name__}.")


def rows_of(instances: Sequence[Any], contract: ModelContract) -> list[np.ndarray]:
    """Each instance as a queue row; InvalidInstances listing every field error of every instance."""
    errors: list[dict[str, Any]] = []
    rows = []
    for index, instance in enumerate(instances):
        row, problems = _row(instance, contract)
        rows.append(row)
        errors.extend({"instance": index, **problem} for problem in problems)
    if errors:
        shown = errors[:MAX_LISTED_ERRORS]
        more = f" (the first {len(shown)} are listed)" if len(errors) > len(shown) else ""
        first = shown[0]
        where = f"instance {first['instance']}" + (f", field {first['field']!r}" if first["field"] else "")
        raise InvalidInstances(
            f"{len(errors)} field error(s) in {len({e['instance'] for e in errors})} of {len(instances)} instance(s)"
            f"{more}; the first: {where}: {first['message']} Fix each listed field; GET /models/{contract.name} "
            "describes the features.", shown)
    return rows


def _row(instance: Any, contract: ModelContract) -> tuple[np.ndarray, list[dict[str, Any]]]:
    features = contract.features
    row = np.zeros(len(features), dtype=np.float64)
    if isinstance(instance, list):
        if len(instance) != len(features):
            return row, [_problem(None, "wrong_length", f"a list instance holds the {len(features)} feature values in "
                                                        f"order ({', '.join(f.name for f in features)[:300]}); "
                                                        f"received {len(instance)} values.")]
        instance = {f.name: value for f, value in zip(features, instance)}
    if not isinstance(instance, dict):
        return row, [_problem(None, "not_an_object", f"an instance is a JSON object of the model's features; "
                                                     f"received a JSON {_json_type(instance)}.")]
    problems = []
    names = {f.name for f in features}
    for name in sorted(k for k in instance if k not in names)[:10]:
        problems.append(_problem(str(name)[:64], "unknown_field",
                                 f"the model takes no field {clip(name)}; its features are "
                                 f"{', '.join(sorted(names))[:300]}."))
    for i, feature in enumerate(features):
        if feature.name in instance:
            value, problem = _value(feature, instance[feature.name])
        elif feature.required:
            value, problem = 0.0, _problem(feature.name, "missing", f"required {_expected(feature)}; add it.")
        else:
            value, problem = _value(feature, feature.default)
        row[i] = value
        if problem:
            problems.append(problem)
    return row, problems


def _value(feature: FeatureSpec, value: Any) -> tuple[float, dict[str, Any] | None]:
    """The queue value of one field, or the problem with it."""
    if feature.type == "categorical":
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)  # {"sex": 2} for the category "2"
        if not isinstance(value, str):
            return 0.0, _problem(feature.name, "wrong_type", f"expected {_expected(feature)}, received a JSON "
                                                             f"{_json_type(value)}.")
        try:
            return float(feature.vocabulary.index(value)), None
        except ValueError:
            if feature.unknown == "bucket":
                return float(len(feature.vocabulary)), None
            return 0.0, _problem(feature.name, "unknown_category", f"{clip(value)} is not one of its categories: "
                                                                   f"{', '.join(feature.vocabulary)[:300]}.")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return 0.0, _problem(feature.name, "wrong_type", f"expected {_expected(feature)}, received a JSON "
                                                         f"{_json_type(value)}.")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        return 0.0, _problem(feature.name, "not_finite", "expected a finite number, received "
                                                         f"{clip(value)}.")
    problem = feature.problem(number)
    if problem:
        return 0.0, _problem(feature.name, "out_of_range", f"{problem}.")
    return number, None


def _expected(feature: FeatureSpec) -> str:
    if feature.type == "categorical":
        return f"a string, one of {', '.join(feature.vocabulary)[:200]}"
    bounds = "" if feature.low is None and feature.high is None else \
        f" in [{'-inf' if feature.low is None else f'{feature.low:g}'}, " \
        f"{'+inf' if feature.high is None else f'{feature.high:g}'}]"
    return f"a number{bounds}" + (f" ({feature.unit})" if feature.unit else "")


def _problem(field: str | None, problem: str, message: str) -> dict[str, Any]:
    return {"field": field, "problem": problem, "message": message}


def _json_type(value: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}.get(
        type(value), "number")


# --- answers ------------------------------------------------------------------------------------

def predictions_json(answers: Sequence[Result], single: bool) -> list[Any]:
    """The `predictions` of a features answer: the one instance's, or one list per instance."""
    rendered = [answer.answer_json() for answer in answers]
    return rendered[0] if single else rendered


# --- describing a contract ------------------------------------------------------------------------

def instance_schema(contract: ModelContract) -> dict[str, Any]:
    """The JSON Schema of one instance of `contract`'s features (for OpenAPI and the page's form)."""
    properties: dict[str, Any] = {}
    for feature in contract.features:
        if feature.type == "categorical":
            schema: dict[str, Any] = {"type": "string", "enum": list(feature.vocabulary)}
            if feature.unknown == "bucket":
                del schema["enum"]
                schema["examples"] = list(feature.vocabulary[:5])
        else:
            schema = {"type": "number"}
            if feature.low is not None:
                schema["minimum"] = feature.low
            if feature.high is not None:
                schema["maximum"] = feature.high
            if feature.normalization == "mean_std":
                schema["example"] = round(feature.mean, 4)
        if feature.default is not None:
            schema["default"] = feature.default
        if feature.unit:
            schema["description"] = feature.unit
        properties[feature.name] = schema
    return {"type": "object", "properties": properties, "additionalProperties": False,
            "required": [f.name for f in contract.features if f.required]}


def example_instance(contract: ModelContract) -> dict[str, Any]:
    """A valid instance: each feature at its training mean (or default, first category)."""
    example: dict[str, Any] = {}
    for feature in contract.features:
        if feature.type == "categorical":
            example[feature.name] = feature.default if feature.default is not None else feature.vocabulary[0]
        elif feature.default is not None:
            example[feature.name] = feature.default
        else:
            value = feature.mean if feature.normalization == "mean_std" else \
                (feature.min + feature.max) / 2 if feature.normalization == "min_max" else 0.0
            low = -math.inf if feature.low is None else feature.low
            high = math.inf if feature.high is None else feature.high
            example[feature.name] = round(min(max(value, low), high), 4)
    return example

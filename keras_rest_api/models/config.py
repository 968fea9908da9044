"""A model folder's config.json: parsed and validated into a `ModelConfig`.

`config.json` (every field but "input" of a saved model may be left out; see README.md):

    {
      "source": "keras",                      # or "builtin:<name>"
      "description": "free text",
      "input": {"height": 224, "width": 224, "channel_order": "RGB"},
      "preprocessing": {"resize": "center_crop", "crop_fraction": 0.875, "interpolation": "bilinear",
                        "pad_value": 0, "normalization": "unit", "mean": [..3], "std": [..3]},
      "labels": "labels.txt",                 # or "imagenet"; relative to the version, else model folder
      "batching": {"max_batch_size": 8, "max_wait_ms": 0},   # defaults: BATCH_SIZE, BATCH_WAIT_MS
      "precision": "float32",                 # default: MODEL_PRECISION
      "version_policy": {"latest": 1},        # or {"specific": ["1", "3"]} or "all"
      "weights": "path or random"             # built-ins only; default: MODEL_WEIGHTS (see models.loading)
    }

A features model (a JSON object of named values in, not a photo) declares instead:

    {
      "input": {"kind": "features", "features": [
        {"name": "age", "mean": 48.5, "std": 13.1, "range": [0, 120], "unit": "years"},
        {"name": "income", "min": 0, "max": 250000, "default": 40000},
        {"name": "region", "type": "categorical", "vocabulary": ["north", "south"] or "regions.txt",
         "unknown": "bucket"}                   # or "error" (the default): an unknown value is a 400
      ]},
      "output": {"kind": "classification"}      # with "labels"; or {"kind": "probability",
                                                # "positive_label": "default"}; or {"kind": "regression",
                                                # "values": [{"name": "duration", "unit": "s"}]}
      "batching": {"max_batch_size": 256}       # default: FEATURES_BATCH_SIZE
    }

Every problem is a `ModelConfigError` (a `ModelLoadError`) that names the file and the fix.
The built-in models' own entries (their evaluated preprocessing) are in the repository shipped
with the package, keras_rest_api/model_repository/ (`SHIPPED_REPOSITORY`, `shipped_config`).
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from importlib import resources
from typing import Any, Mapping, Sequence

from keras_rest_api.models.base import ModelLoadError
from keras_rest_api.models.features import encoded_width
from keras_rest_api.models.precision import PRECISIONS
from keras_rest_api.models.preprocessing import DEFAULT_CHANNEL_ORDER, check_channel_order
from keras_rest_api.queue.records import (CHANNEL_ORDERS, INTERPOLATIONS, MAX_BATCH_SIZE, MAX_FEATURES,
                                          MAX_HEARTBEAT_BYTES, MAX_NAME,
                                          MAX_SIDE, MAX_VOCABULARY, NORMALIZATIONS, RESIZE_POLICIES, FeatureSpec,
                                          ModelContract, OutputSpec, RecordError, is_valid_feature_name,
                                          is_valid_model_name, is_valid_version)

CONFIG_FILE = "config.json"
MODEL_FILE = "model.keras"
KERAS_SOURCE = "keras"
BUILTIN_PREFIX = "builtin:"
# The models built into the package ("source": "builtin:<name>"); models.builtin.BUILTIN_MODELS
# maps each to its loader.
BUILTIN_NAMES = ("resnet50", "efficientnet_lite0")
# The repository shipped with the package: the built-in models' entries (their contracts) live here.
SHIPPED_REPOSITORY = str(resources.files("keras_rest_api").joinpath("model_repository"))

_TOP_LEVEL = {"name", "source", "description", "input", "preprocessing", "labels", "batching", "precision",
              "version_policy", "weights", "output"}
_INPUT = {"height", "width", "channel_order", "kind", "features"}
_FEATURES_INPUT = {"kind", "features"}
_NUMERIC = {"name", "type", "mean", "std", "min", "max", "range", "default", "unit", "description"}
_CATEGORICAL = {"name", "type", "vocabulary", "unknown", "default", "description"}
_OUTPUT = {"kind", "positive_label", "values"}
_PREPROCESSING = {"resize", "crop_fraction", "interpolation", "pad_value", "normalization", "mean", "std"}
_BATCHING = {"max_batch_size", "max_wait_ms"}

# A features model's contract travels in every heartbeat of its servers (at most
# MAX_HEARTBEAT_BYTES, which may list several models): one contract may take a quarter.
MAX_CONTRACT_BYTES = MAX_HEARTBEAT_BYTES // 4


def resolves_outside(path: str, folder: str) -> bool:
    """Whether `path`, links followed, lies outside `folder` (a file that is a link out of a model's folder)."""
    return os.path.commonpath([os.path.realpath(path), os.path.realpath(folder)]) != os.path.realpath(folder)


class ModelConfigError(ModelLoadError):
    """A model folder, its config.json, a version folder or a labels file is wrong; says how to fix."""


@dataclass(frozen=True)
class VersionPolicy:
    """Which present versions to serve: the `latest` N, the `specific` ones listed, or all."""

    kind: str  # "latest", "specific" or "all"
    latest: int = 1
    specific: tuple[str, ...] = ()

    def choose(self, versions: Sequence[str]) -> list[str]:
        """The versions (ascending) this policy serves out of `versions` (ascending)."""
        if self.kind == "all":
            return list(versions)
        if self.kind == "specific":
            return [v for v in versions if v in self.specific]
        return list(versions[-self.latest:])


@dataclass(frozen=True)
class ModelConfig:
    """A model's parsed and validated config.json."""

    name: str
    folder: str
    config_file: str
    source: str = KERAS_SOURCE
    description: str = ""
    input_height: int | None = None
    input_width: int | None = None
    channel_order: str = "RGB"
    resize: str = "center_crop"
    crop_fraction: float = 0.875
    interpolation: str = "bilinear"
    pad_value: int = 0
    normalization: str = "unit"
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    labels: str = ""
    max_batch_size: int = 8
    max_wait_ms: int = 0
    precision: str = "float32"
    version_policy: VersionPolicy = VersionPolicy("latest", 1)
    weights: str = ""
    input_kind: str = "image"
    features: tuple[FeatureSpec, ...] = ()
    output_kind: str = "classification"
    outputs: tuple[OutputSpec, ...] = ()
    positive_label: str = ""

    @property
    def takes_features(self) -> bool:
        return self.input_kind == "features"

    @property
    def encoded_width(self) -> int:
        """The width of the model's input: a column per numeric feature, one per category."""
        return encoded_width(self.features)

    @property
    def builtin(self) -> str:
        """The built-in model's name, or "" for a saved Keras model."""
        return self.source[len(BUILTIN_PREFIX):] if self.source.startswith(BUILTIN_PREFIX) else ""

    def contract(self, version: str, input_size: tuple[int, int], classes: int) -> ModelContract:
        """The contract of `version` of this model, as the web tier and the model server use it."""
        try:
            contract = ModelContract(
                name=self.name, version=version, input_height=input_size[0], input_width=input_size[1],
                classes=classes, resize=self.resize, crop_fraction=self.crop_fraction,
                interpolation=self.interpolation, pad_value=self.pad_value, channel_order=self.channel_order,
                normalization=self.normalization, mean=self.mean, std=self.std,
                max_batch_size=self.max_batch_size, max_wait_ms=self.max_wait_ms, precision=self.precision,
                input_kind=self.input_kind, features=self.features, output_kind=self.output_kind,
                outputs=self.outputs, positive_label=self.positive_label,
            )
        except RecordError as exc:
            raise ModelConfigError(f"{self.config_file}: {exc}. Fix that field.") from None
        if self.takes_features:
            size = len(json.dumps(contract.as_json()))
            if size > MAX_CONTRACT_BYTES:
                raise ModelConfigError(
                    f"{self.config_file}: the contract is {size} bytes of JSON; a model server publishes every "
                    f"contract in its heartbeat, which holds at most {MAX_CONTRACT_BYTES} per model. Use fewer "
                    "features or shorter vocabularies (a large vocabulary: hash it into buckets in the model).")
        return contract



# --- parsing --------------------------------------------------------------------------------
def parse_config(path: str, name: str, settings: Mapping[str, Any]) -> ModelConfig:
    """Read and validate the config.json at `path` of the model folder `name`."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise ModelConfigError(
            f"{path}: missing. Every model folder needs a {CONFIG_FILE}; the smallest is "
            '{"labels": "labels.txt"} (see the README\'s "Model repository" section).'
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelConfigError(f"{path}: cannot be read ({exc}). Make it a readable UTF-8 JSON file.") from None
    try:
        body = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ModelConfigError(
            f"{path}: not valid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}. "
            "Fix the JSON there (JSON has no comments and no trailing commas)."
        ) from None
    return _Parser(path, name, settings).parse(body)


class _Parser:
    def __init__(self, path: str, name: str, settings: Mapping[str, Any]) -> None:
        self.path, self.name, self.settings = path, name, settings

    def fail(self, message: str) -> ModelConfigError:
        return ModelConfigError(f"{self.path}: {message}")

    def section(self, body: Mapping[str, Any], key: str, allowed: set[str]) -> dict[str, Any]:
        value = body.get(key, {})
        if not isinstance(value, dict):
            raise self.fail(f'"{key}" must be an object {{...}}, received {_describe(value)}.')
        self.known(value, allowed, f'"{key}"')
        return value

    def known(self, body: Mapping[str, Any], allowed: set[str], where: str) -> None:
        unknown = sorted(set(body) - allowed)
        if unknown:
            raise self.fail(f"unknown field(s) {', '.join(map(repr, unknown))} in {where}; "
                            f"expected only {', '.join(sorted(allowed))}. Remove or correct them.")

    def choice(self, body: Mapping[str, Any], key: str, choices: Sequence[str], default: str) -> str:
        value = body.get(key, default)
        if value not in choices:
            raise self.fail(f'"{key}" must be one of {", ".join(choices)}, received {_describe(value)}.')
        return value

    def integer(self, body: Mapping[str, Any], key: str, low: int, high: int, default: Any) -> Any:
        value = body.get(key, default)
        if value is None and default is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise self.fail(f'"{key}" must be an integer in {low}..{high}, received {_describe(value)}.')
        return value

    def triple(self, body: Mapping[str, Any], key: str, default: tuple[float, float, float]) -> tuple[float, ...]:
        value = body.get(key, default)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = [value] * 3  # one number for all three channels
        if (not isinstance(value, (list, tuple)) or len(value) != 3
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)):
            raise self.fail(f'"{key}" must be a number or a list of 3 numbers (one per channel, in '
                            f"channel_order), received {_describe(value)}.")
        return tuple(float(v) for v in value)

    def parse(self, body: Any) -> ModelConfig:
        if not isinstance(body, dict):
            raise self.fail(f"must hold a JSON object {{...}}, received {_describe(body)}.")
        self.known(body, _TOP_LEVEL, "the top level")
        declared = body.get("name", self.name)
        if declared != self.name:
            raise self.fail(f'"name" is {_describe(declared)} but the folder is named {self.name!r}; the folder '
                            'name is the model\'s name: rename the folder or remove "name".')
        source = body.get("source", KERAS_SOURCE)
        builtins = [BUILTIN_PREFIX + n for n in sorted(BUILTIN_NAMES)]
        if source != KERAS_SOURCE and source not in builtins:
            raise self.fail(f'"source" must be "keras" (a {MODEL_FILE} in each version folder) or one of '
                            f"{', '.join(builtins)}, received {_describe(source)}.")
        description = body.get("description", "")
        if not isinstance(description, str):
            raise self.fail('"description" must be a string.')
        inputs = self.section(body, "input", _INPUT)
        if inputs.get("kind", "image") != "image" or "output" in body:
            return self.parse_features(body, source, description)
        for key in ("kind", "features"):
            if key in inputs:
                raise self.fail(f'"input" field {key!r} belongs to a features model: set "input": '
                                '{"kind": "features", "features": [...]} or remove it.')
        pre = self.section(body, "preprocessing", _PREPROCESSING)
        batching = self.section(body, "batching", _BATCHING)
        normalization = self.choice(pre, "normalization", NORMALIZATIONS, "unit")
        channel_order = self.choice(inputs, "channel_order", CHANNEL_ORDERS,
                                    DEFAULT_CHANNEL_ORDER.get(normalization, "RGB"))
        try:
            check_channel_order(normalization, channel_order)
        except ValueError as exc:
            raise self.fail(str(exc)) from None
        if normalization != "mean_std" and ("mean" in pre or "std" in pre):
            raise self.fail(f'"mean" and "std" apply only to normalization "mean_std", not {normalization!r}. '
                            'Remove them or set normalization to "mean_std".')
        if normalization == "mean_std" and not ("mean" in pre and "std" in pre):
            raise self.fail('normalization "mean_std" needs both "mean" and "std" (0..255 pixel units, '
                            'e.g. "mean": [127, 127, 127], "std": [128, 128, 128]).')
        std = self.triple(pre, "std", (1.0, 1.0, 1.0))
        if any(s == 0 for s in std):
            raise self.fail('"std" must not contain 0 (it divides).')
        crop_fraction = pre.get("crop_fraction", 0.875)
        if isinstance(crop_fraction, bool) or not isinstance(crop_fraction, (int, float)) \
                or not 0.05 <= crop_fraction <= 1.0:
            raise self.fail(f'"crop_fraction" must be a number in 0.05..1 (the share of the shorter side the '
                            f"center crop keeps, 0.875 = 224 of 256), received {_describe(crop_fraction)}.")
        labels = body.get("labels", "")
        if not isinstance(labels, str):
            raise self.fail('"labels" must be a file name (relative to the model folder) or "imagenet".')
        weights = body.get("weights", "")
        if not isinstance(weights, str):
            raise self.fail('"weights" must be a path or "random".')
        if weights and not source.startswith(BUILTIN_PREFIX):
            raise self.fail('"weights" applies only to built-in sources; a saved Keras model carries its own.')
        precision = self.choice(body, "precision", PRECISIONS, str(self.settings.get("MODEL_PRECISION") or "float32"))
        return ModelConfig(
            name=self.name, folder=os.path.dirname(self.path), config_file=self.path, source=source,
            description=description,
            input_height=self.integer(inputs, "height", 1, MAX_SIDE, None),
            input_width=self.integer(inputs, "width", 1, MAX_SIDE, None),
            channel_order=channel_order,
            resize=self.choice(pre, "resize", RESIZE_POLICIES, "center_crop"),
            crop_fraction=float(crop_fraction),
            interpolation=self.choice(pre, "interpolation", INTERPOLATIONS, "bilinear"),
            pad_value=self.integer(pre, "pad_value", 0, 255, 0),
            normalization=normalization,
            mean=self.triple(pre, "mean", (0.0, 0.0, 0.0)),  # type: ignore[arg-type]
            std=std,  # type: ignore[arg-type]
            labels=labels,
            max_batch_size=self.integer(batching, "max_batch_size", 1, MAX_BATCH_SIZE,
                                        int(self.settings.get("BATCH_SIZE") or 8)),
            max_wait_ms=self.integer(batching, "max_wait_ms", 0, 60_000, int(self.settings.get("BATCH_WAIT_MS") or 0)),
            precision=precision,
            version_policy=self.policy(body.get("version_policy", {"latest": 1})),
            weights=weights,
        )

    def parse_features(self, body: dict[str, Any], source: str, description: str) -> ModelConfig:
        """A features model's config.json: "input" of kind "features", and its "output"."""
        inputs = self.section(body, "input", _FEATURES_INPUT)
        if inputs.get("kind") != "features":
            raise self.fail(f'"input" "kind" must be "image" or "features", received {_describe(inputs.get("kind"))}'
                            ' (a model with an "output" section takes features).')
        if source != KERAS_SOURCE:
            raise self.fail('a features model must be "source": "keras" (a model.keras in each version folder).')
        for key in ("preprocessing", "weights"):
            if key in body:
                raise self.fail(f'"{key}" applies to image models only; a features model normalises each '
                                'feature itself ("mean"/"std" or "min"/"max" in its entry). Remove it.')
        raw = inputs.get("features")
        if not isinstance(raw, list) or not 1 <= len(raw) <= MAX_FEATURES:
            raise self.fail(f'"input" "features" must be a list of 1..{MAX_FEATURES} feature objects in the model\'s '
                            f'input order, e.g. [{{"name": "age", "mean": 40, "std": 12}}], received {_describe(raw)}.')
        features = tuple(self.feature(item, index) for index, item in enumerate(raw))
        names = [f.name for f in features]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise self.fail(f"feature name(s) {', '.join(map(repr, repeated))} appear more than once; give "
                            "each feature its own name.")
        output = self.section(body, "output", _OUTPUT)
        kind = self.choice(output, "kind", ("classification", "probability", "regression"), "classification")
        labels = body.get("labels", "")
        if not isinstance(labels, str) or labels == "imagenet":
            raise self.fail('"labels" must be a file name (relative to the model folder).')
        positive, outputs = "", ()
        if kind == "probability":
            positive = output.get("positive_label")
            if not isinstance(positive, str) or not 1 <= len(positive) <= MAX_NAME:
                raise self.fail('output "probability" needs "positive_label": the name of the class whose '
                                f'probability the model\'s one sigmoid output is, received {_describe(positive)}.')
        if kind == "regression":
            outputs = self.regression_values(output.get("values"))
        for key in ("positive_label", "values"):
            if key in output and not ((key == "positive_label" and kind == "probability")
                                      or (key == "values" and kind == "regression")):
                raise self.fail(f'output "{key}" does not apply to kind {kind!r}; remove it.')
        if labels and kind != "classification":
            raise self.fail(f'"labels" applies to output "classification", not {kind!r}; remove it.')
        batching = self.section(body, "batching", _BATCHING)
        return ModelConfig(
            name=self.name, folder=os.path.dirname(self.path), config_file=self.path, source=source,
            description=description, labels=labels,
            max_batch_size=self.integer(batching, "max_batch_size", 1, MAX_BATCH_SIZE,
                                        int(self.settings.get("FEATURES_BATCH_SIZE") or 256)),
            max_wait_ms=self.integer(batching, "max_wait_ms", 0, 60_000, int(self.settings.get("BATCH_WAIT_MS") or 0)),
            precision=self.choice(body, "precision", PRECISIONS, str(self.settings.get("MODEL_PRECISION") or "float32")),
            version_policy=self.policy(body.get("version_policy", {"latest": 1})),
            input_kind="features", features=features, output_kind=kind, outputs=outputs, positive_label=positive,
        )

    def feature(self, item: Any, index: int) -> FeatureSpec:
        if not isinstance(item, dict):
            raise self.fail(f"feature {index} must be an object with at least a \"name\", received {_describe(item)}.")
        name = item.get("name")
        if not is_valid_feature_name(name):
            raise self.fail(f'feature {index}: "name" must be 1-64 of A-Z a-z 0-9 _ . - starting with a letter or _, '
                            f"received {_describe(name)}.")
        where = f"feature {name!r}"
        kind = item.get("type", "numeric")
        if kind not in ("numeric", "categorical"):
            raise self.fail(f'{where}: "type" must be "numeric" or "categorical", received {_describe(kind)}.')
        self.known(item, _NUMERIC if kind == "numeric" else _CATEGORICAL, where)
        try:
            return self.numeric(item, name) if kind == "numeric" else self.categorical(item, name)
        except RecordError as exc:
            raise self.fail(f"{where}: {exc}. Fix that feature's entry.") from None

    def numeric(self, item: dict[str, Any], name: str) -> FeatureSpec:
        where = f"feature {name!r}"
        values: dict[str, Any] = {}
        for key in ("mean", "std", "min", "max"):
            if key in item:
                if not _is_number(item[key]):
                    raise self.fail(f'{where}: "{key}" must be a finite number, received {_describe(item[key])}.')
                values[key] = float(item[key])
        given = set(values)
        if given not in (set(), {"mean", "std"}, {"min", "max"}):
            raise self.fail(f'{where}: give its normalisation as "mean" and "std" (computed on the training '
                            f'data), or as "min" and "max", or neither; received {", ".join(sorted(given))}.')
        if values.get("std", 1.0) <= 0 or values.get("max", 1.0) <= values.get("min", 0.0):
            raise self.fail(f'{where}: "std" must be > 0 and "max" > "min" (they divide).')
        low = high = None
        if "range" in item:
            bounds = item["range"]
            if (not isinstance(bounds, list) or len(bounds) != 2
                    or not all(b is None or _is_number(b) for b in bounds)
                    or (None not in bounds and bounds[0] > bounds[1])):
                raise self.fail(f'{where}: "range" must be [low, high] (null for no bound), the values a request '
                                f"may send, received {_describe(bounds)}.")
            low, high = (None if b is None else float(b) for b in bounds)
        default = item.get("default")
        if default is not None and not _is_number(default):
            raise self.fail(f'{where}: "default" must be a number, received {_describe(default)}.')
        unit = item.get("unit", "")
        if not isinstance(unit, str) or len(unit) > MAX_NAME:
            raise self.fail(f'{where}: "unit" must be a short string, received {_describe(unit)}.')
        normalization = "mean_std" if "mean" in given else "min_max" if "min" in given else "none"
        return FeatureSpec(name=name, type="numeric", default=None if default is None else float(default),
                           normalization=normalization, low=low, high=high, unit=unit, **values)

    def categorical(self, item: dict[str, Any], name: str) -> FeatureSpec:
        where = f"feature {name!r}"
        vocabulary = item.get("vocabulary")
        if isinstance(vocabulary, str):
            vocabulary = self.vocabulary_file(vocabulary, where)
        if (not isinstance(vocabulary, list) or not 1 <= len(vocabulary) <= MAX_VOCABULARY
                or not all(isinstance(v, str) and 1 <= len(v) <= MAX_NAME for v in vocabulary)):
            raise self.fail(f'{where}: "vocabulary" must be a list of 1..{MAX_VOCABULARY} strings (each 1..{MAX_NAME} '
                            "characters) or the name of a file in the model folder with one per line, "
                            f"received {_describe(vocabulary)}.")
        repeated = sorted({v for v in vocabulary if vocabulary.count(v) > 1})
        if repeated:
            raise self.fail(f"{where}: vocabulary value(s) {', '.join(map(repr, repeated[:5]))} repeat; list each once.")
        unknown = self.choice(item, "unknown", ("error", "bucket"), "error")
        default = item.get("default")
        if default is not None and default not in vocabulary:
            raise self.fail(f'{where}: "default" must be one of its vocabulary, received {_describe(default)}.')
        return FeatureSpec(name=name, type="categorical", default=default, vocabulary=tuple(vocabulary),
                           unknown=unknown)

    def vocabulary_file(self, file_name: str, where: str) -> list[str]:
        folder = os.path.dirname(self.path)
        path = os.path.normpath(os.path.join(folder, file_name))
        # Followed through links too: every value of the file is published in the model's contract.
        if os.path.isabs(file_name) or not path.startswith(folder + os.sep) or resolves_outside(path, folder):
            raise self.fail(f'{where}: "vocabulary" file {file_name!r} must be inside the model folder {folder}.')
        try:
            with open(path, encoding="utf-8") as f:
                return [line.strip() for line in f if line.strip()]
        except FileNotFoundError:
            raise self.fail(f'{where}: "vocabulary" file {path} not found. Add it (one value per line) or list the '
                            "values in config.json.") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise self.fail(f'{where}: "vocabulary" file {path} cannot be read as UTF-8 text ({exc}).') from None

    def regression_values(self, raw: Any) -> tuple[OutputSpec, ...]:
        usage = ('output "regression" needs "values": the model\'s outputs in order, e.g. '
                 '[{"name": "duration", "unit": "s"}]')
        if not isinstance(raw, list) or not 1 <= len(raw) <= MAX_FEATURES:
            raise self.fail(f"{usage}; received {_describe(raw)}.")
        outputs = []
        for item in raw:
            if (not isinstance(item, dict) or not set(item) <= {"name", "unit"} or not is_valid_feature_name(item.get("name"))
                    or not isinstance(item.get("unit", ""), str) or len(item.get("unit", "")) > MAX_NAME):
                raise self.fail(f"{usage}; each a name (1-64 of A-Z a-z 0-9 _ . -) and an optional short unit, "
                                f"received {_describe(item)}.")
            outputs.append(OutputSpec(item["name"], item.get("unit", "")))
        if len({o.name for o in outputs}) != len(outputs):
            raise self.fail(f"{usage}; the names repeat.")
        return tuple(outputs)

    def policy(self, value: Any) -> VersionPolicy:
        usage = ('"version_policy" must be {"latest": N} (the N newest versions), '
                 '{"specific": ["1", "3"]} or "all"')
        if value == "all" or value == {"all": {}}:
            return VersionPolicy("all")
        if isinstance(value, dict) and len(value) == 1 and "latest" in value:
            n = value["latest"]
            if isinstance(n, bool) or not isinstance(n, int) or n < 1:
                raise self.fail(f"{usage}; latest must be an integer >= 1, received {_describe(n)}.")
            return VersionPolicy("latest", latest=n)
        if isinstance(value, dict) and len(value) == 1 and "specific" in value:
            listed = value["specific"]
            if isinstance(listed, (list, tuple)):
                listed = [str(v) if isinstance(v, int) and not isinstance(v, bool) else v for v in listed]
            if not isinstance(listed, list) or not listed or not all(is_valid_version(v) for v in listed):
                raise self.fail(f"{usage}; specific must list version folder names, received {_describe(listed)}.")
            return VersionPolicy("specific", specific=tuple(listed))
        raise self.fail(f"{usage}; received {_describe(value)}.")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _describe(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, (dict, list, str, int, float, bool, type(None))) else repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


# --- model folders ----------------------------------------------------------------------------
def scan_models(root: str) -> tuple[list[str], list[tuple[str, str]]]:
    """The model folders under `root` (those holding a config.json), sorted by name, and for every
    other folder there, (its name, why it is not a model)."""
    try:
        entries = sorted(os.listdir(root))
    except OSError as exc:
        raise ModelConfigError(f"MODEL_REPOSITORY={root!r} cannot be listed ({exc}). Point "
                               "MODEL_REPOSITORY at a folder of model folders.") from None
    names, others = [], []
    for entry in entries:
        folder = os.path.join(root, entry)
        if entry.startswith(".") or not os.path.isdir(folder):
            continue
        if not os.path.isfile(os.path.join(folder, CONFIG_FILE)):
            others.append((entry, f"{folder}: no {CONFIG_FILE}, so it is not a model; add one "
                                  "(see the README's \"Model repository\" section)"))
            continue
        if not is_valid_model_name(entry):
            others.append((entry, f"{folder}: {entry!r} cannot name a model (1-64 of A-Z a-z 0-9 _ . -, "
                                  "starting with a letter or digit); rename the folder"))
            continue
        names.append(entry)
    return names, others


def model_folder(root: str, name: str) -> str:
    """The folder of model `name` in the repository at `root`; ModelConfigError if there is none."""
    if not is_valid_model_name(name):
        raise ModelConfigError(f"{name!r} is not a valid model name (1-64 of A-Z a-z 0-9 _ . -).")
    path = os.path.join(root, name)
    if not os.path.isdir(path):
        known = ", ".join(scan_models(root)[0]) or "none"
        raise ModelConfigError(f"{path}: no such model folder in MODEL_REPOSITORY={root!r} "
                               f"(models there: {known}). Create it or choose another model.")
    return path


def shipped_config(name: str, settings: Mapping[str, Any]) -> ModelConfig:
    """The shipped repository entry of the built-in model `name` (its evaluated preprocessing)."""
    return parse_config(os.path.join(model_folder(SHIPPED_REPOSITORY, name), CONFIG_FILE), name, settings)

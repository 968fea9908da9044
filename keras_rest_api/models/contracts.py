"""A loaded model's contract and the preprocessing it implies: what every loader attaches.

A built-in model takes the contract of its entry in the repository shipped with the package
(keras_rest_api/model_repository/, the preprocessing its authors evaluated it with); a model
loaded through MODEL=<path>.keras the legacy contract (squashed to its input, MODEL_PREPROCESSING).
`finish` then applies the model's precision and recomputes the preprocessing from the contract.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Any, Mapping

from keras_rest_api.models.base import LoadedModel, ModelLoadError
from keras_rest_api.models.config import shipped_config
from keras_rest_api.models.features import feature_encoder
from keras_rest_api.models.precision import with_precision
from keras_rest_api.models.preprocessing import Preprocessor, preprocessor
from keras_rest_api.queue.records import ModelContract, RecordError


def contract_preprocessor(contract: ModelContract) -> Preprocessor:
    """The vectorised channel reordering + normalisation `contract` declares (for a features
    model: each feature's normalisation or one-hot encoding)."""
    if contract.takes_features:
        return feature_encoder(contract.features)
    return preprocessor(contract.normalization, contract.channel_order, contract.mean, contract.std)


def finish(loaded: LoadedModel, precision: str) -> LoadedModel:
    """`loaded` in `precision`, its preprocessing taken from its contract (which records the precision)."""
    try:
        loaded.model = with_precision(loaded.model, precision)
    except ValueError as exc:
        raise ModelLoadError(str(exc)) from None
    loaded.precision = precision
    if loaded.contract is not None:
        loaded.contract = dataclasses.replace(loaded.contract, precision=precision)
        loaded.preprocess = contract_preprocessor(loaded.contract)
        loaded.preprocessing = "features" if loaded.contract.takes_features else loaded.contract.normalization
    return loaded


def legacy_contract(name: str, input_size: tuple[int, int], classes: int, normalization: str,
                    settings: Mapping[str, Any]) -> ModelContract:
    """The contract of a model loaded through MODEL=<path>.keras: today's squash to the input size."""
    try:
        return ModelContract(
            name=model_name_from_file(name), version="1", input_height=input_size[0], input_width=input_size[1],
            classes=classes, resize="squash", interpolation="bilinear",
            channel_order="BGR" if normalization == "caffe" else "RGB", normalization=normalization,
            max_batch_size=int(settings.get("BATCH_SIZE") or 8), max_wait_ms=int(settings.get("BATCH_WAIT_MS") or 0),
        )
    except RecordError as exc:
        raise ModelLoadError(f"MODEL={settings.get('MODEL')!r}: {exc}.") from None


def model_name_from_file(stem: str) -> str:
    """A file's stem made fit to name a model in URLs and keys ("my model" -> "my_model")."""
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", stem).lstrip("._-")[:64]
    return name or "model"


def builtin_contract(name: str, input_size: tuple[int, int], classes: int,
                     settings: Mapping[str, Any]) -> ModelContract:
    """A built-in model's contract, from its entry in the shipped keras_rest_api/model_repository/."""
    return shipped_config(name, settings).contract("1", input_size, classes)

"""Loading one version of a repository model, and unloading it.

Every check here names the file at fault and the fix: a model file that Keras cannot read,
an input size in config.json that the saved model does not take, a labels file whose count
differs from the model's outputs. models.repository decides which versions to load; this
module loads one (a saved model.keras, or a built-in model of models.builtin).
"""
from __future__ import annotations

import gc
import logging
import os
from typing import Any, Mapping

import numpy as np

from keras_rest_api.models.base import LoadedModel
from keras_rest_api.models.builtin import BUILTIN_MODELS
from keras_rest_api.models.config import MODEL_FILE, ModelConfig, ModelConfigError, resolves_outside
from keras_rest_api.models.contracts import (builtin_contract, contract_preprocessor, finish, legacy_contract,
                                             model_name_from_file)
from keras_rest_api.models.declared_size import check_settings_limits
from keras_rest_api.models.imagenet import LabelsNotFound, imagenet_labels

# builtin_contract, legacy_contract and model_name_from_file live in models.contracts; re-exported.
__all__ = ["load_version", "unload", "builtin_contract", "contract_preprocessor", "finish",
           "legacy_contract", "model_name_from_file"]

log = logging.getLogger(__name__)


# --- loading a repository version ------------------------------------------------------------
def load_version(config: ModelConfig, version: str, settings: Mapping[str, Any]) -> LoadedModel:
    """Version `version` of the model `config` describes, checked against its config."""
    folder = os.path.join(config.folder, version)
    model_file = os.path.join(folder, MODEL_FILE)
    if config.takes_features:
        return _load_features_version(config, version, folder, model_file, settings)
    if os.path.isfile(model_file):
        model = _read_keras(model_file, settings)
        input_size = _input_size(model, model_file, config)
        classes = _classes(model, model_file)
        details: dict[str, Any] = {"path": model_file}
    elif config.builtin:
        model, input_size, details = _build_builtin(config, folder, settings)
        classes = _classes(model, f"built-in {config.builtin}")
        model_file = f"built-in {config.builtin}"
    else:  # version_problem() said so already; kept for callers that skip it
        raise ModelConfigError(f"{folder}: version folder has no {MODEL_FILE}.")
    labels = _labels(config, folder, classes, model_file)
    contract = config.contract(version, input_size, classes)
    log.info("loaded %s version %s from %s (%dx%d, %d classes, %s, %s)", config.name, version, model_file,
             input_size[0], input_size[1], classes, contract.resize, contract.normalization)
    loaded = LoadedModel(name=config.name, model=model, input_size=input_size, labels=labels,
                         preprocess=contract_preprocessor(contract), preprocessing=contract.normalization,
                         details=details, version=version, contract=contract)
    return finish(loaded, config.precision)


def _load_features_version(config: ModelConfig, version: str, folder: str, model_file: str,
                           settings: Mapping[str, Any]) -> LoadedModel:
    """A features model's version: its input width and output checked against config.json."""
    if not os.path.isfile(model_file):
        raise ModelConfigError(f"{folder}: version folder has no {MODEL_FILE}.")
    model = _read_keras(model_file, settings)
    shape = model.input_shape
    if isinstance(shape, list) and len(shape) == 1:
        shape = shape[0]
    width = config.encoded_width
    if not isinstance(shape, tuple) or len(shape) != 2 or shape[1] != width:
        raise ModelConfigError(
            f"{model_file}: input shape {shape}, but {config.config_file} declares {len(config.features)} features "
            f"that encode to {width} columns (a column per numeric feature, one per category of each "
            f"categorical feature, plus its bucket). Save the model with keras.Input(shape=({width},)) or fix "
            "the features in config.json.")
    outputs = _classes(model, model_file)
    expected = {"probability": 1, "regression": len(config.outputs)}.get(config.output_kind, outputs)
    if outputs != expected:
        raise ModelConfigError(
            f"{model_file}: {outputs} outputs, but output kind {config.output_kind!r} in {config.config_file} "
            f"needs {expected} (probability: one sigmoid unit; regression: one unit per declared value).")
    if config.output_kind == "classification":
        labels = _labels(config, folder, outputs, model_file)
    elif config.output_kind == "probability":
        labels = [config.positive_label]
    else:
        labels = [o.name for o in config.outputs]
    contract = config.contract(version, (1, 1), outputs)
    log.info("loaded %s version %s from %s (%d features -> %d columns, %s output of %d)", config.name, version,
             model_file, len(config.features), width, config.output_kind, outputs)
    loaded = LoadedModel(name=config.name, model=model, input_size=(1, 1), labels=labels,
                         preprocess=contract_preprocessor(contract), preprocessing="features",
                         details={"path": model_file}, version=version, contract=contract)
    return finish(loaded, config.precision)


def _read_keras(path: str, settings: Mapping[str, Any]) -> Any:
    import keras

    # Before Keras builds (and initialises) every layer the file declares: a tiny file can
    # declare gigabytes of weights.
    check_settings_limits(path, settings)
    try:
        return keras.saving.load_model(path, compile=False)
    except Exception as exc:  # Keras raises many kinds for a damaged or foreign file
        raise ModelConfigError(
            f"{path}: cannot be loaded as a Keras model ({type(exc).__name__}: {str(exc)[:300]}). Save it "
            f"again with model.save({MODEL_FILE!r}) (Keras 3 format), and copy it into place whole "
            "(write elsewhere, then move it into the version folder)."
        ) from None


def _input_size(model: Any, model_file: str, config: ModelConfig) -> tuple[int, int]:
    shape = model.input_shape
    if isinstance(shape, list):
        if len(shape) != 1:
            raise ModelConfigError(f"{model_file}: the model has {len(shape)} inputs; an image classifier "
                                   "here takes one input of shape (None, height, width, 3).")
        shape = shape[0]
    shape = tuple(shape)
    if len(shape) != 4 or shape[3] != 3:
        raise ModelConfigError(f"{model_file}: input shape {shape}, expected (None, height, width, 3) "
                               "(channels last, 3 channels). Re-save the model with an RGB image input.")
    declared = (config.input_height, config.input_width)
    saved = (shape[1], shape[2])
    for axis, said, takes in (("height", declared[0], saved[0]), ("width", declared[1], saved[1])):
        if said is not None and takes is not None and said != takes:
            raise ModelConfigError(
                f"{config.config_file}: input {axis} is {said}, but {model_file} takes "
                f"{saved[0]}x{saved[1]} (height x width). Set \"input\": {{\"height\": {saved[0]}, "
                f"\"width\": {saved[1]}}} (or leave them out), or save the model with the input size you meant."
            )
        if said is None and takes is None:
            raise ModelConfigError(
                f"{model_file}: the model takes any {axis} and {config.config_file} gives none. Set "
                "\"input\": {\"height\": H, \"width\": W} to the size the model was trained at."
            )
    return int(declared[0] or saved[0]), int(declared[1] or saved[1])


def _classes(model: Any, source: str) -> int:
    shape = model.output_shape
    if isinstance(shape, list):
        if len(shape) != 1:
            raise ModelConfigError(f"{source}: the model has {len(shape)} outputs; a classifier here has one "
                                   "output of shape (None, classes).")
        shape = shape[0]
    if len(shape) != 2 or not shape[1]:
        raise ModelConfigError(f"{source}: output shape {tuple(shape)}, expected (None, classes): one score "
                               "per class. Add a Dense(classes) head (softmax for probabilities).")
    return int(shape[1])


def _build_builtin(config: ModelConfig, folder: str, settings: Mapping[str, Any]) -> tuple[Any, tuple[int, int],
                                                                                          dict[str, Any]]:
    weights = _builtin_weights(config, folder, settings)
    built = BUILTIN_MODELS[config.builtin]({**settings, "MODEL": config.builtin, "MODEL_WEIGHTS": weights})
    declared = (config.input_height or built.input_size[0], config.input_width or built.input_size[1])
    if declared != built.input_size:
        raise ModelConfigError(
            f"{config.config_file}: input is {declared[0]}x{declared[1]}, but built-in {config.builtin} takes "
            f"{built.input_size[0]}x{built.input_size[1]}. Set \"input\" to that (or leave it out)."
        )
    return built.model, built.input_size, dict(built.details)


def _builtin_weights(config: ModelConfig, folder: str, settings: Mapping[str, Any]) -> str:
    """config.json's "weights", else MODEL_WEIGHTS when it is "random" or MODEL names this model alone.

    MODEL lists the models a server serves (comma-separated): a weights file given through the
    one MODEL_WEIGHTS setting belongs to one model, so with several it must go in config.json.
    """
    if config.weights:
        if config.weights == "random" or os.path.isabs(config.weights):
            return config.weights
        for base in (folder, config.folder):
            if os.path.isfile(os.path.join(base, config.weights)):
                return os.path.join(base, config.weights)
        raise ModelConfigError(f"{config.config_file}: \"weights\" {config.weights!r} is in neither {folder} "
                               f"nor {config.folder}. Put the file there or fix the path.")
    setting = str(settings.get("MODEL_WEIGHTS") or "")
    served = [n.strip() for n in str(settings.get("MODEL") or "").split(",") if n.strip()]
    if setting == "random" or served == [config.name]:
        return setting
    return ""


def _labels(config: ModelConfig, folder: str, classes: int, model_file: str) -> list[str]:
    spec = config.labels or ("imagenet" if config.builtin else "")
    if not spec:
        log.warning("%s: no \"labels\"; the %d classes of %s are named by index", config.config_file, classes,
                    config.name)
        return [str(i) for i in range(classes)]
    if spec == "imagenet":
        try:
            labels = list(imagenet_labels())
        except LabelsNotFound as exc:
            raise ModelConfigError(f"{config.config_file}: \"labels\": \"imagenet\": {exc}") from None
        where = "the packaged ImageNet labels"
    else:
        _check_inside(config, spec)
        candidates = [os.path.join(folder, spec), os.path.join(config.folder, spec)]
        path = next((c for c in candidates if os.path.isfile(c)), "")
        if path and resolves_outside(path, config.folder):
            raise ModelConfigError(f"{config.config_file}: labels file {spec!r} is a link to "
                                   f"{os.path.realpath(path)}, outside the model's folder {config.folder}. "
                                   "Put the labels file itself in the model's folder.")
        if not path:
            raise ModelConfigError(f"{config.config_file}: labels file {spec!r} not found (looked for "
                                   f"{' and '.join(candidates)}). Add it there: one class name per line, in "
                                   "class-index order.")
        try:
            with open(path, encoding="utf-8") as f:
                labels = [line.strip() for line in f if line.strip()]
        except (OSError, UnicodeDecodeError) as exc:
            raise ModelConfigError(f"{path}: cannot be read as UTF-8 text ({exc}).") from None
        where = path
    if len(labels) != classes:
        raise ModelConfigError(
            f"{where}: {len(labels)} labels, but {model_file} has {classes} outputs. Give exactly one label per "
            "line, in class-index order (blank lines are skipped)."
        )
    return labels


def _check_inside(config: ModelConfig, spec: str) -> None:
    """A labels path names a file in the model's folder (or its version folder), nothing else:
    every line of the file becomes a label in answers, so a path out of the folder would
    publish any file the model server can read."""
    parts = spec.replace("\\", "/").split("/")
    if os.path.isabs(spec) or ".." in parts or "\0" in spec:
        raise ModelConfigError(f"{config.config_file}: \"labels\" {spec[:80]!r} leaves the model's folder; "
                               "give a file name inside it (e.g. \"labels.txt\"), relative, without '..'.")


# --- unloading -------------------------------------------------------------------------------
def _unloaded(pixels: np.ndarray) -> np.ndarray:
    raise RuntimeError("this model was unloaded")


def unload(loaded: LoadedModel) -> None:
    """Free what `loaded` holds (the Keras model, its traced functions), so reloads do not grow memory.

    The LoadedModel stays as a record (name, version, contract) but can no longer predict.
    """
    model, loaded.model = loaded.model, None
    loaded.preprocess = _unloaded
    if model is None:
        return
    # predict_on_batch keeps a traced tf.function on the model; dropping the model frees it with
    # the weights. The collector has to run now: Keras layers sit in reference cycles.
    # keras.backend.clear_session() is deliberately not called: it resets Keras's global state
    # for every thread and clears TensorFlow's kernel cache under the models still serving, and
    # it is not needed: 20 cycles of load, predict, unload (bench/unload_memory.py) leave RSS
    # flat without it (EfficientNet-Lite0: a 10 MB band from cycle 3 to 20; a 4.4 M-parameter
    # model: +0.3 MB from cycle 2 to 20, against about +30 MB a cycle when models are kept).
    del model
    gc.collect()


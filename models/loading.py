"""Loading one version of a repository model, attaching contracts, and unloading.

Every check here names the file at fault and the fix: a model file that Keras cannot read,
an input size in config.json that the saved model does not take, a labels file whose count
differs from the model's outputs.
"""
from __future__ import annotations

import dataclasses
import gc
import logging
import os
import re
from typing import Any, Mapping

import numpy as np

from models import BUILTIN_MODELS, LoadedModel, ModelLoadError
from models.precision import with_precision
from models.preprocessing import Preprocessor, preprocessor
from models.repository import MODEL_FILE, ModelConfig, ModelConfigError
from protocol import ModelContract, ProtocolError

log = logging.getLogger(__name__)


def contract_preprocessor(contract: ModelContract) -> Preprocessor:
    """The vectorised channel reordering + normalisation `contract` declares."""
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
        loaded.preprocessing = loaded.contract.normalization
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
    except ProtocolError as exc:
        raise ModelLoadError(f"MODEL={settings.get('MODEL')!r}: {exc}.") from None


def model_name_from_file(stem: str) -> str:
    """A file's stem made fit to name a model in URLs and keys ("my model" -> "my_model")."""
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", stem).lstrip("._-")[:64]
    return name or "model"


def builtin_contract(name: str, input_size: tuple[int, int], classes: int,
                     settings: Mapping[str, Any]) -> ModelContract:
    """A built-in model's contract, from its entry in the project's model_repository/."""
    from models.repository import shipped_config

    return shipped_config(name, settings).contract("1", input_size, classes)


# --- loading a repository version ------------------------------------------------------------
def load_version(config: ModelConfig, version: str, settings: Mapping[str, Any]) -> LoadedModel:
    """Version `version` of the model `config` describes, checked against its config."""
    folder = os.path.join(config.folder, version)
    model_file = os.path.join(folder, MODEL_FILE)
    if os.path.isfile(model_file):
        model = _read_keras(model_file)
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


def _read_keras(path: str) -> Any:
    import keras

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
    from models.imagenet import LabelsNotFound, imagenet_labels

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
        candidates = [spec] if os.path.isabs(spec) else [os.path.join(folder, spec), os.path.join(config.folder, spec)]
        path = next((c for c in candidates if os.path.isfile(c)), "")
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


# --- unloading -------------------------------------------------------------------------------
def _unloaded(pixels: np.ndarray) -> np.ndarray:
    raise RuntimeError("this model was unloaded")


def release(loaded: LoadedModel) -> None:
    """Drop `loaded`'s Keras model and collect it, so its weights and traced functions are freed."""
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

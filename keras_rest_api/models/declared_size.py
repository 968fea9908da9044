"""A .keras file's declared size, checked before Keras builds anything from it.

Keras builds every layer a saved model's config.json declares, and initialises its weights,
before it reads a single stored weight: a 1.8 KB .keras file declaring one huge Dense layer
made the model server ask for gigabytes, and an out-of-memory kill takes down every model that
server serves. So before `keras.saving.load_model`, `check_declared_size`:

1. reads config.json from the archive, refusing one over MAX_MODEL_CONFIG_BYTES (by its
   declared size, and by what is actually read, whatever the zip header claims);
2. rebuilds the model's structure from it inside a `keras.StatelessScope` that does not
   initialise variables: Keras's own layers compute every weight's shape (so the count is
   exact for any layer Keras can load, nested models and shared layers included) while no
   weight is allocated;
3. refuses the model when its weights hold more than MAX_MODEL_PARAMETERS values.

Why not build in a child process under a memory limit: that costs a second Keras import (5-15 s
on a loaded CPU) per version loaded, and TensorFlow reserves address space at import, so an
address-space limit either trips on a healthy model or has to be loose. The shape-only build
costs what building the structure costs (no weight is initialised) and gives an exact count.
"""
from __future__ import annotations

import json
import logging
import math
import zipfile
from typing import Any, Mapping

from keras_rest_api.models.config import ModelConfigError

log = logging.getLogger(__name__)

CONFIG_NAME = "config.json"


class ModelTooLarge(ModelConfigError):
    """A model whose declared size is over the limits: it is refused before anything is built."""


def check_settings_limits(path: str, settings: Mapping[str, Any]) -> int:
    """check_declared_size with the limits in `settings`. A partial mapping (tests, tools that
    pass only MODEL) gets the defaults of keras_rest_api/settings.py, which the model server's
    full settings always carry: the check never goes unmade for want of a setting."""
    return check_declared_size(path, int(settings.get("MAX_MODEL_PARAMETERS") or 200_000_000),
                               int(settings.get("MAX_MODEL_CONFIG_BYTES") or 16 * 1024 * 1024))


def check_declared_size(path: str, max_parameters: int, max_config_bytes: int) -> int:
    """The number of weight values the .keras file at `path` declares, once it is within the
    limits; ModelTooLarge (or ModelConfigError for an unreadable archive) otherwise."""
    config = _read_config(path, max_config_bytes)
    parameters = _declared_parameters(config, path)
    if parameters > max_parameters:
        raise ModelTooLarge(
            f"{path}: the model declares {parameters:,} parameters ({_gib(parameters)} GiB as float32), more than "
            f"MAX_MODEL_PARAMETERS ({max_parameters:,}); it was not built. Raise MAX_MODEL_PARAMETERS if the "
            "model is meant to be that large and the host has the memory.")
    log.info("%s declares %d parameters (limit %d)", path, parameters, max_parameters)
    return parameters


def _read_config(path: str, max_config_bytes: int) -> Any:
    try:
        with zipfile.ZipFile(path) as archive:
            info = archive.getinfo(CONFIG_NAME)
            if info.file_size > max_config_bytes:
                raise _config_too_large(path, info.file_size, max_config_bytes)
            with archive.open(info) as handle:
                # Read one byte past the limit: a header that understates the size is caught too.
                text = handle.read(max_config_bytes + 1)
    except ModelConfigError:
        raise
    except (OSError, KeyError, zipfile.BadZipFile, RuntimeError, EOFError) as exc:
        raise ModelConfigError(f"{path}: cannot be loaded as a Keras model: not a readable .keras archive with a "
                               f"{CONFIG_NAME} ({type(exc).__name__}: {str(exc)[:200]}). Save it again with "
                               "model.save('model.keras').") from None
    if len(text) > max_config_bytes:
        raise _config_too_large(path, len(text), max_config_bytes)
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise ModelConfigError(f"{path}: cannot be loaded as a Keras model: its {CONFIG_NAME} is not JSON "
                               f"({type(exc).__name__}). Save it again with model.save('model.keras').") from None


def _config_too_large(path: str, size: int, limit: int) -> ModelTooLarge:
    return ModelTooLarge(f"{path}: its {CONFIG_NAME} holds {size:,} bytes or more, over MAX_MODEL_CONFIG_BYTES "
                         f"({limit:,}); it was not parsed. Raise MAX_MODEL_CONFIG_BYTES if that is expected.")


def _declared_parameters(config: Any, path: str) -> int:
    import keras
    from keras.src.backend.common import global_state

    # Variables made in a stateless scope are queued for initialisation at the next scope exit
    # that initialises; the queue is put back as it was, so this build's never are.
    queued = list(global_state.get_global_attribute("uninitialized_variables") or [])
    if isinstance(config, dict):
        # The structure alone: a compiled model's optimizer (compile_config) would be built too,
        # and its variables cannot be made in a stateless scope. It is not loaded for serving.
        config = {key: value for key, value in config.items() if key != "compile_config"}
    try:
        with keras.StatelessScope(initialize_variables=False):
            model = keras.saving.deserialize_keras_object(config, safe_mode=True)
            weights = list(getattr(model, "weights", []))
            return sum(math.prod(int(d) for d in weight.shape) for weight in weights)
    except Exception as exc:  # Keras raises many kinds for a config it cannot build
        raise ModelConfigError(f"{path}: cannot be loaded as a Keras model: its {CONFIG_NAME} does not describe a "
                               f"model Keras can build ({type(exc).__name__}: {str(exc)[:300]}). Save it again with "
                               "model.save('model.keras').") from None
    finally:
        global_state.set_global_attribute("uninitialized_variables", queued)


def _gib(parameters: int) -> str:
    return f"{parameters * 4 / 2**30:,.1f}"

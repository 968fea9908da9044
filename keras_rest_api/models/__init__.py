"""The models the model server can serve, behind one small interface.

A model is described by a `LoadedModel` (models.base): the Keras model, its labels, its contract
(`keras_rest_api.queue.records.ModelContract`: input size, resize policy, normalisation,
batching) and the vectorised preprocessing that turns a batch of uint8 RGB pixels into its input.

Two ways in: `open_repository(settings)` reads the model repository (MODEL_REPOSITORY, one
folder per model with a config.json and numbered version folders; see models.repository and
models.config; empty: the one shipped in keras_rest_api/model_repository/), and
`load_model(settings)`, the single-model path (models.builtin), loads what MODEL names (a name
registered in `BUILTIN_MODELS`, or a path to a saved `.keras` file). `unload` frees a model's memory.
Only the model server uses this package; it imports Keras only when a model is loaded.

The modules, each importing only those above it:
    backends, precision, preprocessing, imagenet, torch_legacy, trust   (no other module of the package)
    base           LoadedModel, ModelLoadError
    config         config.json: ModelConfig, ModelConfigError, the shipped repository
    declared_size  a .keras file's declared parameters, counted before anything is built
    contracts      contracts and the preprocessing they imply
    resnet50, efficientnet_lite0, keras_file                      the loaders
    builtin        BUILTIN_MODELS, load_model
    loading        load_version, unload
    repository     ModelRepository, open_repository
"""
from keras_rest_api.models.base import LoadedModel, ModelLoadError
from keras_rest_api.models.builtin import BUILTIN_MODELS, load_model
from keras_rest_api.models.config import ModelConfigError
from keras_rest_api.models.loading import unload
from keras_rest_api.models.preprocessing import PREPROCESSORS
from keras_rest_api.models.repository import ModelRepository, open_repository

__all__ = ["LoadedModel", "ModelLoadError", "ModelConfigError", "ModelRepository", "BUILTIN_MODELS", "load_model",
           "open_repository", "unload", "PREPROCESSORS"]

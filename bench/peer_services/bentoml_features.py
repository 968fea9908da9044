"""The breast-cancer features model (keras_rest_api.models.examples) as BentoML serves a JSON model:
one service, a batchable JSON route, adaptive batching. Run by bench/features.py --with-bentoml:
    bentoml serve bench.peer_services.bentoml_features:FeaturesService --port N

PEER_MODEL names its model.keras and PEER_LABELS its config.json (the features' order and
training statistics), so it computes exactly what this project's model server does: each
feature standardised, then the network; it answers the probability of "malignant".
"""
from __future__ import annotations

import json
import os
from typing import Any

import bentoml
import numpy as np

WORKERS = int(os.environ.get("PEER_WORKERS", "2"))
BATCH = int(os.environ.get("PEER_MAX_BATCH", "32"))


@bentoml.service(workers=WORKERS, traffic={"timeout": 60, "max_concurrency": 256})
class FeaturesService:
    def __init__(self) -> None:
        import keras

        self.model = keras.saving.load_model(os.environ["PEER_MODEL"], compile=False)
        with open(os.environ["PEER_LABELS"], encoding="utf-8") as f:
            features = json.load(f)["input"]["features"]
        self.names = [feature["name"] for feature in features]
        self.mean = np.array([feature["mean"] for feature in features])
        self.std = np.array([feature["std"] for feature in features])

    @bentoml.api(route="/predict", batchable=True, max_batch_size=BATCH,
                 max_latency_ms=int(os.environ.get("PEER_MAX_LATENCY_MS", "1000")))
    def predict(self, instances: list[dict[str, float]]) -> list[dict[str, Any]]:
        rows = np.array([[instance[name] for name in self.names] for instance in instances], dtype=np.float64)
        scores = np.asarray(self.model.predict_on_batch(((rows - self.mean) / self.std).astype(np.float32)))
        return [{"success": True, "predictions": [{"label": "malignant", "probability": float(p)}]}
                for p in scores[:, 0]]

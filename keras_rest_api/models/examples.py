"""Two features models trained from real data that ships inside scikit-learn's wheel (no download).

    python -m keras_rest_api.models.examples breast_cancer model_repository/
    python -m keras_rest_api.models.examples diabetes model_repository/

- breast_cancer: 30 measurements of a breast mass (sklearn.datasets.load_breast_cancer, 569
  cases) in, the probability that it is malignant out (output kind "probability").
- diabetes: age, sex, body-mass index, blood pressure and six blood serum measurements
  (load_diabetes(scaled=False), 442 patients; sex is categorical, "1" or "2") in, a measure of
  disease progression one year later out (output kind "regression").

Each is split 80/20 (seed 0, stratified for the classifier); a small Keras network trains on the
80 % in a few seconds, and the model folder written holds config.json (each feature's mean and
std computed from the training split, the accepted ranges, the output) and <version>/model.keras.
The held-out score is printed next to scikit-learn's own baseline on the same split
(LogisticRegression on standardised features; LinearRegression), as one JSON line.
scikit-learn is in the "examples" extra: pip install '.[examples]'.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import tempfile
import time
from typing import Any, Sequence

import numpy as np

EXAMPLES = ("breast_cancer", "diabetes")
SEED = 0


def feature_name(text: str) -> str:
    """A dataset's column name as a feature name ("mean radius" -> "mean_radius")."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", text.strip())


def numeric_entry(name: str, column: np.ndarray, unit: str = "") -> dict[str, Any]:
    """A numeric feature's config.json entry: its training statistics and a range it accepts."""
    entry: dict[str, Any] = {"name": name, "mean": round(float(column.mean()), 6),
                             "std": round(float(column.std()) or 1.0, 6)}
    if column.min() >= 0:  # measurements that cannot be negative
        entry["range"] = [0, None]
    if unit:
        entry["unit"] = unit
    return entry


def load_breast_cancer_data() -> tuple[np.ndarray, np.ndarray, list[str]]:
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    # scikit-learn's target is 1 for benign; the model answers the probability of malignant.
    return data.data.astype(np.float64), (1 - data.target).astype(np.float32), \
        [feature_name(n) for n in data.feature_names]


def load_diabetes_data() -> tuple[np.ndarray, np.ndarray, list[str]]:
    from sklearn.datasets import load_diabetes

    data = load_diabetes(scaled=False)
    return data.data.astype(np.float64), data.target.astype(np.float32), list(data.feature_names)


def split(x: np.ndarray, y: np.ndarray, stratify: bool) -> tuple[np.ndarray, ...]:
    from sklearn.model_selection import train_test_split

    return tuple(train_test_split(x, y, test_size=0.2, random_state=SEED, stratify=y if stratify else None))


def build_breast_cancer(train_x: np.ndarray, names: Sequence[str]) -> dict[str, Any]:
    return {
        "description": "Breast mass measurements (scikit-learn's breast cancer data) -> probability malignant.",
        "input": {"kind": "features",
                  "features": [numeric_entry(n, train_x[:, i]) for i, n in enumerate(names)]},
        "output": {"kind": "probability", "positive_label": "malignant"},
        "batching": {"max_batch_size": 256, "max_wait_ms": 2},
    }


def build_diabetes(train_x: np.ndarray, names: Sequence[str]) -> dict[str, Any]:
    units = {"age": "years", "bmi": "kg/m2", "bp": "mm Hg"}
    features = []
    for i, n in enumerate(names):
        if n == "sex":
            features.append({"name": "sex", "type": "categorical", "vocabulary": ["1", "2"]})
        else:
            features.append(numeric_entry(n, train_x[:, i], units.get(n, "")))
    return {
        "description": "Diabetes patients (scikit-learn's diabetes data) -> disease progression one year later.",
        "input": {"kind": "features", "features": features},
        "output": {"kind": "regression", "values": [{"name": "progression", "unit": "points"}]},
        "batching": {"max_batch_size": 256, "max_wait_ms": 2},
    }


def encode(config: dict[str, Any], x: np.ndarray) -> np.ndarray:
    """The network's input for raw rows, as the server encodes them (models.features), for training."""
    columns = []
    for i, feature in enumerate(config["input"]["features"]):
        if feature.get("type") == "categorical":
            vocabulary = feature["vocabulary"]
            index = np.array([vocabulary.index(str(int(v))) for v in x[:, i]])
            columns.append(np.eye(len(vocabulary), dtype=np.float32)[index])
        else:
            columns.append(((x[:, i] - feature["mean"]) / feature["std"])[:, None])
    return np.concatenate(columns, axis=1).astype(np.float32)


def train(name: str, epochs: int) -> tuple[Any, dict[str, Any], dict[str, float]]:
    """The trained Keras model, its config.json and its held-out figures next to the baseline's."""
    import keras

    keras.utils.set_random_seed(SEED)
    classifier = name == "breast_cancer"
    x, y, names = load_breast_cancer_data() if classifier else load_diabetes_data()
    train_x, test_x, train_y, test_y = split(x, y, stratify=classifier)
    config = (build_breast_cancer if classifier else build_diabetes)(train_x, names)
    inputs = keras.Input(shape=(encode(config, train_x[:1]).shape[1],))
    hidden = keras.layers.Dense(16, activation="relu")(inputs)
    if classifier:
        outputs = keras.layers.Dense(1, activation="sigmoid")(hidden)
        loss = "binary_crossentropy"
    else:
        # Trained on a standardised target; the last layer maps back to the target's own units.
        scaled = keras.layers.Dense(1)(hidden)
        outputs = keras.layers.Rescaling(scale=float(train_y.std()), offset=float(train_y.mean()))(scaled)
        loss = "mse"
    model = keras.Model(inputs, outputs)
    model.compile(optimizer=keras.optimizers.Adam(0.001), loss=loss)
    started = time.perf_counter()
    model.fit(encode(config, train_x), train_y, epochs=epochs, batch_size=32, verbose=0)
    seconds = time.perf_counter() - started
    predicted = model.predict(encode(config, test_x), verbose=0)[:, 0]
    figures = {"train_seconds": round(seconds, 2), "train_rows": len(train_x), "test_rows": len(test_x)}
    figures.update(score(classifier, train_x, train_y, test_x, test_y, predicted))
    return model, config, figures


def score(classifier: bool, train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray,
          predicted: np.ndarray) -> dict[str, float]:
    from sklearn.linear_model import LinearRegression, LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if classifier:
        baseline = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(train_x, train_y)
        return {"accuracy": round(float(np.mean((predicted >= 0.5) == test_y)), 4),
                "baseline": "LogisticRegression",
                "baseline_accuracy": round(float(baseline.score(test_x, test_y)), 4)}
    baseline = LinearRegression().fit(train_x, train_y)
    return {"mae": round(float(np.mean(np.abs(predicted - test_y))), 2),
            "baseline": "LinearRegression",
            "baseline_mae": round(float(np.mean(np.abs(baseline.predict(test_x) - test_y))), 2)}


def write_folder(repository: str, name: str, version: str, model: Any, config: dict[str, Any]) -> str:
    """<repository>/<name>/config.json and <version>/model.keras, the version folder moved in whole
    (a model server polling the repository never sees it half-written)."""
    folder = os.path.join(repository, name)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "config.json"), "w", encoding="utf-8") as f:
        json.dump(config, f, indent=2)
        f.write("\n")
    staging = tempfile.mkdtemp(prefix=f".{name}-{version}-", dir=folder)
    model.save(os.path.join(staging, "model.keras"))
    os.chmod(staging, 0o755)
    target = os.path.join(folder, version)
    if os.path.exists(target):
        shutil.rmtree(target)
    os.rename(staging, target)
    return folder


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("example", choices=EXAMPLES)
    parser.add_argument("repository", help="the model repository to write the model folder into")
    parser.add_argument("--version", default="1", help="the version folder to write (default 1)")
    parser.add_argument("--epochs", type=int, default=100)
    args = parser.parse_args(argv)
    if not args.version.isdigit():
        parser.error("--version must be a number (a version folder's name)")
    model, config, figures = train(args.example, args.epochs)
    folder = write_folder(args.repository, args.example, args.version, model, config)
    sys.stdout.write(json.dumps({"model": args.example, "folder": folder, "version": args.version, **figures}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

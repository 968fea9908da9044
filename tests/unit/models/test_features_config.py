"""A features model's config.json: what it declares becomes its contract, and every mistake is
refused with the file, what was expected and the fix."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from keras_rest_api.models.config import ModelConfigError, parse_config
from keras_rest_api.models.features import feature_encoder
from keras_rest_api.queue.records import ModelContract

SETTINGS = {"BATCH_SIZE": 8, "BATCH_WAIT_MS": 0, "FEATURES_BATCH_SIZE": 256, "MODEL_PRECISION": "float32"}
GOOD = {
    "input": {"kind": "features", "features": [
        {"name": "age", "mean": 40, "std": 10, "range": [0, 120]},
        {"name": "income", "min": 0, "max": 1000, "default": 500},
        {"name": "region", "type": "categorical", "vocabulary": "regions.txt", "unknown": "bucket"},
    ]},
    "output": {"kind": "regression", "values": [{"name": "duration", "unit": "s"}]},
}


def parse(tmp_path: Path, body: object):
    folder = tmp_path / "trips"
    folder.mkdir(exist_ok=True)
    (folder / "regions.txt").write_text("north\nsouth\n")
    (folder / "config.json").write_text(json.dumps(body))
    return parse_config(str(folder / "config.json"), "trips", SETTINGS)


def test_a_features_config_becomes_a_contract_that_survives_the_heartbeat(tmp_path):
    config = parse(tmp_path, GOOD)
    assert config.takes_features and config.max_batch_size == 256 and config.encoded_width == 5
    contract = config.contract("1", (1, 1), 1)
    assert [f.name for f in contract.features] == ["age", "income", "region"]
    assert contract.features[2].vocabulary == ("north", "south")
    assert ModelContract.from_json(json.loads(json.dumps(contract.as_json()))) == contract


def test_the_encoding_normalises_numbers_and_one_hot_encodes_categories(tmp_path):
    contract = parse(tmp_path, GOOD).contract("1", (1, 1), 1)
    encoded = feature_encoder(contract.features)(np.array([[50.0, 250.0, 1.0], [40.0, 0.0, 2.0]]))
    np.testing.assert_allclose(encoded, [[1.0, 0.25, 0, 1, 0], [0.0, 0.0, 0, 0, 1]])


@pytest.mark.parametrize("change, message", [
    (lambda c: c["input"].update(features=[]), '"features" must be a list of 1..'),
    (lambda c: c["input"]["features"].append({"name": "age"}), "'age' appear more than once"),
    (lambda c: c["input"]["features"][0].update(mean=1, min=0, max=2), 'as "mean" and "std"'),
    (lambda c: c["input"]["features"][0].update(std=0), '"std" must be > 0'),
    (lambda c: c["input"]["features"][0].update(range=[5, 1]), '"range" must be [low, high]'),
    (lambda c: c["input"]["features"][0].update(nmae="x"), "unknown field(s) 'nmae' in feature 'age'"),
    (lambda c: c["input"]["features"][2].update(vocabulary="missing.txt"), "missing.txt not found"),
    (lambda c: c["input"]["features"][2].update(vocabulary="../../etc/passwd"), "must be inside the model folder"),
    (lambda c: c["input"]["features"][2].update(default="east"), '"default" must be one of its vocabulary'),
    (lambda c: c["input"]["features"][1].update(default=-1, range=[0, None]), "default must be a finite number in"),
    (lambda c: c.update(output={"kind": "probability"}), 'needs "positive_label"'),
    (lambda c: c.update(output={"kind": "regression"}), 'needs "values"'),
    (lambda c: c.update(output={"kind": "ranking"}), '"kind" must be one of classification, probability, regression'),
    (lambda c: c.update(preprocessing={"normalization": "unit"}), '"preprocessing" applies to image models only'),
])
def test_a_bad_features_config_is_refused_with_the_fix(tmp_path, change, message):
    body = json.loads(json.dumps(GOOD))
    change(body)
    with pytest.raises(ModelConfigError) as refused:
        parse(tmp_path, body).contract("1", (1, 1), 1)
    assert message in str(refused.value) and "config.json" in str(refused.value)


def test_a_vocabulary_file_that_links_out_of_the_model_folder_is_refused(tmp_path):
    # Its values would be published in the contract, so a link must not lead out of the folder.
    secret = tmp_path / "secret.txt"
    secret.write_text("north\nsouth\n")
    body = json.loads(json.dumps(GOOD))
    body["input"]["features"][2]["vocabulary"] = "linked.txt"
    (tmp_path / "trips").mkdir()
    (tmp_path / "trips" / "linked.txt").symlink_to(secret)
    with pytest.raises(ModelConfigError, match="must be inside the model folder"):
        parse(tmp_path, body).contract("1", (1, 1), 1)


def test_a_saved_model_of_another_input_width_is_refused_naming_the_width(tmp_path):
    import keras

    from keras_rest_api.models.loading import load_version

    config = parse(tmp_path, GOOD)
    (tmp_path / "trips" / "1").mkdir()
    inputs = keras.Input(shape=(4,))
    keras.Model(inputs, keras.layers.Dense(1)(inputs)).save(tmp_path / "trips" / "1" / "model.keras")
    with pytest.raises(ModelConfigError) as refused:
        load_version(config, "1", SETTINGS)
    assert "encode to 5 columns" in str(refused.value) and "keras.Input(shape=(5,))" in str(refused.value)


def test_a_contract_too_large_for_a_heartbeat_is_refused_at_load(tmp_path):
    body = json.loads(json.dumps(GOOD))
    for name in ("city", "street"):
        body["input"]["features"].append({"name": name, "type": "categorical",
                                          "vocabulary": [f"{name}-{n:04d}-" + "x" * 30 for n in range(1000)]})
    with pytest.raises(ModelConfigError) as refused:
        parse(tmp_path, body).contract("1", (1, 1), 1)
    assert "heartbeat" in str(refused.value) and "fewer features or shorter vocabularies" in str(refused.value)

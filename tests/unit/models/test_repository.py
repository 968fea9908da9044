"""The model repository: layout, config.json, version policies, contracts, and clear errors for bad models.

Real Keras models saved with model.save (the tiny 32x32 five-class model of conftest.py, and a
24x24 one for a shape mismatch); no model is faked.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("keras")

from keras_rest_api import models  # noqa: E402
from keras_rest_api.models import ModelConfigError, ModelLoadError, load_model, open_repository, unload  # noqa: E402
from keras_rest_api.models.preprocessing import tf_mode  # noqa: E402
from keras_rest_api.models.repository import SHIPPED_REPOSITORY  # noqa: E402

LABELS = ["cat", "dog", "fish", "bird", "horse"]


@pytest.fixture()
def repo(tmp_path: Path, tiny_model_files: dict[str, str]):
    """Returns add(name, config, versions=("1",)) that builds <tmp>/<name>/ with the tiny model."""
    root = tmp_path / "repository"
    root.mkdir()

    def add(name: str, config: Any, versions: tuple[str, ...] = ("1",), labels: list[str] | None = LABELS) -> Path:
        folder = root / name
        folder.mkdir()
        text = config if isinstance(config, str) else json.dumps(config, indent=2)
        (folder / "config.json").write_text(text)
        if labels is not None:
            (folder / "labels.txt").write_text("\n".join(labels) + "\n")
        for version in versions:
            (folder / version).mkdir()
            shutil.copy(tiny_model_files["MODEL"], folder / version / "model.keras")
        return folder

    add.root = root  # type: ignore[attr-defined]
    return add


def _open(repo: Any, **settings: Any) -> models.ModelRepository:
    return open_repository({"MODEL_REPOSITORY": str(repo.root), "BATCH_SIZE": 4, "BATCH_WAIT_MS": 2, **settings})


TINY = {"labels": "labels.txt", "preprocessing": {"resize": "center_crop", "crop_fraction": 0.875,
                                                  "interpolation": "bicubic", "normalization": "tf"}}


# --- the shipped repository ---------------------------------------------------------------------
def test_the_shipped_repository_holds_the_builtin_models_and_no_problems() -> None:
    repository = open_repository({})
    assert repository.root == SHIPPED_REPOSITORY
    assert {"efficientnet_lite0", "resnet50"} <= set(repository.model_names())
    assert repository.problems() == []
    for name in ("efficientnet_lite0", "resnet50"):
        assert repository.versions(name) == ["1"] and repository.versions_to_serve(name) == ["1"]


def test_builtin_entries_declare_the_protocol_their_authors_evaluated_them_with() -> None:
    # tensorflow/tpu efficientnet: center crop 224/(224+32) of the shorter side, bicubic;
    # lite builder: (x - 127) / 128. Keras ResNet50: caffe (BGR, mean pixel), 256 -> 224 crop.
    repository = open_repository({})
    lite0, resnet = repository.config("efficientnet_lite0"), repository.config("resnet50")
    assert (lite0.resize, lite0.crop_fraction, lite0.interpolation) == ("center_crop", 224 / 256, "bicubic")
    assert (lite0.normalization, lite0.mean, lite0.std, lite0.channel_order) == (
        "mean_std", (127.0,) * 3, (128.0,) * 3, "RGB")
    assert (resnet.resize, resnet.crop_fraction, resnet.interpolation) == ("center_crop", 224 / 256, "bilinear")
    assert (resnet.normalization, resnet.channel_order) == ("caffe", "BGR")


def test_load_model_by_builtin_name_takes_the_contract_of_its_repository_entry() -> None:
    loaded = load_model({"MODEL": "efficientnet_lite0", "MODEL_WEIGHTS": "random", "BATCH_SIZE": 3})
    contract = loaded.contract
    assert loaded.version == "1" and contract.version == "1" and contract.name == "efficientnet_lite0"
    assert (contract.resize, contract.interpolation, contract.normalization) == ("center_crop", "bicubic", "mean_std")
    assert (contract.input_size, contract.classes, contract.max_batch_size) == ((224, 224), 1000, 3)
    pixels = np.full((1, 224, 224, 3), 255, np.uint8)
    np.testing.assert_allclose(loaded.preprocess(pixels), (255 - 127) / 128, rtol=1e-6)


def test_load_model_of_a_keras_path_keeps_the_legacy_contract(tiny_model_files: dict[str, str]) -> None:
    loaded = load_model(tiny_model_files)
    assert loaded.name == "tiny" and loaded.version == "1"
    assert (loaded.contract.resize, loaded.contract.normalization) == ("squash", "unit")
    assert loaded.contract.input_size == (32, 32) and loaded.contract.classes == 5


# --- a user's model -----------------------------------------------------------------------------
def test_a_users_model_loads_with_its_declared_contract(repo: Any, tiny_model_files: dict[str, str]) -> None:
    repo("tiny", {**TINY, "batching": {"max_batch_size": 16}})
    repository = _open(repo)
    assert repository.model_names() == ["tiny"]
    loaded = repository.load("tiny", "1")
    contract = loaded.contract
    assert (loaded.name, loaded.version, contract.name, contract.version) == ("tiny", "1", "tiny", "1")
    assert contract.input_size == (32, 32) and contract.classes == 5 and loaded.labels == LABELS
    assert (contract.resize, contract.crop_fraction, contract.interpolation) == ("center_crop", 0.875, "bicubic")
    assert contract.normalization == "tf" and contract.channel_order == "RGB"
    # batching from config.json, the wait from BATCH_WAIT_MS (not in config.json)
    assert (contract.max_batch_size, contract.max_wait_ms, contract.precision) == (16, 2, "float32")
    pixels = np.random.default_rng(1).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    reference = load_model(tiny_model_files).model.predict_on_batch(tf_mode(pixels))
    np.testing.assert_allclose(loaded.predict(pixels), reference, rtol=1e-5, atol=1e-6)


def test_versions_are_numeric_folders_compared_as_numbers(repo: Any) -> None:
    folder = repo("tiny", TINY, versions=("1", "2", "10", "9"))
    (folder / "notes").mkdir()
    (folder / ".3.partial").mkdir()
    repository = _open(repo)
    assert repository.versions("tiny") == ["1", "2", "9", "10"]
    assert repository.versions_to_serve("tiny") == ["10"]


@pytest.mark.parametrize("policy, expected", [
    ({"latest": 2}, ["9", "10"]),
    ({"latest": 9}, ["1", "2", "9", "10"]),
    ({"specific": ["1", "9"]}, ["1", "9"]),
    ({"specific": [2]}, ["2"]),
    ("all", ["1", "2", "9", "10"]),
])
def test_version_policies(repo: Any, policy: Any, expected: list[str]) -> None:
    repo("tiny", {**TINY, "version_policy": policy}, versions=("1", "2", "10", "9"))
    assert _open(repo).versions_to_serve("tiny") == expected


def test_a_version_folder_without_a_model_never_displaces_a_good_older_one(repo: Any, caplog: Any) -> None:
    folder = repo("tiny", TINY, versions=("1",))
    (folder / "2").mkdir()  # a new version whose model was never copied in
    (folder / "2" / "saved_model.pb").write_bytes(b"x")
    repository = _open(repo)
    with caplog.at_level(logging.ERROR, logger="keras_rest_api.models.repository"):
        assert repository.versions_to_serve("tiny") == ["1"]
        assert repository.versions_to_serve("tiny") == ["1"]
    reports = [r.getMessage() for r in caplog.records]
    assert len(reports) == 1, "a problem is reported once, not once per poll"
    assert str(folder / "2") in reports[0] and "model.save" in reports[0] and "saved_model.pb" in reports[0]
    with pytest.raises(ModelConfigError, match=r"2: version folder has no model\.keras"):
        repository.load("tiny", "2")
    assert any("no model.keras" in p for p in repository.problems())


@pytest.mark.parametrize("damage", ["other input size", "damaged file"])
def test_a_version_that_fails_to_load_is_passed_over_until_its_files_change(
        repo: Any, tmp_path: Path, damage: str) -> None:
    import keras

    folder = repo("tiny", {**TINY, "input": {"height": 32, "width": 32}}, versions=("1", "2"))
    good = (folder / "2" / "model.keras").read_bytes()
    if damage == "other input size":
        inputs = keras.Input((24, 24, 3))
        outputs = keras.layers.Dense(5, activation="softmax")(keras.layers.GlobalAveragePooling2D()(inputs))
        keras.Model(inputs, outputs).save(folder / "2" / "model.keras")
    else:
        (folder / "2" / "model.keras").write_bytes(b"PK\x03\x04" + os.urandom(64))
    repository = _open(repo)
    assert repository.versions_to_serve("tiny") == ["2"]  # nothing visible from the outside yet
    with pytest.raises(ModelConfigError):
        repository.load("tiny", "2")
    assert repository.versions_to_serve("tiny") == ["1"], "the good older version keeps serving"
    assert "load failed" in repository.version_problem("tiny", "2")
    (folder / "2" / "model.keras").write_bytes(good)  # fixed: tried again
    assert repository.versions_to_serve("tiny") == ["2"]
    assert repository.load("tiny", "2").version == "2"


def test_labels_in_a_version_folder_override_the_model_folders(repo: Any) -> None:
    folder = repo("tiny", TINY, versions=("1", "2"))
    (folder / "2" / "labels.txt").write_text("a\nb\nc\nd\ne\n")
    repository = _open(repo)
    assert repository.load("tiny", "1").labels == LABELS
    assert repository.load("tiny", "2").labels == list("abcde")


def test_a_builtin_entry_in_a_users_repository(repo: Any) -> None:
    repo("lite", {"source": "builtin:efficientnet_lite0", "weights": "random", "labels": "imagenet",
                  "preprocessing": {"normalization": "tf"}}, versions=(), labels=None)
    (repo.root / "lite" / "1").mkdir()
    loaded = _open(repo).load("lite", "1")
    assert loaded.name == "lite" and loaded.contract.normalization == "tf" and len(loaded.labels) == 1000
    assert loaded.details["weights"] == "random"


def test_model_weights_applies_to_the_one_builtin_model_named(repo: Any) -> None:
    from keras_rest_api.models.loading import _builtin_weights

    repo("lite", {"source": "builtin:efficientnet_lite0"}, versions=(), labels=None)
    config = _open(repo).config("lite")
    folder = str(repo.root / "lite" / "1")
    assert _builtin_weights(config, folder, {"MODEL": "lite", "MODEL_WEIGHTS": "/w.pth"}) == "/w.pth"
    assert _builtin_weights(config, folder, {"MODEL": "lite,other", "MODEL_WEIGHTS": "/w.pth"}) == ""
    assert _builtin_weights(config, folder, {"MODEL": "lite,other", "MODEL_WEIGHTS": "random"}) == "random"


# --- bad models: clear errors naming the file and the fix -----------------------------------
def test_a_config_that_does_not_parse_names_line_and_column(repo: Any) -> None:
    folder = repo("tiny", '{\n  "labels": "labels.txt",\n  "preprocessing": {"resize": "squash",}\n}\n')
    with pytest.raises(ModelConfigError) as error:
        _open(repo).config("tiny")
    message = str(error.value)
    assert str(folder / "config.json") in message and "line 3, column" in message and "trailing commas" in message


@pytest.mark.parametrize("config, fragments", [
    ({**TINY, "prepocessing": {}}, ["'prepocessing'", "expected only", "preprocessing"]),
    ({"preprocessing": {"normalisation": "tf"}}, ["'normalisation'", "normalization"]),
    ({"preprocessing": {"normalization": "imagenet"}}, ['"normalization" must be one of', "caffe", "mean_std"]),
    ({"preprocessing": {"resize": "crop"}}, ['"resize" must be one of', "center_crop", "letterbox"]),
    ({"preprocessing": {"interpolation": "cubic"}}, ["interpolation", "bicubic"]),
    ({"preprocessing": {"crop_fraction": 1.5}}, ["crop_fraction", "0.05..1"]),
    ({"preprocessing": {"normalization": "mean_std", "mean": [127, 127, 127]}}, ['needs both "mean" and "std"']),
    ({"preprocessing": {"normalization": "tf", "mean": 3}}, ['apply only to normalization "mean_std"']),
    ({"preprocessing": {"normalization": "mean_std", "mean": [1, 2], "std": 1}}, ['"mean" must be', "3 numbers"]),
    ({"preprocessing": {"normalization": "mean_std", "mean": 0, "std": [1, 0, 1]}}, ['"std" must not contain 0']),
    ({"input": {"channel_order": "RGB"}, "preprocessing": {"normalization": "caffe"}}, ["BGR", "channel_order"]),
    ({"input": {"height": "32"}}, ['"height" must be an integer']),
    ({"batching": {"max_batch_size": 0}}, ['"max_batch_size" must be an integer in 1..']),
    ({"version_policy": {"newest": 1}}, ['"version_policy" must be', '{"latest": N}']),
    ({"version_policy": {"specific": ["v1"]}}, ["specific must list version folder names"]),
    ({"precision": "float16"}, ['"precision" must be one of', "bfloat16"]),
    ({"source": "tensorflow"}, ['"source" must be "keras"', "builtin:efficientnet_lite0"]),
    ({"name": "other"}, ["folder is named 'tiny'", "rename the folder"]),
    ({"weights": "w.h5"}, ['"weights" applies only to built-in']),
    (["not", "an", "object"], ["must hold a JSON object"]),
])
def test_an_invalid_config_names_the_file_the_field_and_the_choices(repo: Any, config: Any,
                                                                   fragments: list[str]) -> None:
    folder = repo("tiny", config)
    with pytest.raises(ModelLoadError) as error:  # ModelConfigError is a ModelLoadError
        _open(repo).config("tiny")
    message = str(error.value)
    assert message.startswith(str(folder / "config.json")), message
    for fragment in fragments:
        assert fragment in message, message


def test_an_input_shape_that_does_not_match_the_saved_model(repo: Any) -> None:
    folder = repo("tiny", {**TINY, "input": {"height": 224, "width": 224}})
    with pytest.raises(ModelConfigError) as error:
        _open(repo).load("tiny", "1")
    message = str(error.value)
    assert str(folder / "config.json") in message and str(folder / "1" / "model.keras") in message
    assert "takes 32x32" in message and '"height": 32' in message


def test_a_labels_file_with_the_wrong_count(repo: Any) -> None:
    folder = repo("tiny", TINY, labels=["cat", "dog", "fish"])
    with pytest.raises(ModelConfigError) as error:
        _open(repo).load("tiny", "1")
    message = str(error.value)
    assert str(folder / "labels.txt") in message and "3 labels" in message and "5 outputs" in message
    assert "one label per line" in message


def test_a_missing_labels_file(repo: Any) -> None:
    folder = repo("tiny", {**TINY, "labels": "classes.txt"})
    with pytest.raises(ModelConfigError, match="labels file 'classes.txt' not found") as error:
        _open(repo).load("tiny", "1")
    assert str(folder / "classes.txt") in str(error.value)


def test_a_damaged_model_file(repo: Any) -> None:
    folder = repo("tiny", TINY)
    (folder / "1" / "model.keras").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(ModelConfigError) as error:
        _open(repo).load("tiny", "1")
    message = str(error.value)
    assert str(folder / "1" / "model.keras") in message and "cannot be loaded as a Keras model" in message
    assert "model.save" in message


def test_an_empty_model_file_is_passed_over_like_a_missing_one(repo: Any) -> None:
    folder = repo("tiny", TINY, versions=("1", "2"))
    (folder / "2" / "model.keras").write_bytes(b"")
    repository = _open(repo)
    assert repository.versions_to_serve("tiny") == ["1"]
    with pytest.raises(ModelConfigError, match="empty file"):
        repository.load("tiny", "2")


def test_a_missing_config_and_a_missing_model_folder(repo: Any, caplog: Any) -> None:
    (repo.root / "stray").mkdir()
    repo("tiny", TINY)
    repository = _open(repo)
    with caplog.at_level(logging.ERROR, logger="keras_rest_api.models.repository"):
        assert repository.model_names() == ["tiny"]
    assert any("stray: no config.json" in r.getMessage() for r in caplog.records)
    with pytest.raises(ModelConfigError, match="no such model folder.*models there: tiny"):
        repository.config("nope")


def test_a_repository_that_is_not_a_folder(tmp_path: Path) -> None:
    with pytest.raises(ModelConfigError, match="MODEL_REPOSITORY=.*is not a folder"):
        open_repository({"MODEL_REPOSITORY": str(tmp_path / "absent")})


def test_a_legacy_keras_path_that_does_not_exist(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="no such file"):
        load_model({"MODEL": str(tmp_path / "absent.keras")})


def test_config_changes_are_read_again(repo: Any) -> None:
    folder = repo("tiny", TINY)
    repository = _open(repo)
    assert repository.config("tiny").normalization == "tf"
    config = {**TINY, "preprocessing": {"normalization": "unit"}}
    (folder / "config.json").write_text(json.dumps(config) + "\n" * 3)  # a different size: seen as changed
    assert repository.config("tiny").normalization == "unit"


# --- unloading ----------------------------------------------------------------------------------
def test_unload_frees_one_version_and_leaves_the_other_serving(repo: Any) -> None:
    repo("tiny", {**TINY, "version_policy": "all"}, versions=("1", "2"))
    repository = _open(repo)
    first, second = repository.load("tiny", "1"), repository.load("tiny", "2")
    pixels = np.zeros((2, 32, 32, 3), np.uint8)
    before = second.predict(pixels)
    unload(first)
    assert first.model is None and first.contract.version == "1"
    with pytest.raises(RuntimeError, match="unloaded"):
        first.predict(pixels)
    np.testing.assert_array_equal(second.predict(pixels), before)

"""What a model file or folder may make the model server do: its declared size is checked before
Keras builds anything, the repository must be writable by nobody else, and a labels path stays
in its model's folder.

Real .keras files saved by Keras, edited where an attacker would edit them (config.json in the
archive); a real repository on disk, with real owners and modes.
"""
from __future__ import annotations

import json
import os
import shutil
import zipfile
from pathlib import Path
from typing import Any

import pytest

keras = pytest.importorskip("keras")

from keras_rest_api.models import ModelConfigError, load_model, open_repository  # noqa: E402
from keras_rest_api.models.declared_size import ModelTooLarge, check_declared_size  # noqa: E402

LABELS = ["cat", "dog", "fish", "bird", "horse"]
TINY = {"labels": "labels.txt"}


def peak_rss_growth(action: Any) -> tuple[Any, int]:
    """(what `action()` returned or raised, how far this process's peak RSS grew meanwhile, bytes).

    The kernel's high-water mark (VmHWM) is reset first (clear_refs 5), so the growth is this
    action's own, whatever the process held at its peak before."""
    Path("/proc/self/clear_refs").write_text("5")
    before = _vm("VmHWM")
    try:
        result: Any = action()
    except Exception as exc:  # noqa: BLE001 - the caller asserts which
        result = exc
    return result, _vm("VmHWM") - before


def _vm(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} in /proc/self/status")


@pytest.fixture(scope="module")
def huge_dense(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 1.8 KB .keras file whose config declares Dense(30000) on 25000 inputs: 750 M weights,
    3 GiB as float32, built and initialised by Keras before any stored weight is read."""
    folder = tmp_path_factory.mktemp("huge_dense")
    inputs = keras.Input((16,))
    keras.Model(inputs, keras.layers.Dense(4)(inputs)).save(folder / "small.keras")
    with zipfile.ZipFile(folder / "small.keras") as archive:
        files = {name: archive.read(name) for name in archive.namelist()}
    text = files["config.json"].decode()
    files["config.json"] = text.replace('"units": 4', '"units": 30000').replace("[null, 16]", "[null, 25000]").encode()
    path = folder / "model.keras"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    assert path.stat().st_size < 2500
    return path


# --- declared size ------------------------------------------------------------------------------
def test_a_huge_dense_layer_is_refused_before_it_is_built(huge_dense: Path) -> None:
    result, growth = peak_rss_growth(lambda: load_model({"MODEL": str(huge_dense)}))
    assert isinstance(result, ModelTooLarge), repr(result)
    assert "declares 750,030,000 parameters" in str(result) and "MAX_MODEL_PARAMETERS" in str(result)
    # Building it took 3 GiB; checking it takes next to nothing.
    assert growth < 100 * 2**20, f"peak RSS grew {growth / 2**20:.0f} MiB"


def test_a_huge_dense_layer_in_the_repository_is_refused_and_its_version_passed_over(
        tmp_path: Path, huge_dense: Path, tiny_model_files: dict[str, str]) -> None:
    folder = tmp_path / "repo" / "tiny"
    (folder / "1").mkdir(parents=True)
    (folder / "2").mkdir()
    (folder / "config.json").write_text(json.dumps(TINY))
    (folder / "labels.txt").write_text("\n".join(LABELS))
    shutil.copy(tiny_model_files["MODEL"], folder / "1" / "model.keras")
    shutil.copy(huge_dense, folder / "2" / "model.keras")
    repository = open_repository({"MODEL_REPOSITORY": str(tmp_path / "repo")})
    result, growth = peak_rss_growth(lambda: repository.load("tiny", "2"))
    assert isinstance(result, ModelTooLarge) and growth < 100 * 2**20
    assert repository.versions_to_serve("tiny") == ["1"]
    assert repository.load("tiny", "1").labels == LABELS


def test_the_declared_count_is_exact_for_a_real_model(tiny_model_files: dict[str, str]) -> None:
    model = keras.saving.load_model(tiny_model_files["MODEL"], compile=False)
    assert check_declared_size(tiny_model_files["MODEL"], 10**9, 2**20) == model.count_params()


def test_a_model_saved_compiled_and_trained_is_counted_without_its_optimizer(tmp_path: Path) -> None:
    """What model.fit then model.save writes (the examples' way): its compile_config names an
    optimizer, which the size check must not try to build."""
    import numpy as np

    inputs = keras.Input(shape=(5,))
    model = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(keras.layers.Dense(16)(inputs)))
    model.compile(optimizer="adam", loss="binary_crossentropy")
    model.fit(np.zeros((4, 5)), np.zeros((4, 1)), verbose=0)
    path = tmp_path / "trained.keras"
    model.save(path)
    assert check_declared_size(str(path), 10**9, 2**20) == model.count_params() == 113


def test_the_limits_are_settings(tiny_model_files: dict[str, str]) -> None:
    with pytest.raises(ModelTooLarge, match=r"more than MAX_MODEL_PARAMETERS \(100\)"):
        load_model({**tiny_model_files, "MAX_MODEL_PARAMETERS": 100})
    with pytest.raises(ModelTooLarge, match=r"over MAX_MODEL_CONFIG_BYTES \(100\)"):
        load_model({**tiny_model_files, "MAX_MODEL_CONFIG_BYTES": 100})


def test_a_config_nested_past_the_recursion_limit_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "deep.keras"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("config.json", "[" * 100_000)
    with pytest.raises(ModelConfigError, match="config.json is not JSON"):
        check_declared_size(str(path), 10**9, 2**20)


# --- the repository's owner and mode --------------------------------------------------------------
@pytest.fixture()
def repository_root(tmp_path: Path, tiny_model_files: dict[str, str]) -> Path:
    root = tmp_path / "repo"
    (root / "tiny" / "1").mkdir(parents=True)
    (root / "tiny" / "config.json").write_text(json.dumps(TINY))
    (root / "tiny" / "labels.txt").write_text("\n".join(LABELS))
    shutil.copy(tiny_model_files["MODEL"], root / "tiny" / "1" / "model.keras")
    for path in (root, root / "tiny", root / "tiny" / "1"):
        path.chmod(0o755)
    return root


def test_a_repository_others_may_write_is_refused(repository_root: Path) -> None:
    repository_root.chmod(0o777)
    with pytest.raises(ModelConfigError, match=r"MODEL_REPOSITORY=.*mode 0777 lets group or others write it"):
        open_repository({"MODEL_REPOSITORY": str(repository_root)})


def test_a_folder_above_the_repository_others_may_write_is_refused(repository_root: Path) -> None:
    repository_root.parent.chmod(0o775)  # not sticky: another user could swap the repository
    with pytest.raises(ModelConfigError, match=r"the directory above it, .* has mode 0775"):
        open_repository({"MODEL_REPOSITORY": str(repository_root)})


@pytest.mark.parametrize("where", ["tiny", "tiny/1", "tiny/1/model.keras", "tiny/config.json"])
def test_a_model_folder_or_file_others_may_write_is_not_loaded(repository_root: Path, where: str) -> None:
    repository = open_repository({"MODEL_REPOSITORY": str(repository_root)})
    assert repository.load("tiny", "1").labels == LABELS
    target = repository_root / where
    target.chmod(0o777 if target.is_dir() else 0o666)
    with pytest.raises(ModelConfigError, match="lets group or others write it"):
        repository.load("tiny", "1")


def test_a_model_file_of_another_user_is_not_loaded(repository_root: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to hand a file to another user")
    repository = open_repository({"MODEL_REPOSITORY": str(repository_root)})
    os.chown(repository_root / "tiny" / "1" / "model.keras", 65534, 65534)
    with pytest.raises(ModelConfigError, match="belongs to uid 65534"):
        repository.load("tiny", "1")


# --- labels stay in the model's folder --------------------------------------------------------------
@pytest.fixture()
def secret(tmp_path: Path) -> Path:
    """Five lines outside any model folder: as labels they would be published in every answer."""
    path = tmp_path / "secret.txt"
    path.write_text("root:x:0:0\npassword=hunter2\nline3\nline4\nline5\n")
    return path


@pytest.mark.parametrize("spec", ["absolute", "../../secret.txt", "../../../repo/../secret.txt"])
def test_a_labels_path_out_of_the_model_folder_is_refused(repository_root: Path, secret: Path, spec: str) -> None:
    labels = str(secret) if spec == "absolute" else spec
    (repository_root / "tiny" / "config.json").write_text(json.dumps({"labels": labels}))
    with pytest.raises(ModelConfigError, match=r"leaves the model's folder"):
        open_repository({"MODEL_REPOSITORY": str(repository_root)}).load("tiny", "1")


def test_a_labels_link_out_of_the_model_folder_is_refused(repository_root: Path, secret: Path) -> None:
    (repository_root / "tiny" / "labels.txt").unlink()
    (repository_root / "tiny" / "labels.txt").symlink_to(secret)
    with pytest.raises(ModelConfigError, match=r"is a link to .*secret.txt, outside the model's folder"):
        open_repository({"MODEL_REPOSITORY": str(repository_root)}).load("tiny", "1")


def test_labels_in_a_subfolder_of_the_model_are_fine(repository_root: Path) -> None:
    (repository_root / "tiny" / "meta").mkdir()
    (repository_root / "tiny" / "meta" / "names.txt").write_text("\n".join(LABELS))
    (repository_root / "tiny" / "config.json").write_text(json.dumps({"labels": "meta/names.txt"}))
    assert open_repository({"MODEL_REPOSITORY": str(repository_root)}).load("tiny", "1").labels == LABELS

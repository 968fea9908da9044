"""The converted-model cache: a file converted once from PyTorch weights is reused only when
nobody else could have planted or changed it, and loads in Keras's safe mode. Split from
test_model_files.py because these need Keras, and the pickle-security tests there do not.
"""
from __future__ import annotations

import os
import pwd
import shutil
import stat
import subprocess
import tempfile
from typing import Any

import numpy as np
import pytest


def write(tmp_path: Any, data: bytes, name: str = "model.pth") -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


# --- The converted-model cache -----------------------------------------------------------------

# Here, in a module of their own, so the pickle-security tests above run where Keras is not installed.
keras = pytest.importorskip("keras")
from keras_rest_api.models import efficientnet_lite0 as lite0  # noqa: E402


def tiny_model(tag: float) -> Any:
    """A small real Keras model whose one weight tells which one was loaded."""
    inputs = keras.Input((1,))
    model = keras.Model(inputs, keras.layers.Dense(1, kernel_initializer="zeros", bias_initializer="zeros")(inputs))
    model.layers[-1].set_weights([np.zeros((1, 1), np.float32), np.array([tag], np.float32)])
    return model


def tag_of(model: Any) -> float:
    return float(model.layers[-1].get_weights()[1][0])


@pytest.fixture
def weights(tmp_path: Any) -> str:
    # Only its content matters here (it names the cache entry); the conversion is replaced.
    return write(tmp_path, b"weights", "w.pth")


@pytest.fixture
def conversions(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    # The real conversion takes seconds and is covered by test_efficientnet_lite0.py; here only
    # whether the cache is trusted matters, told apart by the converted model's tag 1.0.
    calls: list[str] = []

    def convert(path: str) -> Any:
        calls.append(path)
        return tiny_model(1.0)

    monkeypatch.setattr(lite0, "convert", convert)
    return calls


def plant(weights: str, directory: Any) -> str:
    path = lite0.cache_path(weights, str(directory))
    tiny_model(666.0).save(path)
    os.chmod(path, 0o644)
    return path


def test_cache_dir_is_created_private_and_reused(tmp_path: Any, weights: str, conversions: list) -> None:
    directory = tmp_path / "a" / "cache"
    old = os.umask(0o002)  # a umask that would leave group-writable directories
    try:
        assert tag_of(lite0._cached_or_converted(weights, str(directory))) == 1.0
    finally:
        os.umask(old)
    for made in (directory, directory.parent):
        st = os.stat(made)
        assert stat.S_IMODE(st.st_mode) == 0o755 and st.st_uid == os.geteuid()
    cached = lite0.cache_path(weights, str(directory))
    assert stat.S_IMODE(os.stat(cached).st_mode) == 0o644
    assert tag_of(lite0._cached_or_converted(weights, str(directory))) == 1.0
    assert len(conversions) == 1  # the second start loaded the cache


def test_trusted_planted_file_is_loaded(tmp_path: Any, weights: str, conversions: list) -> None:
    # The control for the refusals below: the same planted file, in a safe place, is used.
    directory = tmp_path / "cache"
    directory.mkdir(mode=0o755)
    plant(weights, directory)
    assert tag_of(lite0._cached_or_converted(weights, str(directory))) == 666.0
    assert conversions == []


@pytest.mark.parametrize("mode", [0o775, 0o777, 0o1777])
def test_cache_dir_writable_by_others_is_not_used(tmp_path: Any, weights: str, conversions: list,
                                                   mode: int, caplog: pytest.LogCaptureFixture) -> None:
    directory = tmp_path / "cache"
    directory.mkdir()
    planted = plant(weights, directory)
    os.chmod(directory, mode)
    assert tag_of(lite0._cached_or_converted(weights, str(directory))) == 1.0
    assert conversions == [weights]
    assert tag_of(keras.saving.load_model(planted)) == 666.0  # not replaced either
    assert f"mode {mode:04o} lets group or others write it" in caplog.text


def test_parent_writable_by_others_is_not_used(tmp_path: Any, weights: str, conversions: list,
                                               caplog: pytest.LogCaptureFixture) -> None:
    shared = tmp_path / "shared"
    (shared / "cache").mkdir(parents=True)
    plant(weights, shared / "cache")
    os.chmod(shared, 0o777)  # anyone could rename cache/ away and put their own in its place
    assert tag_of(lite0._cached_or_converted(weights, str(shared / "cache"))) == 1.0
    assert f"the directory above it, {shared}, has mode 0777" in caplog.text
    os.chmod(shared, 0o1777)  # sticky, like /tmp: nobody else may rename what we own there
    assert tag_of(lite0._cached_or_converted(weights, str(shared / "cache"))) == 666.0


def test_group_writable_cache_file_is_replaced(tmp_path: Any, weights: str, conversions: list) -> None:
    directory = tmp_path / "cache"
    directory.mkdir(mode=0o755)
    planted = plant(weights, directory)
    os.chmod(planted, 0o666)
    assert tag_of(lite0._cached_or_converted(weights, str(directory))) == 1.0
    assert stat.S_IMODE(os.stat(planted).st_mode) == 0o644
    assert tag_of(keras.saving.load_model(planted)) == 1.0  # the conversion replaced it


def test_symlinked_cache_file_is_replaced(tmp_path: Any, weights: str, conversions: list) -> None:
    directory = tmp_path / "cache"
    directory.mkdir(mode=0o755)
    elsewhere = tmp_path / "elsewhere.keras"
    tiny_model(666.0).save(str(elsewhere))
    os.symlink(elsewhere, lite0.cache_path(weights, str(directory)))
    assert tag_of(lite0._cached_or_converted(weights, str(directory))) == 1.0
    assert not os.path.islink(lite0.cache_path(weights, str(directory)))


def _www_data() -> pwd.struct_passwd:
    if os.geteuid() != 0:
        pytest.skip("needs root to hand files to another user")
    try:
        return pwd.getpwnam("www-data")
    except KeyError:
        pytest.skip("no www-data user")


def test_cache_file_owned_by_the_web_user_is_replaced(tmp_path: Any, weights: str, conversions: list) -> None:
    web = _www_data()
    directory = tmp_path / "cache"
    directory.mkdir(mode=0o755)
    planted = plant(weights, directory)
    os.chown(planted, web.pw_uid, web.pw_gid)
    assert tag_of(lite0._cached_or_converted(weights, str(directory))) == 1.0
    assert os.stat(planted).st_uid == os.geteuid()


def test_cache_dir_owned_by_the_web_user_is_not_used(tmp_path: Any, weights: str, conversions: list,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    web = _www_data()
    directory = tmp_path / "cache"
    directory.mkdir(mode=0o755)
    plant(weights, directory)
    os.chown(directory, web.pw_uid, web.pw_gid)
    assert tag_of(lite0._cached_or_converted(weights, str(directory))) == 1.0
    assert f"belongs to uid {web.pw_uid}" in caplog.text


def as_web_user(command: str) -> subprocess.CompletedProcess:
    return subprocess.run(["runuser", "-u", "www-data", "--", "sh", "-c", command],
                          capture_output=True, text=True, timeout=30)


@pytest.fixture
def reachable_dir() -> Any:
    # pytest's tmp_path sits in a 0700 directory that www-data cannot even enter, which
    # would make any "cannot write" pass for the wrong reason.
    path = tempfile.mkdtemp(prefix="model-cache-test-", dir="/tmp")
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path)


def test_web_user_cannot_write_the_created_cache(reachable_dir: str, weights: str, conversions: list) -> None:
    _www_data()
    if shutil.which("runuser") is None:
        pytest.skip("runuser (util-linux) is not installed")
    open_dir = os.path.join(reachable_dir, "open")
    os.mkdir(open_dir)
    os.chmod(open_dir, 0o777)
    control = as_web_user(f"touch {open_dir}/planted.keras")  # www-data can write where allowed
    assert control.returncode == 0, control

    directory = os.path.join(reachable_dir, "cache", "keras-rest-api")
    lite0._cached_or_converted(weights, directory)
    cached = lite0.cache_path(weights, directory)
    for attempt in (f"touch {directory}/planted.keras", f"echo x >> {cached}",
                    f"mv {directory} {directory}.old"):
        run = as_web_user(attempt)
        assert run.returncode != 0 and "Permission denied" in run.stderr, run
    assert os.listdir(directory) == [os.path.basename(cached)]


def test_lambda_layer_in_cache_is_refused_by_safe_mode(tmp_path: Any, weights: str, conversions: list,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    # Even a trusted-looking file may not carry Python code: safe_mode refuses Lambda layers.
    directory = tmp_path / "cache"
    directory.mkdir(mode=0o755)
    inputs = keras.Input((1,))
    model = keras.Model(inputs, keras.layers.Lambda(lambda x: x * 666.0)(inputs))
    model.save(lite0.cache_path(weights, str(directory)))
    assert tag_of(lite0._cached_or_converted(weights, str(directory))) == 1.0
    assert "unreadable" in caplog.text and "safe_mode" in caplog.text

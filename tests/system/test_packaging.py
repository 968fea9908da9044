"""What `pip install .` makes of the project, and pyproject.toml as the one list of dependencies.

The install goes into a folder of its own (`pip install --no-deps --target`), from a copy of the
checkout's files (so no build/ or *.egg-info is left in the checkout, and nothing stale from one
is packaged), then is imported from another folder: it must be the package alone, with its web
pages and its model repository inside it. The layout of the source itself: tests/unit/test_layout.py.
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from keras_rest_api.queue.jobs import JobQueue
from keras_rest_api.queue.records import Keys
from tests.support.harness import PROJECT, wait_until

PYPROJECT = tomllib.loads((PROJECT / "pyproject.toml").read_text())
# The programs the package installs, and the function each runs.
CONSOLE_SCRIPTS = {
    "keras-model-server": "keras_rest_api.model_server.main:main",
    "keras-web-dev-server": "keras_rest_api.web.devserver:main",
    "keras-rest-api-redis-users": "keras_rest_api.queue.redis_users:main",
    "keras-stress-test": "keras_rest_api.stress:main",
}
# Never part of a source copy: what builds, venvs and runs leave in a checkout.
NOT_SOURCE = shutil.ignore_patterns(".git", ".venv", ".run", "build", "dist", "*.egg-info", "__pycache__", "*.pyc",
                                    ".pytest_cache", ".venv-*")


def load_requirements_script():
    """scripts/requirements.py, loaded from its file (scripts/ is a folder of tools, not a package)."""
    spec = importlib.util.spec_from_file_location("project_requirements", PROJECT / "scripts" / "requirements.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


requirements = load_requirements_script()


def copy_source(destination: Path) -> Path:
    """The checkout's files as git sees them (tracked, or new and not ignored); the whole folder
    less NOT_SOURCE where there is no git."""
    if shutil.which("git") and (PROJECT / ".git").exists():
        listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=PROJECT,
                                capture_output=True, text=True, timeout=60, check=True).stdout.split("\0")
        for name in listed:
            source = PROJECT / name
            if name and source.is_file():
                (destination / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, destination / name)
    else:
        shutil.copytree(PROJECT, destination, ignore=NOT_SOURCE, dirs_exist_ok=True)
    return destination


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`pip install --no-deps --target DIR .` of the project: DIR. Offline when the venv has setuptools
    (no build isolation, no index)."""
    source = copy_source(tmp_path_factory.mktemp("source"))
    target = tmp_path_factory.mktemp("installed")
    offline = importlib.util.find_spec("setuptools") is not None
    command = [sys.executable, "-m", "pip", "install", "--no-deps", "--target", str(target),
               "--disable-pip-version-check", "--no-cache-dir", "--quiet",
               *(["--no-build-isolation", "--no-index"] if offline else []), str(source)]
    done = subprocess.run(command, cwd=source, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{' '.join(command)}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return target


def test_the_install_is_one_package_and_its_programs(installed: Path) -> None:
    top = sorted(entry.name for entry in installed.iterdir()
                 if not entry.name.endswith(".dist-info") and entry.name != "bin")
    assert top == ["keras_rest_api"], f"pip install . put {top} at the top level; only keras_rest_api belongs there"
    for name in CONSOLE_SCRIPTS:
        assert (installed / "bin" / name).is_file(), f"no {name} command in {installed / 'bin'}"


def test_the_install_carries_the_pages_and_the_model_repository(installed: Path) -> None:
    package = installed / "keras_rest_api"
    assert (package / "web" / "static" / "index.html").is_file()
    assert (package / "model_repository" / "efficientnet_lite0" / "config.json").is_file()
    # No test, benchmark or root script travels with the package.
    assert not list(package.rglob("test_*.py")) and not (package / "tests").exists()


def test_the_installed_package_finds_its_files_inside_itself(installed: Path, tmp_path: Path) -> None:
    """Imported from elsewhere (not the checkout), the package's paths to its pages and its shipped
    model repository are those of the installed copy."""
    code = """
import json
from importlib import resources
import keras_rest_api
from keras_rest_api.models import repository
from keras_rest_api.web import page
print(json.dumps({
    "package": keras_rest_api.__file__,
    "static": page.STATIC_DIR,
    "static_resource": str(resources.files("keras_rest_api.web").joinpath("static")),
    "repository": repository.SHIPPED_REPOSITORY,
    "repository_resource": str(resources.files("keras_rest_api").joinpath("model_repository")),
}))
"""
    env = {**os.environ, "PYTHONPATH": str(installed)}
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    paths = {name: Path(value).resolve() for name, value in json.loads(done.stdout.strip().splitlines()[-1]).items()}
    for name, path in paths.items():
        assert path.is_relative_to(installed.resolve()), f"{name} is {path}, outside the install {installed}"
    for name in ("static", "static_resource"):
        assert (paths[name] / "index.html").is_file(), paths[name]
    for name in ("repository", "repository_resource"):
        assert (paths[name] / "efficientnet_lite0" / "config.json").is_file(), paths[name]


def test_the_installed_model_server_command_serves(installed: Path, tmp_path: Path, redis_server,
                                                    tiny_model_files: dict[str, str]) -> None:
    """`keras-model-server` of the install, run from a folder that is not the checkout, loads a
    model, announces it in Redis (as the web tier would see it), and stops cleanly on SIGTERM."""
    prefix = f"pkg-{os.getpid()}"
    env = {**os.environ, "PYTHONPATH": str(installed), **redis_server.settings_for("admin"),  # every key: this test has a prefix of its own
           **tiny_model_files, "KEY_PREFIX": prefix, "MODEL_SERVER_NAME": "installed-server",
           "HEARTBEAT_INTERVAL": "0.5", "QUEUE_BLOCK_MS": "200", "LOG_LEVEL": "INFO", "TF_CPP_MIN_LOG_LEVEL": "2"}
    log = tmp_path / "model-server.log"
    with open(log, "wb") as out:
        server = subprocess.Popen([str(installed / "bin" / "keras-model-server")], cwd=tmp_path, env=env,
                                  stdout=out, stderr=subprocess.STDOUT)
    try:
        queue = JobQueue(redis_server.client(), Keys(prefix, "image_queue"), "model_servers")

        def serving() -> bool:
            assert server.poll() is None, f"the installed server exited:\n{log.read_text()[-3000:]}"
            return [f"{m.contract.name}:{m.state}" for s in queue.live_servers(10.0) for m in s.models
                    if s.name == "installed-server"] == ["tiny:ready"]

        wait_until(serving, 120, "the installed keras-model-server to announce the tiny model as ready")
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=60) == 0, log.read_text()[-3000:]
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(timeout=30)


def test_the_console_scripts_are_declared():
    assert PYPROJECT["project"]["scripts"] == CONSOLE_SCRIPTS


def test_the_package_data_is_declared():
    data = PYPROJECT["tool"]["setuptools"]["package-data"]
    assert any(pattern.startswith("model_repository") for pattern in data["keras_rest_api"]), data
    assert any(pattern.startswith("static") for pattern in data["keras_rest_api.web"]), data


# --- pyproject.toml, the one list of dependencies (scripts/requirements.py reads it) ------------------

def test_requirements_are_runtime_plus_the_extras_asked_for():
    runtime = requirements.requirements([])
    assert any(line.startswith("mod_wsgi") for line in runtime)
    assert any(line.startswith("keras") for line in runtime)
    assert not any(line.startswith("pytest") for line in runtime)
    with_tests = requirements.requirements(["test", "bench"])
    assert with_tests[: len(runtime)] == runtime
    assert any(line.startswith("pytest") for line in with_tests)
    assert any(line.startswith("matplotlib") for line in with_tests)
    assert len(with_tests) == len(set(with_tests))
    assert "torch==2.13.0" in requirements.requirements(["torch"])


def test_an_unknown_extra_names_the_known_ones():
    result = subprocess.run([sys.executable, str(PROJECT / "scripts" / "requirements.py"), "test,nope"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode != 0
    assert "nope" in result.stderr and "'bench'" in result.stderr


def test_requirements_txt_is_gone_so_there_is_one_source():
    assert not (PROJECT / "requirements.txt").exists(), "declare dependencies in pyproject.toml"


def test_every_installed_requirement_is_satisfied_in_this_venv():
    importlib_metadata = pytest.importorskip("importlib.metadata")
    from packaging.requirements import Requirement

    missing = []
    for line in requirements.requirements(["test", "bench"]):
        requirement = Requirement(line)
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue
        try:
            version = importlib_metadata.version(requirement.name)
        except importlib_metadata.PackageNotFoundError:
            missing.append(line)
            continue
        if not requirement.specifier.contains(version, prereleases=True):
            missing.append(f"{line} (have {version})")
    assert not missing, f"not installed: {missing}; run scripts/bootstrap.sh"

"""pyproject.toml is the one list of dependencies, and its module list matches the checkout."""
from __future__ import annotations

import subprocess
import sys
import tomllib

import pytest

from harness import PROJECT

sys.path.insert(0, str(PROJECT / "scripts"))
import requirements  # noqa: E402

PYPROJECT = tomllib.loads((PROJECT / "pyproject.toml").read_text())

# Root-level scripts that are tools, not part of an installed service.
NOT_MODULES = {"locustfile"}


def test_every_top_level_module_is_declared_for_wheels():
    declared = set(PYPROJECT["tool"]["setuptools"]["py-modules"])
    present = {path.stem for path in PROJECT.glob("*.py")} - NOT_MODULES
    assert declared == present, (
        f"pyproject.toml [tool.setuptools] py-modules is {sorted(declared)}, the checkout has "
        f"{sorted(present)}: add new modules there (or to NOT_MODULES in this test if they are tools)")
    packages = {path.parent.name for path in PROJECT.glob("*/__init__.py")} - {"bench", "tests"}
    assert set(PYPROJECT["tool"]["setuptools"]["packages"]) == packages


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

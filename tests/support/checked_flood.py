"""Floods in which every request carries its own image and every answer is checked against that
image's own expected result, so an answer delivered to the wrong request, or a stale one, fails.

The outcomes are counted as keras_rest_api.stress counts them (its LoadResult and summary), with
one more failure kind, WRONG_ANSWER. The expected results are computed once, in this process,
with the model the servers load (the same decoding and preprocessing as the service).
"""
from __future__ import annotations

import io
import threading
import time
from typing import Any, Mapping, Sequence

import numpy as np
import pytest
import requests
from PIL import Image

from keras_rest_api import stress
from keras_rest_api.imaging.decode import decode_image
from keras_rest_api.models import load_model

WRONG_ANSWER = "wrong answer"
TOLERANCE = 1e-4  # the service's probabilities against this process's, same model and inputs


def distinct_images(count: int = 8) -> list[bytes]:
    """`count` PNGs, each of its own size and tint with noise over it. Plain noise is not enough:
    the test models average it away, and 8 noise images came within 2e-5 of each other under
    the slow model, below the tolerance an answer is checked to; tinted ones are 1e-3 apart."""
    images = []
    for seed in range(count):
        rng = np.random.default_rng(seed)
        tint = np.array([(seed * 97) % 256, (seed * 53 + 80) % 256, (seed * 29 + 160) % 256])
        pixels = np.clip(tint + rng.integers(-40, 41, (50 + 5 * seed, 60 + 7 * seed, 3)), 0, 255).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, "PNG")
        images.append(buffer.getvalue())
    return images


def expected_answers(model_files: Mapping[str, str], images: Sequence[bytes]) -> list[dict[str, float]]:
    """Each image's probabilities by label, from the model loaded here as the model server loads it."""
    model = load_model(dict(model_files))
    pixels = np.stack([decode_image(data, model.input_size, 10**8) for data in images])
    expected = [{label: float(p) for label, p in zip(model.labels, row)} for row in model.predict(pixels)]
    # Two images with the same answer could swap unnoticed.
    for i, first in enumerate(expected):
        for second in expected[i + 1:]:
            assert first != pytest.approx(second, abs=5 * TOLERANCE), "two images have the same expected answer"
    return expected


def wrong_answer(body: Any, expected: dict[str, float]) -> str | None:
    """Why `body` is not the answer `expected` (its top predictions), or None when it is."""
    try:
        got = {p["label"]: p["probability"] for p in body["predictions"]}
    except (TypeError, KeyError):
        return f"not a prediction body: {str(body)[:200]}"
    if not got or any(label not in expected for label in got):
        return f"labels {sorted(got)} not among {sorted(expected)}"
    if {label: expected[label] for label in got} != pytest.approx(got, abs=TOLERANCE):
        return f"got {got}, expected {expected}"
    return None


class CheckedClient:
    """Posts image `n % len(images)` as request n and records the outcome, checked, in `result`."""

    def __init__(self, url: str, images: Sequence[bytes], expected: Sequence[dict[str, float]],
                 timeout: float, headers: Mapping[str, str] | None = None) -> None:
        self.url, self.images, self.expected, self.timeout = url, images, expected, timeout
        self.headers = dict(headers or {})
        self.result = stress.LoadResult()

    def send(self, session: requests.Session, n: int) -> None:
        index = n % len(self.images)
        self.result.record_sent()
        started = time.perf_counter()
        try:
            response = session.post(self.url, files={"image": (f"image-{index}.png", self.images[index], "image/png")},
                                    headers=self.headers, timeout=self.timeout)
        except Exception as exc:  # counted, as stress counts it
            kind = "Timeout" if isinstance(exc, requests.Timeout) else \
                "ConnectionError" if isinstance(exc, requests.ConnectionError) else type(exc).__name__
            self.result.record_exception(kind, str(exc))
            return
        latency_ms = (time.perf_counter() - started) * 1000
        if response.status_code != 200:
            self.result.record_answer(False, latency_ms, str(response.status_code), response.text)
            return
        try:
            body = response.json()
        except ValueError:
            body = response.text
        why = wrong_answer(body, self.expected[index])
        if why is None:
            self.result.record_answer(True, latency_ms)
        else:
            self.result.record_answer(False, latency_ms, WRONG_ANSWER, f"request {n} (image {index}): {why}")


def flood(url: str, images: Sequence[bytes], expected: Sequence[dict[str, float]], requests_total: int = 150,
          interval: float = 0.02, timeout: float = 30.0, headers: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Open loop, like stress.run_flood: a new request every `interval` s, each on its own thread."""
    client = CheckedClient(url, images, expected, timeout, headers)
    threads = []
    started = time.perf_counter()
    next_at = started
    for n in range(requests_total):
        thread = threading.Thread(target=_send_once, args=(client, n), daemon=True)
        thread.start()
        threads.append(thread)
        next_at += interval
        time.sleep(max(0.0, next_at - time.perf_counter()))
    deadline = time.perf_counter() + timeout + stress.JOIN_GRACE_S
    for thread in threads:
        thread.join(max(0.0, deadline - time.perf_counter()))
    return stress.summarise(client.result, mode="flood", url=url, started=started)


def closed_loop(url: str, images: Sequence[bytes], expected: Sequence[dict[str, float]], concurrency: int,
                duration: float, timeout: float = 30.0) -> dict[str, Any]:
    """Closed loop, like stress.run_closed_loop: `concurrency` workers back to back for `duration` s."""
    client = CheckedClient(url, images, expected, timeout)
    started = time.perf_counter()
    end_at = started + duration

    def worker(first: int) -> None:
        n = first
        with requests.Session() as session:
            while time.perf_counter() < end_at:
                client.send(session, n)
                n += concurrency

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(concurrency)]
    for thread in threads:
        thread.start()
    deadline = end_at + timeout + stress.JOIN_GRACE_S
    for thread in threads:
        thread.join(max(0.0, deadline - time.perf_counter()))
    return stress.summarise(client.result, mode="closed", url=url, started=started)


def _send_once(client: CheckedClient, n: int) -> None:
    with requests.Session() as session:
        client.send(session, n)

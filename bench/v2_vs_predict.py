"""The cost of the Open Inference Protocol route against /predict, on the same image, in one run.

Closed loops of `--concurrency` clients send the same image to POST /predict (multipart) and to
POST /v2/models/<m>/infer (the image as a binary BYTES tensor, classification output of 5, as
the web page asks), in alternating phases so both see the same machine minutes; prints img/s
of each and the ratio.

    .venv/bin/python bench/v2_vs_predict.py --url http://127.0.0.1:8000 --image dog.jpg
    .venv/bin/python bench/v2_vs_predict.py --start --image dog.jpg     # starts Redis, model server, Apache
                                                                         # with the settings in the environment
"""
from __future__ import annotations

import argparse
import json
import statistics
import struct
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable

import requests


def predict_call(url: str, image: bytes) -> Callable[[requests.Session], int]:
    def call(session: requests.Session) -> int:
        response = session.post(f"{url}/predict", files={"image": ("image", image)}, timeout=60)
        return 1 if response.status_code == 200 else 0

    return call


def v2_call(url: str, model: str, image: bytes, batch: int) -> Callable[[requests.Session], int]:
    blob = b"".join(struct.pack("<I", len(image)) + image for _ in range(batch))
    header = json.dumps({
        "inputs": [{"name": "image", "shape": [batch], "datatype": "BYTES", "parameters": {"binary_data_size": len(blob)}}],
        "outputs": [{"name": "probabilities", "parameters": {"classification": 5, "binary_data": True}}],
    }).encode()
    body, headers = header + blob, {"Inference-Header-Content-Length": str(len(header))}

    def call(session: requests.Session) -> int:
        response = session.post(f"{url}/v2/models/{model}/infer", data=body, headers=headers, timeout=60)
        return batch if response.status_code == 200 else 0

    return call


def closed_loop(call: Callable[[requests.Session], int], clients: int, seconds: float) -> tuple[float, int]:
    """(images/s answered 200, requests that failed) for `clients` threads calling back to back."""
    stop = time.monotonic() + seconds
    done, failed = [0] * clients, [0] * clients

    def client(n: int) -> None:
        with requests.Session() as session:
            while time.monotonic() < stop:
                images = call(session)
                done[n] += images
                failed[n] += images == 0

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(done) / (time.monotonic() - started), sum(failed)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--start", action="store_true", help="start the system (tests/support/harness.py) instead of --url")
    parser.add_argument("--image", required=True, type=Path)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each phase")
    parser.add_argument("--rounds", type=int, default=2, help="phases of each kind, alternating")
    parser.add_argument("--batch", type=int, default=1, help="images per v2 request")
    args = parser.parse_args()
    image = args.image.read_bytes()

    stack = None
    if args.start:
        from tests.support.harness import Stack

        stack = Stack(Path(tempfile.mkdtemp(prefix="v2bench-")), {})
        stack.start()
        args.url = stack.url
    try:
        models = requests.post(f"{args.url}/v2/repository/index", timeout=10).json()
        if not models:
            print("no model is served at", args.url, file=sys.stderr)
            return 1
        model = models[0]["name"]
        calls = {"/predict": predict_call(args.url, image), f"/v2 infer (batch {args.batch})": v2_call(args.url, model, image, args.batch)}
        for call in calls.values():  # warm both paths (connections, caches) outside the measurement
            closed_loop(call, args.concurrency, 1.0)
        rates: dict[str, list[float]] = {name: [] for name in calls}
        failures = dict.fromkeys(calls, 0)
        for _ in range(args.rounds):
            for name, call in calls.items():
                rate, failed = closed_loop(call, args.concurrency, args.seconds)
                rates[name].append(rate)
                failures[name] += failed
        print(f"model {model}, image {args.image.name} ({len(image)} bytes), {args.concurrency} clients, "
              f"{args.rounds} x {args.seconds:g} s per path, alternating")
        for name, values in rates.items():
            print(f"  {name:24s} {statistics.mean(values):8.1f} img/s   phases: "
                  f"{', '.join(f'{v:.1f}' for v in values)}   failed requests: {failures[name]}")
        predict_rate, v2_rate = (statistics.mean(values) for values in rates.values())
        print(f"  v2 / predict: {v2_rate / predict_rate:.2f}")
        return 0 if not any(failures.values()) else 1
    finally:
        if stack is not None:
            stack.stop()


if __name__ == "__main__":
    sys.exit(main())

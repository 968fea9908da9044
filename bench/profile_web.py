"""Where a web daemon's CPU goes per POST /predict: the web app in this process, profiled.

Starts a real Redis and a real model server (the tiny model of bench/peers.py, ~0.1 ms per
image) as processes, builds the Flask app here with the same settings Apache's daemons get, and
sends `--requests` uploads one at a time through Flask's test client under cProfile. Prints CPU
ms per request (process time, so the wait for the model server's answer is not counted) and the
functions that take it. The test client builds each WSGI environ itself, which a daemon does not
pay; its share is printed separately.

    .venv/bin/python -m bench.profile_web --requests 2000
"""
from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import sys
import tempfile
import time
from pathlib import Path


from tests.support.harness import Stack, wait_until  # noqa: E402

from bench import tiny_model  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--top", type=int, default=40, help="functions to print, by own time")
    parser.add_argument("--sort", default="tottime")
    parser.add_argument("--plain", action="store_true",
                        help="no cProfile (its overhead inflates Python-heavy parts): only the CPU per request, "
                             "e.g. under `py-spy record --format raw -- python -m bench.profile_web --plain`")
    args = parser.parse_args(argv)

    from bench.benchmark import sample_image

    workdir = Path(tempfile.mkdtemp(prefix="kras-profile-"))
    image = sample_image(workdir).read_bytes()
    model, labels = tiny_model.save(workdir / "model")
    settings = {"MODEL": str(model), "MODEL_LABELS": str(labels), "MODEL_PREPROCESSING": "unit",
                "BATCH_SIZE": 32, "BATCH_WAIT_MS": 0, "KEY_PREFIX": "profile", "LOG_LEVEL": "WARNING",
                "MAX_QUEUE_LENGTH": 2000, "REQUEST_TIMEOUT": 60, "METRICS_DIR": str(workdir / "metrics"),
                "KERAS_BACKEND": os.environ.get("KERAS_BACKEND", "tensorflow")}
    (workdir / "metrics").mkdir()
    stack = Stack(workdir, settings)
    try:
        stack.redis.start()
        stack.env["REDIS_URL"] = stack.redis.service_url
        stack.start_model_server("model_server")
        # The web tier's settings as Apache's daemons see them, before settings is imported.
        from keras_rest_api.queue import redis_users as redis_security

        os.environ.update({k: v for k, v in stack.env.items()})
        os.environ.update(stack.redis.settings_for(redis_security.WEB))
        from keras_rest_api.web.app import create_app

        client = create_app().test_client()

        def ready() -> bool:
            return client.get("/ready").status_code == 200

        wait_until(ready, 300, f"the model server (log in {workdir})")

        def one() -> None:
            response = client.post("/predict", data={"image": (__import__("io").BytesIO(image), "cat.jpg")},
                                   content_type="multipart/form-data")
            assert response.status_code == 200, response.get_data(as_text=True)

        for _ in range(200):
            one()
        profiler = cProfile.Profile(time.process_time)
        cpu0, wall0 = time.process_time(), time.perf_counter()
        if not args.plain:
            profiler.enable()
        for _ in range(args.requests):
            one()
        profiler.disable()
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        print(f"{args.requests} requests: {cpu / args.requests * 1000:.2f} ms CPU per request (profiled), "
              f"{wall / args.requests * 1000:.2f} ms wall")
        if args.plain:
            return 0
        stats = pstats.Stats(profiler)
        stats.sort_stats(args.sort).print_stats(args.top)
        stats.sort_stats("cumulative").print_stats(60)
    finally:
        stack.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

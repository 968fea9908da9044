"""The tiny classifier as Ray Serve recommends serving a batched model: a deployment whose
`__call__` reads the request and awaits a `@serve.batch` method, reached through Serve's HTTP
proxy. Run by bench/peers.py:  python -m bench.peer_services.ray_service PORT

Connection settings for 32 clients: max_ongoing_requests (default 5 since Ray 2.32) must be
at least the batch size per replica, or the proxy queues requests one batch's worth at a time;
two replicas use both cores for decoding, as this project's two mod_wsgi daemons do.
"""
from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from typing import Any

import numpy as np
from starlette.requests import Request

from bench.peer_services.common import TinyClassifier, decode

REPLICAS = int(os.environ.get("PEER_WORKERS", "2"))
BATCH = int(os.environ.get("PEER_MAX_BATCH", "32"))
WAIT_S = float(os.environ.get("PEER_BATCH_WAIT_MS", "0")) / 1000

log = logging.getLogger("bench.ray_service")


def build_app() -> Any:
    from ray import serve

    @serve.deployment(num_replicas=REPLICAS, max_ongoing_requests=4 * BATCH, max_queued_requests=-1,
                      ray_actor_options={"num_cpus": 0})
    class TinyDeployment:
        def __init__(self) -> None:
            self.classifier = TinyClassifier()

        @serve.batch(max_batch_size=BATCH, batch_wait_timeout_s=WAIT_S)
        async def classify(self, images: list[np.ndarray]) -> list[dict[str, Any]]:
            return self.classifier.predict(np.stack(images))

        async def __call__(self, request: Request) -> dict[str, Any]:
            form = await request.form()
            upload = form["image"]
            return await self.classify(decode(await upload.read()))

    return TinyDeployment.bind()


def main() -> int:
    import ray
    from ray import serve

    port = int(sys.argv[1])
    # Loopback only, no dashboard: the bench machine serves nothing to the outside.
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, _node_ip_address="127.0.0.1",
             log_to_driver=False, configure_logging=False)
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(build_app(), name="tiny", route_prefix="/predict")
    print("ready", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    serve.shutdown()
    ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Prometheus metrics for GET /metrics, correct across processes and machines.

Two sources, two mechanisms:
- The web tier's own request counters and latency histogram use prometheus-client's
  multiprocess mode when METRICS_DIR is set (apache/serve.sh sets it): each mod_wsgi daemon
  process writes its samples to files there and a scrape, answered by any one process, sums
  them all. Without it (the development server: one process) the app's own registry is used.
- Queue depth and the model servers' figures (batch sizes, inference time, jobs taken over,
  servers alive) are read from Redis at scrape time: model servers run on other machines, so
  they publish cumulative figures with their heartbeat and the scrape aggregates the live ones.
"""
from __future__ import annotations

import os
from typing import Any, Iterable, Iterator

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest, values
from prometheus_client import multiprocess
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from keras_rest_api.queue.records import INFERENCE_BUCKETS, Heartbeat

__all__ = ["CONTENT_TYPE_LATEST", "METHODS", "WebMetrics"]

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

# Methods counted by name; any other (clients may send any token) is counted as "other", so a
# client cannot create a new series per request.
METHODS = frozenset({"GET", "POST", "HEAD", "OPTIONS"})


class WebMetrics:
    """One app's request metrics, and the exposition of GET /metrics.

    With `metrics_dir` the samples go to files there (prometheus-client's multiprocess mode), so
    that a scrape answered by any daemon process sums them all; without, to a registry of this
    app's own (so that several apps in one process, as in tests, do not collide).
    """

    def __init__(self, metrics_dir: str = "") -> None:
        self.metrics_dir = metrics_dir
        if metrics_dir:
            _use_multiprocess_files(metrics_dir)
        self.registry = None if metrics_dir else CollectorRegistry()
        self.requests = Counter("kras_http_requests_total", "HTTP requests answered, by endpoint, method and status.",
                                ["endpoint", "method", "status"], registry=self.registry)
        self.latency = Histogram("kras_http_request_duration_seconds", "Time to answer an HTTP request, by endpoint.",
                                 ["endpoint"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.requests_by_client = Counter(
            "kras_http_requests_by_client_total", "HTTP requests by API key name (\"rejected\": no or a wrong "
            "key); only counted when API keys are configured.", ["client"], registry=self.registry)

    def observe_request(self, endpoint: str, method: str, status: int, seconds: float) -> None:
        """Count one answered request."""
        self.requests.labels(endpoint, method if method in METHODS else "other", str(status)).inc()
        self.latency.labels(endpoint).observe(seconds)

    def count_client(self, client: str) -> None:
        """Count one request by the name of the API key that made it."""
        self.requests_by_client.labels(client).inc()

    def render(self, queue: Any, heartbeat_ttl: float) -> bytes:
        """The whole exposition: this tier's metrics, then what Redis says about the queue."""
        registry = self.registry
        if registry is None:
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry, path=self.metrics_dir)
        from_redis = CollectorRegistry()
        from_redis.register(QueueCollector(queue, heartbeat_ttl))
        return generate_latest(registry) + generate_latest(from_redis)


def _use_multiprocess_files(metrics_dir: str) -> None:
    # prometheus-client picks where samples live when a metric's value is made, from this
    # variable: set it, and the value class that reads it, before the first metric is made.
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    values.ValueClass = values.MultiProcessValue()


class QueueCollector:
    """Queue depth and the live model servers' published figures, read at scrape time."""

    def __init__(self, queue: Any, heartbeat_ttl: float) -> None:
        self.queue = queue
        self.heartbeat_ttl = heartbeat_ttl

    def collect(self) -> Iterator[Any]:
        servers = self.queue.live_servers(self.heartbeat_ttl)
        versions = sorted({(m.contract.name, m.contract.version) for s in servers for m in s.models})
        queued = GaugeMetricFamily("kras_queue_length", "Images queued or in flight, by model and version.",
                                   labels=["model", "version"])
        for name, version in versions:
            queued.add_metric([name, version], self.queue.for_model(name, version).length())
        yield queued
        alive = GaugeMetricFamily("kras_model_servers_alive", "Model servers with a version of the model ready, "
                                  "by model.", labels=["model"])
        for model in sorted({name for name, _ in versions}):
            alive.add_metric([model], sum(1 for s in servers
                                          if any(m.contract.name == model and m.state == "ready" for m in s.models)))
        yield alive
        yield _batch_histogram(servers)
        yield _inference_histogram(servers)
        redelivered = CounterMetricFamily("kras_jobs_redelivered", "Jobs taken over from a model server that "
                                          "stopped answering, by the server that took them.", labels=["server"])
        for server in servers:
            redelivered.add_metric([server.name], server.redelivered)
        yield redelivered


def _batch_histogram(servers: Iterable[Heartbeat]) -> HistogramMetricFamily:
    family = HistogramMetricFamily("kras_batch_size", "Images per model call, by model server.", labels=["server"])
    for server in servers:
        sizes = server.batch_sizes
        buckets = [(str(bound), sum(c for size, c in sizes.items() if size <= bound)) for bound in BATCH_BUCKETS]
        buckets.append(("+Inf", sum(sizes.values())))
        family.add_metric([server.name], buckets, sum_value=sum(s * c for s, c in sizes.items()))
    return family


def _inference_histogram(servers: Iterable[Heartbeat]) -> HistogramMetricFamily:
    family = HistogramMetricFamily("kras_inference_duration_seconds", "Time of one model call (a batch), "
                                   "by model server.", labels=["server"])
    for server in servers:
        published = server.inference
        buckets = [(str(bound), count) for bound, count in zip(INFERENCE_BUCKETS, published.buckets)]
        buckets.append(("+Inf", published.count))
        family.add_metric([server.name], buckets, sum_value=published.sum)
    return family

#!/usr/bin/env python
"""Load client for the image-classification REST service (``POST /predict``).

A rewrite of the PyImageSearch tutorial's ``stress_test.py``.  The original
started 500 threads 0.05 s apart, each posting the image once, and then slept a
blind 300 s hoping everything had finished; it reported nothing.  This version
counts what happened, waits exactly as long as needed (bounded by the client
timeout), and exits non-zero when anything failed, so it can gate a CI job.

Two load shapes:

* **flood** (open loop, the tutorial's shape, default): one new request every
  ``--interval`` seconds, each in its own thread, whether or not earlier ones
  have been answered.  Exactly ``--requests`` are sent.  This is what reveals
  queue build-up: the arrival rate does not slow down when the server does.
* **closed loop** (``--concurrency N --duration S``): N workers each send
  back-to-back for S seconds.  This measures sustainable throughput.

Only the standard library and ``requests`` are used, so the project's venv is
enough to run it.

Usage examples::

    # the tutorial's run: 500 requests, one every 0.05 s
    python stress_test.py --image dog.jpg

    # a different server, a gentler flood, summary also saved as JSON
    python stress_test.py http://localhost/predict --image dog.jpg \\
        --requests 200 --interval 0.1 --json results.json

    # closed loop: 8 workers back-to-back for 30 s
    python stress_test.py --image dog.jpg --concurrency 8 --duration 30

    # a service with API keys (API_KEYS): the key goes as `Authorization: Bearer`
    API_KEY=... python stress_test.py --image dog.jpg      # or --api-key KEY

From another script (nothing is printed; the summary dict is returned)::

    from keras_rest_api.stress import run_flood, run_closed_loop
    summary = run_flood("http://127.0.0.1:8000/predict", "dog.jpg",
                        requests_total=100, interval=0.02)
    print(summary["throughput_rps"], summary["latency_ms"]["p95"])

Exit status: 0 when every request succeeded, 1 when any failed (HTTP error,
bad body, connection error, timeout, or no answer before the deadline), 2 on
usage errors such as a missing image file, 130 when interrupted with Ctrl-C
without failures.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import mimetypes
import os
import re
import sys
import threading
import time
from collections import Counter
from typing import IO, Any, Callable, Sequence

import requests

DEFAULT_URL = "http://127.0.0.1:8000/predict"
DEFAULT_IMAGE = "dog.jpg"

# Extra time allowed past the client timeout before an in-flight request is
# given up on.  ``requests``' timeout applies per socket operation, not to the
# whole exchange, so a server trickling bytes could otherwise hold us forever.
JOIN_GRACE_S = 5.0

BAD_BODY = "bad body"
NO_ANSWER = "no answer"  # still in flight when the join deadline passed


def percentile(values: Sequence[float], q: float) -> float:
    """Return the q-th percentile (0-100) of ``values``, linearly interpolated.

    Same definition as ``numpy.percentile``'s default, so numbers agree with
    anything computed there.  Raises ``ValueError`` on an empty sequence,
    because there is no honest number to return.
    """
    if not values:
        raise ValueError("percentile of an empty sequence")
    if not 0 <= q <= 100:
        raise ValueError(f"q must be within 0..100, got {q}")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    lower = math.floor(rank)
    upper = math.ceil(rank)
    if lower == upper:
        return float(ordered[lower])
    weight = rank - lower
    return float(ordered[lower] * (1 - weight) + ordered[upper] * weight)


# Commas inside quoted ``desc="..."`` values must not split entries.
_SPLIT_ENTRIES = re.compile(r',(?=(?:[^"]*"[^"]*")*[^"]*$)')


def parse_server_timing(header: str) -> dict[str, float]:
    """Parse a ``Server-Timing`` header into ``{metric: duration_ms}``.

    Metrics without a ``dur`` parameter or with an unparsable one are skipped:
    a malformed header should not abort a load test.
    """
    phases: dict[str, float] = {}
    for entry in _SPLIT_ENTRIES.split(header):
        parts = [p.strip() for p in entry.split(";")]
        name = parts[0]
        if not name:
            continue
        for param in parts[1:]:
            key, _, value = param.partition("=")
            if key.strip().lower() == "dur":
                try:
                    phases[name] = float(value.strip().strip('"'))
                except ValueError:
                    pass
                break
    return phases


class LoadResult:
    """Thread-safe collector of per-request outcomes.

    Worker threads call ``record_*``; the progress reporter and ``summarise``
    read ``snapshot()``.  A single lock is plenty: the critical sections are a
    few appends, far cheaper than an HTTP round trip.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.sent = 0
        self.done = 0
        self.ok = 0
        self.failures: Counter[str] = Counter()
        self.failure_examples: dict[str, str] = {}
        self.latencies_ms: list[float] = []  # every request that got an HTTP answer
        self.phases_ms: dict[str, list[float]] = {}
        self.first_send: float | None = None
        self.last_done: float | None = None
        self.interrupted = False

    def record_sent(self) -> None:
        now = time.perf_counter()
        with self._lock:
            self.sent += 1
            if self.first_send is None:
                self.first_send = now

    def record_answer(self, ok: bool, latency_ms: float, failure: str | None = None,
                      detail: str = "", phases: dict[str, float] | None = None) -> None:
        now = time.perf_counter()
        with self._lock:
            self.done += 1
            self.last_done = now
            self.latencies_ms.append(latency_ms)
            for name, dur in (phases or {}).items():
                self.phases_ms.setdefault(name, []).append(dur)
            if ok:
                self.ok += 1
            else:
                self._fail(failure or "unknown", detail)

    def record_exception(self, kind: str, detail: str) -> None:
        now = time.perf_counter()
        with self._lock:
            self.done += 1
            self.last_done = now
            self._fail(kind, detail)

    def _fail(self, kind: str, detail: str) -> None:
        self.failures[kind] += 1
        # One example per kind is enough to tell "queue full" from "bad image".
        self.failure_examples.setdefault(kind, detail[:300])

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return {"sent": self.sent, "done": self.done, "ok": self.ok,
                    "failed": sum(self.failures.values())}


def _classify_exception(exc: BaseException) -> str:
    # ConnectTimeout is both a Timeout and a ConnectionError; the user cares
    # that it timed out, so Timeout is checked first.
    if isinstance(exc, requests.exceptions.Timeout):
        return "Timeout"
    if isinstance(exc, requests.exceptions.ConnectionError):
        return "ConnectionError"
    return type(exc).__name__


def _error_detail(response: requests.Response) -> str:
    try:
        body = response.json()
        if isinstance(body, dict) and body.get("error"):
            detail = str(body["error"])
        else:
            detail = response.text
    except ValueError:
        detail = response.text
    retry_after = response.headers.get("Retry-After")
    if retry_after:
        detail += f" (Retry-After: {retry_after})"
    return detail


def _session(api_key: str | None) -> requests.Session:
    """A session that sends `api_key` (if any) as `Authorization: Bearer` on every request."""
    session = requests.Session()
    if api_key:
        session.headers["Authorization"] = f"Bearer {api_key}"
    return session


def _send_one(session: requests.Session, url: str, image: bytes, filename: str,
              content_type: str, timeout: float, result: LoadResult) -> None:
    """POST the image once and record the outcome; never raises."""
    result.record_sent()
    start = time.perf_counter()
    try:
        # stream=False (the default) means the body is read inside post(), so
        # the latency covers the whole answer, not just the headers.
        if content_type == JSON_BODY:  # a features model's instance(s), as they are in the file
            response = session.post(url, data=image, headers={"Content-Type": JSON_BODY}, timeout=timeout)
        else:
            response = session.post(url, files={"image": (filename, image, content_type)},
                                    timeout=timeout)
    except Exception as exc:  # a load test must survive anything one request does
        result.record_exception(_classify_exception(exc), str(exc))
        return
    latency_ms = (time.perf_counter() - start) * 1000.0
    phases = parse_server_timing(response.headers.get("Server-Timing", ""))
    if response.status_code != 200:
        result.record_answer(False, latency_ms, str(response.status_code),
                             _error_detail(response), phases)
        return
    try:
        body = response.json()
    except ValueError:
        body = None
    if content_type == JSON_BODY and isinstance(body, list) and body:
        # A batch API's answer to a JSON body (BentoML's, one answer per instance sent): each must be good.
        good = all(_is_good_answer(item) for item in body)
    else:
        good = _is_good_answer(body)
    if good:
        result.record_answer(True, latency_ms, phases=phases)
    else:
        result.record_answer(False, latency_ms, BAD_BODY, response.text, phases)


def _is_good_answer(body: Any) -> bool:
    """The service's success shape: success true and a non-empty list of predictions."""
    return (isinstance(body, dict) and body.get("success") is True
            and isinstance(body.get("predictions"), list) and len(body["predictions"]) > 0)


def _load_image(image_path: str | os.PathLike[str]) -> tuple[bytes, str, str]:
    """The file to send: an image (multipart field 'image'), or a .json file sent as the body
    with Content-Type application/json (a features model's instance, or {"instances": [...]})."""
    with open(image_path, "rb") as fh:
        data = fh.read()
    filename = os.path.basename(os.fspath(image_path))
    content_type = mimetypes.guess_type(filename)[0] or "application/octet-stream"
    return data, filename, content_type


JSON_BODY = "application/json"


class _Progress:
    """Background one-line progress printer (sent / done / ok / failed)."""

    def __init__(self, result: LoadResult, stream: IO[str], total: int | None) -> None:
        self._result = result
        self._stream = stream
        self._total = total
        self._tty = bool(getattr(stream, "isatty", lambda: False)())
        # Plain lines pile up in logs, so print them less often than on a TTY.
        self._period = 0.5 if self._tty else 1.0
        self._stop = threading.Event()
        self._start = time.perf_counter()
        self._thread = threading.Thread(target=self._run, name="progress", daemon=True)
        self._width = 0

    def __enter__(self) -> _Progress:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self._emit(final=True)

    def _line(self) -> str:
        s = self._result.snapshot()
        sent = f"{s['sent']}/{self._total}" if self._total is not None else str(s["sent"])
        in_flight = s["sent"] - s["done"]
        elapsed = time.perf_counter() - self._start
        return (f"[{elapsed:6.1f}s] sent {sent}  done {s['done']}  ok {s['ok']}  "
                f"failed {s['failed']}  in flight {in_flight}")

    def _emit(self, final: bool = False) -> None:
        line = self._line()
        try:
            if self._tty:
                pad = " " * max(0, self._width - len(line))
                self._width = len(line)
                self._stream.write("\r" + line + pad + ("\n" if final else ""))
            else:
                self._stream.write(line + "\n")
            self._stream.flush()
        except (OSError, ValueError):
            pass  # a closed stderr must not kill the run

    def _run(self) -> None:
        while not self._stop.wait(self._period):
            self._emit()


def _join_all(threads: list[threading.Thread], deadline: float, stop: threading.Event,
              on_interrupt: Callable[[], None]) -> None:
    """Join ``threads`` until ``deadline`` (perf_counter); a Ctrl-C abandons waiting."""
    try:
        for t in threads:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                break
            t.join(timeout=remaining)
    except KeyboardInterrupt:
        stop.set()
        on_interrupt()


def _progress(result: LoadResult, stream: IO[str] | None, total: int | None) -> Any:
    """The live progress line while a run lasts, or nothing when `stream` is None."""
    return _Progress(result, stream, total) if stream else contextlib.nullcontext()


def _interrupted(stop: threading.Event, result: LoadResult) -> None:
    stop.set()
    result.interrupted = True


def _wait_for_answers(threads: list[threading.Thread], stop: threading.Event, result: LoadResult,
                      timeout: float) -> None:
    """Join the requests in flight, for at most the client timeout plus a grace period."""
    deadline = time.perf_counter() + timeout + JOIN_GRACE_S
    _join_all(threads, deadline, stop, lambda: setattr(result, "interrupted", True))


def run_flood(url: str, image_path: str | os.PathLike[str], requests_total: int = 500,
              interval: float = 0.05, timeout: float = 60.0,
              progress: IO[str] | None = None,
              stop_event: threading.Event | None = None,
              api_key: str | None = None) -> dict[str, Any]:
    """Open-loop flood: start one request every ``interval`` s, ``requests_total`` in all.

    Returns the summary dict (see ``summarise``).  ``progress`` is a stream for
    the live progress line (None: silent).  Setting ``stop_event`` (or Ctrl-C)
    stops sending; requests already in flight are still waited for.  ``api_key``
    is sent as ``Authorization: Bearer`` (for a service with API keys).
    """
    image, filename, content_type = _load_image(image_path)
    result = LoadResult()
    stop = stop_event or threading.Event()
    threads: list[threading.Thread] = []

    def one_request() -> None:
        # A session per thread: each flood thread sends once, so this is about
        # releasing the socket deterministically rather than reuse.
        with _session(api_key) as session:
            _send_one(session, url, image, filename, content_type, timeout, result)

    started = time.perf_counter()
    with _progress(result, progress, requests_total):
        try:
            next_at = time.perf_counter()
            for i in range(requests_total):
                if stop.is_set():
                    result.interrupted = True
                    break
                # Daemon threads: a request stuck past the join deadline must
                # not keep the process alive after the summary is printed.
                t = threading.Thread(target=one_request, name=f"flood-{i}", daemon=True)
                t.start()
                threads.append(t)
                # Schedule against a fixed clock so thread start-up cost does
                # not stretch the interval and silently lower the arrival rate.
                next_at += interval
                delay = next_at - time.perf_counter()
                if i + 1 < requests_total and delay > 0 and stop.wait(delay):
                    result.interrupted = True
                    break
        except KeyboardInterrupt:
            _interrupted(stop, result)
        _wait_for_answers(threads, stop, result, timeout)
    summary = summarise(result, mode="flood", url=url, started=started)
    summary["config"] = {"requests": requests_total, "interval_s": interval, "timeout_s": timeout}
    return summary


def run_closed_loop(url: str, image_path: str | os.PathLike[str], concurrency: int = 4,
                    duration: float = 30.0, timeout: float = 60.0,
                    progress: IO[str] | None = None,
                    stop_event: threading.Event | None = None,
                    api_key: str | None = None) -> dict[str, Any]:
    """Closed loop: ``concurrency`` workers send back-to-back for ``duration`` s.

    No new request starts after ``duration``; ones in flight are waited for
    (bounded by ``timeout``).  ``api_key`` as in ``run_flood``.  Returns the
    summary dict.
    """
    image, filename, content_type = _load_image(image_path)
    result = LoadResult()
    stop = stop_event or threading.Event()
    start = time.perf_counter()
    end_at = start + duration

    def worker() -> None:
        # One session per worker so its keep-alive connection is reused across
        # requests, as a real client would.
        with _session(api_key) as session:
            while not stop.is_set() and time.perf_counter() < end_at:
                _send_one(session, url, image, filename, content_type, timeout, result)

    threads = [threading.Thread(target=worker, name=f"worker-{i}", daemon=True)
               for i in range(concurrency)]
    with _progress(result, progress, None):
        for t in threads:
            t.start()
        try:
            # Wake at the duration (or on stop) rather than polling joins.
            if stop.wait(max(0.0, end_at - time.perf_counter())):
                result.interrupted = True
        except KeyboardInterrupt:
            _interrupted(stop, result)
        _wait_for_answers(threads, stop, result, timeout)
    summary = summarise(result, mode="closed-loop", url=url, started=start)
    summary["config"] = {"concurrency": concurrency, "duration_s": duration, "timeout_s": timeout}
    return summary


def _distribution(values: list[float], with_tail: bool) -> dict[str, float | int]:
    stats: dict[str, float | int] = {
        "count": len(values),
        "mean": round(sum(values) / len(values), 3),
        "p50": round(percentile(values, 50), 3),
        "p95": round(percentile(values, 95), 3),
    }
    if with_tail:
        stats["p99"] = round(percentile(values, 99), 3)
        stats["max"] = round(max(values), 3)
    return stats


def summarise(result: LoadResult, mode: str = "", url: str = "",
              started: float | None = None) -> dict[str, Any]:
    """Turn a ``LoadResult`` into a JSON-serialisable summary dict.

    Requests still in flight (past the join deadline) count as failures under
    ``"no answer"``: a request that never came back is not a success.
    """
    with result._lock:
        sent, done, ok = result.sent, result.done, result.ok
        failures = Counter(result.failures)
        examples = dict(result.failure_examples)
        latencies = list(result.latencies_ms)
        phases = {k: list(v) for k, v in result.phases_ms.items()}
        first, last = result.first_send, result.last_done
        interrupted = result.interrupted
    unanswered = sent - done
    if unanswered > 0:
        failures[NO_ANSWER] += unanswered
        examples.setdefault(NO_ANSWER, "still in flight when the client stopped waiting")
    # Throughput is over first send .. last answer: neither the set-up before
    # the first request nor a tail of abandoned requests should dilute it.
    wall = (last - first) if (first is not None and last is not None) else 0.0
    elapsed = (time.perf_counter() - started) if started is not None else wall
    return {
        "mode": mode,
        "url": url,
        "sent": sent,
        "answered": len(latencies),
        "ok": ok,
        "failed": sum(failures.values()),
        "failures": dict(sorted(failures.items(), key=lambda kv: (-kv[1], kv[0]))),
        "failure_examples": examples,
        "interrupted": interrupted,
        "wall_s": round(wall, 3),
        "elapsed_s": round(elapsed, 3),
        "throughput_rps": round(ok / wall, 3) if wall > 0 else 0.0,
        "latency_ms": _distribution(latencies, with_tail=True) if latencies else None,
        "server_timing_ms": {name: _distribution(vals, with_tail=False)
                             for name, vals in sorted(phases.items()) if vals},
    }


def format_summary(summary: dict[str, Any]) -> str:
    """Human-readable multi-line rendering of a summary dict."""
    cfg = summary.get("config", {})
    if summary["mode"] == "flood":
        head = (f"flood: {cfg.get('requests')} requests, one every "
                f"{cfg.get('interval_s')} s -> {summary['url']}")
    elif summary["mode"] == "closed-loop":
        head = (f"closed loop: {cfg.get('concurrency')} workers for "
                f"{cfg.get('duration_s')} s -> {summary['url']}")
    else:
        head = summary["url"]
    lines = [f"=== {head}" + ("  (INTERRUPTED)" if summary["interrupted"] else "")]
    lines.append(f"sent        {summary['sent']}")
    lines.append(f"ok          {summary['ok']}")
    failed = summary["failed"]
    if failed:
        by = ", ".join(f"{k}: {v}" for k, v in summary["failures"].items())
        lines.append(f"failed      {failed}  ({by})")
        for kind, example in summary["failure_examples"].items():
            lines.append(f"  e.g. {kind}: {example.strip().splitlines()[0] if example.strip() else ''}")
    else:
        lines.append("failed      0")
    lines.append(f"wall time   {summary['wall_s']:.2f} s (first send to last answer)")
    lines.append(f"throughput  {summary['throughput_rps']:.2f} ok/s")
    lat = summary["latency_ms"]
    if lat:
        lines.append(f"latency ms  p50 {lat['p50']:.1f}  p95 {lat['p95']:.1f}  "
                     f"p99 {lat['p99']:.1f}  max {lat['max']:.1f}  "
                     f"(of {lat['count']} answered)")
    else:
        lines.append("latency ms  n/a (nothing answered)")
    st = summary["server_timing_ms"]
    if st:
        lines.append("server timing ms (Server-Timing header):")
        width = max(len(name) for name in st)
        for name, d in st.items():
            lines.append(f"  {name:<{width}}  n {d['count']:<6} mean {d['mean']:8.1f}  "
                         f"p50 {d['p50']:8.1f}  p95 {d['p95']:8.1f}")
    return "\n".join(lines)


def _positive(kind: type) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a valid {kind.__name__}: {text!r}")
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return value
    return parse


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}")
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Load-test the /predict endpoint: an open-loop flood (default) "
                    "or a closed loop (--concurrency/--duration).")
    p.add_argument("url_pos", nargs="?", metavar="URL", help=f"endpoint (default {DEFAULT_URL})")
    p.add_argument("--url", help="endpoint, same as the positional URL")
    p.add_argument("--image", default=DEFAULT_IMAGE,
                   help=f"image file to POST as field 'image' (default {DEFAULT_IMAGE})")
    p.add_argument("--body", metavar="FILE.json",
                   help="instead of an image, POST this JSON file as the body (application/json): a "
                        "features model's instance or {\"instances\": [...]}, e.g. to /models/<name>/predict")
    flood = p.add_argument_group("flood (open loop, default)")
    flood.add_argument("--requests", type=_positive(int), default=None,
                       help="number of requests to send (default 500)")
    flood.add_argument("--interval", type=_non_negative_float, default=None,
                       help="seconds between request starts (default 0.05)")
    closed = p.add_argument_group("closed loop")
    closed.add_argument("--concurrency", type=_positive(int),
                        help="number of workers sending back-to-back")
    closed.add_argument("--duration", type=_positive(float),
                        help="seconds to keep sending (default 30 with --concurrency)")
    p.add_argument("--timeout", type=_positive(float), default=60.0,
                   help="per-request client timeout in seconds (default 60)")
    p.add_argument("--api-key", metavar="KEY", default=None,
                   help="API key for a service with API keys, sent as 'Authorization: Bearer KEY' "
                        "(default: the API_KEY environment variable, which keeps the key out of "
                        "process lists and shell history)")
    p.add_argument("--json", metavar="PATH", help="also write the summary as JSON ('-' for stdout)")
    p.add_argument("--quiet", action="store_true", help="no live progress line")
    return p


def _json_body_problem(path: str) -> str:
    """Why `path` cannot be sent as a JSON body ("" if it can): a missing file, not JSON, not .json."""
    if not path.endswith(".json"):
        return "name it *.json (its content type is read from the name)"
    try:
        with open(path, encoding="utf-8") as fh:
            json.load(fh)
    except OSError as exc:
        return f"cannot be read ({exc.strerror})"
    except ValueError as exc:
        return f"not valid JSON ({exc})"
    return ""


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the process exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)

    if args.url_pos and args.url and args.url_pos != args.url:
        parser.error("give the URL either positionally or with --url, not two different ones")
    url = args.url or args.url_pos or DEFAULT_URL

    closed_loop = args.concurrency is not None
    if args.duration is not None and not closed_loop:
        parser.error("--duration needs --concurrency (closed loop)")
    if closed_loop and (args.requests is not None or args.interval is not None):
        parser.error("--requests/--interval are for the flood; they cannot be combined "
                     "with --concurrency")

    if args.body is not None:
        problem = _json_body_problem(args.body)
        if problem:
            print(f"error: --body {args.body!r}: {problem}", file=sys.stderr)
            return 2
        args.image = args.body
    elif not os.path.isfile(args.image):
        print(f"error: image file not found: {args.image!r} "
              f"(pass --image PATH to an image to send, e.g. --image dog.jpg)", file=sys.stderr)
        return 2

    api_key = (args.api_key if args.api_key is not None else os.environ.get("API_KEY", "")).strip()
    if args.api_key is not None and not api_key:
        parser.error("--api-key is empty; give the key, or leave the option out (API_KEY is read then)")
    progress = None if args.quiet else sys.stderr
    if closed_loop:
        summary = run_closed_loop(url, args.image, concurrency=args.concurrency,
                                  duration=args.duration if args.duration is not None else 30.0,
                                  timeout=args.timeout, progress=progress, api_key=api_key or None)
    else:
        summary = run_flood(url, args.image,
                            requests_total=args.requests if args.requests is not None else 500,
                            interval=args.interval if args.interval is not None else 0.05,
                            timeout=args.timeout, progress=progress, api_key=api_key or None)

    print(format_summary(summary))
    if args.json:
        text = json.dumps(summary, indent=2)
        if args.json == "-":
            print(text)
        else:
            with open(args.json, "w", encoding="utf-8") as fh:
                fh.write(text + "\n")

    if summary["failed"]:
        return 1
    return 130 if summary["interrupted"] else 0


if __name__ == "__main__":
    sys.exit(main())

"""The queue operations between the tiers, on Redis Streams with a consumer group.

The records and key names are protocol.py's; this module is how each tier moves them.

Web tier: `submit` a job (refused when the queue is full), then `wait_result`, which blocks on
that job's own result list with BLPOP. Model server: `claim` entries with XREADGROUP (each entry
goes to exactly one consumer of the group and stays in its pending list until acknowledged),
`reply` with the results and the acknowledgement in one transaction, `reclaim` entries another
consumer claimed and never acknowledged (it died) with XAUTOCLAIM. Nobody polls: every wait is a
blocking Redis call with a timeout.

An acknowledged entry is also deleted, so the stream's length is exactly the number of images
queued or in flight, which is what MAX_QUEUE_LENGTH bounds.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import redis

from keras_rest_api.errors import clip
from keras_rest_api.queue.functions import REPLY, SUBMIT
from keras_rest_api.queue.records import Heartbeat, Job, Keys, RecordError, Result
from keras_rest_api.queue.redis_users import connect_from_settings

log = logging.getLogger(__name__)

@dataclass
class Claimed:
    """A stream entry this consumer holds: its entry id, the job (None if unreadable), deliveries."""

    entry_id: bytes
    job: Job | None
    deliveries: int = 1
    error: str = ""
    queue: "JobQueue | None" = None  # the model version's queue it was claimed from
    consumer: str = ""  # who claimed it: only that consumer's answer is published


class QueueFull(Exception):
    """The queue holds MAX_QUEUE_LENGTH images already."""


class NotReplicated(Exception):
    """Fewer replicas than asked acknowledged a submitted job within the bound (Redis WAIT)."""

    def __init__(self, acknowledged: int, wanted: int) -> None:
        super().__init__(f"{acknowledged} of {wanted} replicas acknowledged the job")
        self.acknowledged, self.wanted = acknowledged, wanted


def lost_primary(exc: BaseException) -> bool:
    """Whether `exc` says the primary went away or changed under a command (rather than refusing
    it): what was written there may be gone, after a failover to a replica that had not caught up.
    UNBLOCKED: a blocked read on a primary that Sentinel turned into a replica; READONLY: a write
    to one."""
    return isinstance(exc, (redis.ConnectionError, redis.TimeoutError)) or (
        isinstance(exc, redis.ResponseError) and str(exc).startswith(("UNBLOCKED", "READONLY")))


# A web process's latest look at each stream's length: (length, time.monotonic() of the look).
# Shared by the process's JobQueue objects (one is made per request); see `admits`.
_seen_lengths: dict[tuple[int, str], tuple[int, float]] = {}
# How long a look stays good for `admits`, and below which share of the bound it may be trusted.
LENGTH_LOOK_SECONDS = 0.25
LENGTH_LOOK_SHARE = 0.5


class JobQueue:
    """The queue protocol on one Redis connection, bound to the stream of one model version.

    Results and heartbeats are shared by every model; `for_model` gives the queue of another
    model version on the same connection. An unbound queue (no model) serves only the shared parts.
    """

    def __init__(self, connection: redis.Redis, keys: Keys, group: str, model: str = "", version: str = "") -> None:
        self.redis = connection
        self.keys = keys
        self.group = group
        self.model = model
        self.version = version
        self._stream = keys.queue(model, version) if model else ""

    def for_model(self, model: str, version: str) -> "JobQueue":
        """The queue of `model` version `version`, on this connection."""
        return JobQueue(self.redis, self.keys, self.group, model, version)

    @property
    def _look_key(self) -> tuple[int, str]:
        # Per Redis connection pool too: two apps in one process (tests) may use the same names.
        return id(self.redis.connection_pool), self.stream

    @property
    def stream(self) -> str:
        """This model version's stream key."""
        if not self._stream:
            raise ValueError("this JobQueue is not bound to a model version; use queue.for_model(name, version)")
        return self._stream

    # --- web tier -----------------------------------------------------------------------
    def submit(self, job: Job, max_length: int, pending_ttl: float = 0, owner: str = "",
               min_replicas: int = 0, replicas_timeout_ms: int = 0) -> bytes:
        """Queue `job`; QueueFull if `max_length` images are already queued or in flight.

        With `pending_ttl` (seconds), the job is also marked pending for that long, so that
        `peek_result` can tell "not finished yet" from "unknown or expired", and only for `owner`
        (a hash of who submitted it, see web.auth.owner_tag; "" for anyone). With `min_replicas`,
        return only once that many replicas hold the job (WAIT, at most `replicas_timeout_ms`);
        NotReplicated when fewer do.
        """
        fields = job.to_redis()
        args: list[Any] = [max_length, int(pending_ttl * 1000), f"{job.deadline!r} {owner}".rstrip()]
        for name, value in fields.items():
            args.extend((name, value))
        keys = [self.stream, self.keys.pending(job.id)]
        # FCALL of the library the admin user loaded (queue.functions): this tier runs no script of its own.
        try:
            if min_replicas > 0:
                entry_id = self._submit_replicated(keys, args, min_replicas, replicas_timeout_ms)
            else:
                entry_id = self.redis.fcall(SUBMIT, len(keys), *keys, *args)
        except redis.ResponseError as exc:
            if "function not found" in str(exc).lower():
                log.error("Redis has no function %s: load the queue's functions as an admin user "
                          "(keras-rest-api-redis-users functions; run.sh does it for the Redis it starts)", SUBMIT)
            raise
        look = self._look_key
        if not entry_id:
            _seen_lengths[look] = (max_length, time.monotonic())
            raise QueueFull()
        seen = _seen_lengths.get(look)
        if seen is not None:  # one more than seen, without moving the look's time
            _seen_lengths[look] = (seen[0] + 1, seen[1])
        return entry_id

    def _submit_replicated(self, keys: list[str], args: list[Any], min_replicas: int, timeout_ms: int) -> bytes | None:
        # WAIT counts the writes of its own connection, so the FCALL and WAIT go down one
        # connection, as one pipeline.
        pipe = self.redis.pipeline(transaction=False)
        pipe.fcall(SUBMIT, len(keys), *keys, *args)
        pipe.wait(min_replicas, max(1, timeout_ms))
        entry_id, acknowledged = pipe.execute(raise_on_error=False)
        if isinstance(entry_id, Exception):
            raise entry_id
        if isinstance(acknowledged, Exception):
            raise acknowledged
        if entry_id and int(acknowledged) < min_replicas:
            raise NotReplicated(int(acknowledged), min_replicas)
        return entry_id

    def wait_result(self, job_id: str, timeout: float) -> Result | None:
        """Block until the result of `job_id` arrives, at most `timeout` seconds; None on timeout."""
        # BLPOP takes whole milliseconds; a zero timeout would mean "forever".
        reply = self.redis.blpop([self.keys.result(job_id)], timeout=max(timeout, 0.001))
        if reply is None:
            return None
        return _read_result(job_id, reply[1])

    def forget_pending(self, job_id: str) -> None:
        """Drop a job's pending marker: its request took the answer itself."""
        self.redis.delete(self.keys.pending(job_id))

    def peek_result(self, job_id: str, owner: str = "") -> tuple[Result | None, float | None]:
        """(result, deadline) of a job of `owner`, without taking the result: it stays for RESULT_TTL.

        The deadline is that of a job still marked pending, None for an unknown or expired job.
        A job marked for another owner, or (for an owner) not marked at all, is (None, None): the
        same as an unknown one, so its id tells another client nothing.
        """
        pipe = self.redis.pipeline(transaction=False)
        pipe.lindex(self.keys.result(job_id), 0)
        pipe.get(self.keys.pending(job_id))
        result, marker = pipe.execute()
        deadline, marked_for = _marker(marker)
        if marked_for != owner and (marker is not None or owner):
            return None, None
        return (_read_result(job_id, result) if result is not None else None), deadline

    def length(self) -> int:
        """Images queued or in flight."""
        length = int(self.redis.xlen(self.stream))
        _seen_lengths[self._look_key] = (length, time.monotonic())
        return length

    def admits(self, max_length: int) -> bool:
        """Whether the queue had room a moment ago: the cheap check before reading and decoding.

        A look at the length younger than LENGTH_LOOK_SECONDS, plus this process's submits since,
        is trusted while it is under half the bound; otherwise Redis is asked (XLEN). Under load
        that spares most requests a round trip; `submit`'s atomic check still enforces the bound
        exactly, so the most a stale look costs is one decode of an image then refused.
        """
        seen = _seen_lengths.get(self._look_key)
        if (seen is not None and time.monotonic() - seen[1] < LENGTH_LOOK_SECONDS
                and seen[0] < max_length * LENGTH_LOOK_SHARE):
            return True
        return self.length() < max_length

    # --- model server -------------------------------------------------------------------
    def ensure_group(self) -> None:
        """Create the stream and consumer group if missing, starting from the oldest entry."""
        try:
            # Id 0, not $: images queued before the first model server started are served too.
            self.redis.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def claim(self, consumer: str, count: int, block_ms: int | None) -> list[Claimed]:
        """Up to `count` new entries for `consumer`, blocking up to `block_ms` for the first one.

        `block_ms=None` returns at once with whatever is there.
        """
        reply = self.redis.xreadgroup(
            self.group, consumer, {self.stream: ">"}, count=count, block=block_ms
        )
        if not reply:
            return []
        _stream, entries = reply[0]
        return [_claimed(self, entry_id, fields, 1, consumer) for entry_id, fields in entries]

    def reclaim(self, consumer: str, min_idle_ms: int, count: int) -> list[Claimed]:
        """Take over up to `count` entries claimed by any consumer and idle for `min_idle_ms`."""
        reply = self.redis.xautoclaim(
            self.stream, self.group, consumer, min_idle_time=min_idle_ms, count=count
        )
        entries = [(entry_id, fields) for entry_id, fields in reply[1] if fields is not None]
        if not entries:
            return []
        deliveries = self._delivery_counts(entry_id for entry_id, _ in entries)
        return [_claimed(self, entry_id, fields, deliveries.get(entry_id, 1), consumer) for entry_id, fields in entries]

    def _delivery_counts(self, entry_ids: Iterable[bytes]) -> dict[bytes, int]:
        counts = {}
        pipe = self.redis.pipeline(transaction=False)
        ids = list(entry_ids)
        for entry_id in ids:
            pipe.xpending_range(self.stream, self.group, min=entry_id, max=entry_id, count=1)
        for entry_id, pending in zip(ids, pipe.execute()):
            counts[entry_id] = int(pending[0]["times_delivered"]) if pending else 1
        return counts

    def reply(self, answers: Sequence[tuple[Claimed, Result]], result_ttl: float) -> int:
        """Publish each job's result and acknowledge its entry, all in one atomic function call; return
        how many were published.

        Atomic: a server that dies here answered and acknowledged everything or nothing, so a
        takeover never answers a request that was already answered. An entry its claimer no
        longer holds (taken over by another server, or answered by it already) is skipped, so a
        job that ran twice is answered once.
        """
        if not answers:
            return 0
        ttl_ms = max(1, int(result_ttl * 1000))
        keys, args = [self.stream], [self.group, answers[0][0].consumer, ttl_ms]
        for claimed, result in answers:
            if claimed.consumer != answers[0][0].consumer:
                raise ValueError("one reply answers the claims of one consumer")
            if claimed.job is None:
                raise ValueError("an entry without a job is discarded (JobQueue.discard), not answered")
            keys.append(self.keys.result(claimed.job.id))
            args.extend((claimed.entry_id, result.to_redis()))
        return int(self.redis.fcall(REPLY, len(keys), *keys, *args))

    def discard(self, entry_ids: Sequence[bytes]) -> None:
        """Acknowledge entries without answering (their clients have given up)."""
        if entry_ids:
            pipe = self.redis.pipeline(transaction=True)
            self._acknowledge(pipe, entry_ids)
            pipe.execute()

    def _acknowledge(self, pipe: Any, entry_ids: Sequence[bytes]) -> None:
        pipe.xack(self.stream, self.group, *entry_ids)
        pipe.xdel(self.stream, *entry_ids)

    # --- heartbeats ---------------------------------------------------------------------
    def heartbeat(self, beat: Heartbeat, ttl: float) -> None:
        """Say that model server `beat.name` is alive, with what it serves, for `ttl` seconds.

        Servers whose heartbeat is older than `ttl` died without leaving: they are forgotten here.
        """
        beat.seen = time.time()
        pipe = self.redis.pipeline(transaction=False)
        pipe.set(self.keys.server(beat.name), beat.to_redis(), px=int(ttl * 1000))
        pipe.zadd(self.keys.servers, {beat.name: beat.seen})
        pipe.zremrangebyscore(self.keys.servers, "-inf", beat.seen - ttl)
        pipe.execute()

    def remove_server(self, name: str) -> None:
        """Forget model server `name` (it is stopping)."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.delete(self.keys.server(name))
        pipe.zrem(self.keys.servers, name)
        pipe.execute()

    def live_servers(self, ttl: float) -> list[Heartbeat]:
        """The model servers that sent a valid heartbeat within `ttl` seconds, with what they published."""
        # Read-only: removing stale names is the model servers' job (the web user may not write there).
        names = self.redis.zrangebyscore(self.keys.servers, time.time() - ttl, "+inf")
        if not names:
            return []
        records = self.redis.mget([self.keys.server(name.decode(errors="replace")) for name in names])
        beats = []
        for name, record in zip(names, records):
            if record is None:
                continue
            try:
                beats.append(Heartbeat.from_redis(record))
            except RecordError as exc:
                log.warning("ignoring an invalid heartbeat under %s: %s", clip(name), clip(str(exc), 200))
        return beats


def claim_any(queues: Sequence[JobQueue], consumer: str, block_ms: int) -> list[Claimed]:
    """The first job of any of `queues` (one per queue at most), blocking up to `block_ms`.

    One XREADGROUP over every stream: a server serving several models waits on all of them at
    once, and each claimed job says which queue it came from.
    """
    if not queues:
        return []
    by_stream = {q.stream: q for q in queues}
    reply = queues[0].redis.xreadgroup(queues[0].group, consumer, {key: ">" for key in by_stream},
                                       count=1, block=block_ms)
    claimed = []
    for stream, entries in reply or []:
        queue = by_stream[stream.decode() if isinstance(stream, bytes) else stream]
        claimed.extend(_claimed(queue, entry_id, fields, 1, consumer) for entry_id, fields in entries)
    return claimed


def _claimed(queue: JobQueue, entry_id: bytes, fields: dict[bytes, bytes], deliveries: int,
             consumer: str) -> Claimed:
    try:
        return Claimed(entry_id, Job.from_redis(fields), deliveries, queue=queue, consumer=consumer)
    except RecordError as exc:
        return Claimed(entry_id, None, deliveries, error=str(exc), queue=queue, consumer=consumer)


def _read_result(job_id: str, data: bytes) -> Result:
    try:
        return Result.from_redis(data)
    except RecordError as exc:
        # Only a forged or corrupted record gets here: answer the client, do not trust it.
        log.error("job %s: rejecting an invalid result record: %s", job_id, exc)
        return Result(False, error="The model server's answer could not be read. Retry the request.", status=502)


def _marker(marker: bytes | None) -> tuple[float | None, str]:
    """A pending marker's (deadline, owner): "<deadline> <owner>", or "<deadline>" for anyone."""
    if marker is None:
        return None, ""
    deadline, _, owner = marker.decode("ascii", "replace").partition(" ")
    try:
        return float(deadline), owner
    except ValueError:
        return math.inf, owner  # a foreign marker: pending, with no known deadline


def queue_from_settings(config: Mapping[str, Any], read_timeout: float) -> JobQueue:
    """The (unbound) queue the settings name (REDIS_URL or REDIS_SENTINELS, KEY_PREFIX, QUEUE_NAME,
    CONSUMER_GROUP)."""
    return JobQueue(connect_from_settings(config, read_timeout), Keys(config["KEY_PREFIX"], config["QUEUE_NAME"]),
                    config["CONSUMER_GROUP"])

"""What keeps the queue through a lost Redis, piece by piece: the settings that name Sentinels,
the persistence written into redis.conf, and the replica count a submit waits for (against a
real primary and replica)."""
from __future__ import annotations

import signal
import time
from typing import Iterator

import numpy as np
import pytest
import redis

from keras_rest_api.queue import redis_users
from keras_rest_api.queue.functions import LIBRARY
from keras_rest_api.queue.jobs import JobQueue, NotReplicated, lost_primary
from keras_rest_api.queue.redis_users import connect_from_settings, parse_sentinels
from keras_rest_api.queue.records import Job, Keys, Result
from keras_rest_api.settings import load
from tests.support.harness import RedisServer, Sentinels


def test_sentinels_are_host_port_pairs_and_a_mistake_is_named():
    assert parse_sentinels("10.0.0.1:26379, sentinel-b:26380,[::1]:26381") == [
        ("10.0.0.1", 26379), ("sentinel-b", 26380), ("::1", 26381)]
    for bad in ("10.0.0.1", "host:port", "a:1,,b:2", "h:70000"):
        with pytest.raises(ValueError, match="REDIS_SENTINELS must be comma-separated host:port"):
            parse_sentinels(bad)


def test_sentinels_without_a_master_name_are_refused_before_connecting():
    with pytest.raises(ValueError, match="REDIS_SENTINEL_MASTER is empty"):
        connect_from_settings({**load({}), "REDIS_SENTINELS": "127.0.0.1:26379"}, 1.0)


def test_the_sentinels_password_comes_from_its_file(tmp_path):
    secret = tmp_path / "sentinel.password"
    secret.write_text("s3cret\n")
    assert redis_users.sentinel_options({"REDIS_SENTINEL_PASSWORD_FILE": str(secret)}) == {"password": "s3cret"}
    assert redis_users.sentinel_options({}) == {}
    with pytest.raises(redis_users.RedisSecurityError, match="REDIS_SENTINEL_PASSWORD_FILE is empty"):
        redis_users.sentinel_options({"REDIS_SENTINEL_USERNAME": "watcher"})


def test_redis_conf_keeps_an_append_only_file_unless_told_off(tmp_path):
    def conf(appendfsync: str) -> str:
        prepared = redis_users.prepare(tmp_path / "secrets", prefix="p", queue_name="q", data_dir=tmp_path,
                                       port=1234, appendfsync=appendfsync)
        return prepared.conf.read_text()

    assert "appendonly yes\nappendfsync everysec\n" in conf("everysec")
    assert "appendfsync always\n" in conf("always")
    assert "appendonly no\n" in conf("off") and "appendfsync" not in conf("off")
    with pytest.raises(redis_users.RedisSecurityError, match="REDIS_APPENDFSYNC must be one of"):
        conf("sometimes")
    # No password in it unless it replicates.
    assert "masterauth" not in conf("everysec")


def test_a_lost_or_demoted_primary_is_told_apart_from_a_refused_command():
    assert lost_primary(redis.ConnectionError("gone")) and lost_primary(redis.TimeoutError())
    assert lost_primary(redis.ResponseError("UNBLOCKED force unblock from blocking operation"))
    assert not lost_primary(redis.ResponseError("NOPERM this user has no permissions"))


@pytest.fixture(scope="module")
def primary_and_replica(tmp_path_factory) -> Iterator[tuple[RedisServer, RedisServer]]:
    directory = tmp_path_factory.mktemp("replicated")
    primary = RedisServer(directory / "primary", secrets_dir=directory / "secrets", replication=True)
    primary.start()
    replica = RedisServer(directory / "replica", secrets_dir=directory / "secrets", replica_of=primary)
    replica.start()
    yield primary, replica
    replica.stop()
    primary.stop()


def test_the_admin_tools_find_the_primary_through_the_sentinels(primary_and_replica, tmp_path, monkeypatch,
                                                                  capsys):
    primary, _ = primary_and_replica
    sentinels = Sentinels(tmp_path / "sentinels", primary)
    sentinels.start()
    # REDIS_URL names no server (port 1): only the Sentinels can lead the tools to the primary.
    as_admin = {**primary.settings_for(redis_users.ADMIN), **sentinels.settings(), "REDIS_URL": "redis://127.0.0.1:1/0"}
    try:
        for name, value in as_admin.items():
            monkeypatch.setenv(name, value)
        primary.client().function_delete(LIBRARY)
        assert redis_users.main(["functions"]) == 0
        assert [entry[b"library_name"] if isinstance(entry, dict) else entry[1] for entry in
                primary.client().function_list(LIBRARY)] == [LIBRARY.encode()]
        assert redis_users.main(["probe"]) == 0

        monkeypatch.setenv("REDIS_SENTINEL_MASTER", "nosuchservice")
        assert redis_users.main(["probe"]) == 3
        assert "no Sentinel answered with a primary" in capsys.readouterr().err

        monkeypatch.setenv("REDIS_SENTINEL_MASTER", sentinels.master)
        wrong = tmp_path / "wrong.password"
        wrong.write_text("not-the-password\n")
        monkeypatch.setenv("REDIS_PASSWORD_FILE", str(wrong))
        assert redis_users.main(["probe"]) == 4
        assert "the primary that the Sentinels" in capsys.readouterr().err
    finally:
        sentinels.stop()


def web_queue(primary: RedisServer) -> JobQueue:
    connection = connect_from_settings({**load({}), **primary.settings_for(redis_users.WEB)}, 5.0)
    return JobQueue(connection, Keys("kras", "image_queue"), "servers").for_model("m", "1")


def job(n: int) -> Job:
    return Job(id=f"dur{n}", pixels=np.full((4, 4, 3), n, np.uint8), top_k=1, deadline=time.time() + 30)


def test_a_submit_waits_for_the_replica_and_fails_when_none_acknowledges(primary_and_replica):
    primary, replica = primary_and_replica
    queue = web_queue(primary)  # as the web user: its ACL allows WAIT
    assert queue.submit(job(1), 100, min_replicas=1, replicas_timeout_ms=2000)
    assert replica.client().xlen(queue.stream) >= 1  # WAIT returned: the replica has it
    replica.process.send_signal(signal.SIGSTOP)
    try:
        started = time.monotonic()
        with pytest.raises(NotReplicated) as refused:
            queue.submit(job(2), 100, min_replicas=1, replicas_timeout_ms=300)
        assert (refused.value.acknowledged, refused.value.wanted) == (0, 1)
        assert 0.25 < time.monotonic() - started < 3  # bounded by the timeout, not the replica
    finally:
        replica.process.send_signal(signal.SIGCONT)


def test_a_submit_with_wait_loads_its_script_on_a_fresh_primary(primary_and_replica):
    primary, _ = primary_and_replica
    primary.client().script_flush()
    assert web_queue(primary).submit(job(3), 100, min_replicas=1, replicas_timeout_ms=2000)


def test_a_redis_killed_and_restarted_replays_the_tiers_transactions_from_its_file(tmp_path):
    # The tiers' scripts and replies are logged as MULTI/EXEC, which Redis 7.0 re-checks against
    # the default user's rules when it replays them: with none, everything was dropped.
    server = RedisServer(tmp_path / "data", secrets_dir=tmp_path / "secrets")
    server.start()
    try:
        web = web_queue(server)
        web.submit(job(1), 100, pending_ttl=60)
        web.submit(job(2), 100)
        model = JobQueue(connect_from_settings({**load({}), **server.settings_for(redis_users.MODEL_SERVER)}, 5.0),
                         Keys("kras", "image_queue"), "servers").for_model("m", "1")
        model.ensure_group()
        claimed = model.claim("server-a", 2, block_ms=None)
        model.reply([(claimed[0], Result.ok([], {}))], result_ttl=60)
        time.sleep(1.2)  # appendfsync everysec
        server.kill()
        server.start()
        admin = server.client()
        assert admin.xlen(web.stream) == 1 and admin.xpending(web.stream, "servers")["pending"] == 1
        assert admin.exists(web.keys.result("dur1"), web.keys.pending("dur1")) == 2
    finally:
        server.stop()


def test_a_job_run_by_two_servers_is_answered_once(tmp_path):
    # A slow batch taken over while its server still runs it: both finish, one answer is kept.
    server = RedisServer(tmp_path / "data", secrets_dir=tmp_path / "secrets")
    server.start()
    try:
        web_queue(server).submit(job(1), 100)
        model = JobQueue(connect_from_settings({**load({}), **server.settings_for(redis_users.MODEL_SERVER)}, 5.0),
                         Keys("kras", "image_queue"), "servers").for_model("m", "1")
        model.ensure_group()
        [slow] = model.claim("server-a", 1, block_ms=None)
        time.sleep(0.05)
        [taken] = model.reclaim("server-b", min_idle_ms=10, count=1)
        assert model.reply([(slow, Result.ok([], {}, model="m", version="1"))], result_ttl=60) == 0
        assert model.reply([(taken, Result.ok([], {}, model="m", version="1"))], result_ttl=60) == 1
        assert model.reply([(slow, Result.ok([], {}))], result_ttl=60) == 0  # late, after the answer
        admin = server.client()
        assert admin.llen(model.keys.result("dur1")) == 1 and admin.xlen(model.stream) == 0
    finally:
        server.stop()

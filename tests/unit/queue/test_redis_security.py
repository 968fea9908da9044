"""Redis with authentication by role (queue/redis_users.py), against real redis-server processes.

Each tier's user must be able to do its whole part of the protocol and nothing else: the web
user cannot forge a result or a heartbeat, nobody but the admin can flush or reconfigure Redis,
and a client without credentials gets nothing.
"""
from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest
import redis

from keras_rest_api.queue import redis_users
from keras_rest_api.queue.functions import LIBRARY, REPLY, SOURCE as FUNCTIONS_SOURCE, SUBMIT
from keras_rest_api.queue.jobs import JobQueue, queue_from_settings
from keras_rest_api.queue.records import Heartbeat, Job, Keys, ModelContract, Prediction, Result, ServedModel
from tests.support.harness import PROJECT, RedisServer, free_port, wait_until

PREFIX, QUEUE = "sec", "image_queue"


@pytest.fixture(scope="module", params=[False, True], ids=["plain", "tls"])
def server(request, tmp_path_factory) -> Iterator[RedisServer]:
    s = RedisServer(tmp_path_factory.mktemp("redis-acl"), prefix=PREFIX, queue_name=QUEUE, tls=request.param)
    s.start()
    yield s
    s.stop()


@pytest.fixture()
def admin(server) -> Iterator[redis.Redis]:
    client = server.client()
    client.flushall()
    yield client
    client.close()


def queue_as(server: RedisServer, role: str, config: dict[str, Any]) -> JobQueue:
    values = {**config, "KEY_PREFIX": PREFIX, "QUEUE_NAME": QUEUE, **server.settings_for(role)}
    return queue_from_settings(values, read_timeout=5.0).for_model("tiny", "1")


def heartbeat(name: str) -> Heartbeat:
    contract = ModelContract(name="tiny", version="1", input_height=4, input_width=4, classes=2)
    return Heartbeat(name=name, models=[ServedModel(contract)])


def job(n: int) -> Job:
    pixels = np.full((4, 4, 3), n, dtype=np.uint8)
    return Job(id=f"{n:032x}", pixels=pixels, top_k=1, deadline=time.time() + 30, fetch_later=True)


def refused(call) -> str:
    """The error Redis answers `call` with; fails the test if Redis carried it out."""
    with pytest.raises((redis.ResponseError, redis.AuthenticationError)) as caught:
        call()
    return str(caught.value)


def denied(call) -> str:
    """Like `refused`, where the reason must be the ACL (NOPERM), not some other error."""
    message = refused(call)
    assert re.search("no permissions|can't run this command", message), message
    return message


def test_a_client_without_credentials_is_refused(server, admin):
    kwargs = {"ssl_ca_certs": str(server.prepared.tls.ca_cert)} if server.tls else {}
    anonymous = redis.Redis.from_url(server.service_url, socket_connect_timeout=1, **kwargs)
    # redis-py opens with HELLO; Redis answers that (or NOAUTH) before any command runs.
    for call in (anonymous.ping, lambda: anonymous.get("x"), anonymous.flushall):
        assert re.search("NOAUTH|authenticated|Authentication", refused(call))
    # Nor does naming a user without its password, or the disabled default user, get in.
    for username, password in (("web", "wrong"), ("default", ""), ("admin", "guess")):
        with pytest.raises(redis.AuthenticationError):
            redis.Redis.from_url(server.service_url, username=username, password=password or None, **kwargs).ping()


def test_tls_redis_refuses_plain_connections(server, admin):
    if not server.tls:
        pytest.skip("the plain server")
    plain_url = server.service_url.replace("rediss://", "redis://")
    client = redis.Redis.from_url(plain_url, socket_connect_timeout=1, socket_timeout=1,
                                  **{k: v for k, v in redis_users.client_options(server.settings_for("web")).items()
                                     if not k.startswith("ssl_")})
    with pytest.raises(redis.ConnectionError):
        client.ping()


def test_each_tier_does_its_whole_part_of_the_protocol_with_its_own_user(server, admin, config):
    whole_protocol(queue_as(server, "web", config), queue_as(server, "model_server", config))


def whole_protocol(web: JobQueue, model: JobQueue) -> None:
    """Every command each tier issues, as that tier's user."""
    model.ensure_group()
    model.heartbeat(heartbeat("ms-1"), ttl=30)
    assert [s.name for s in web.live_servers(30)] == ["ms-1"]

    web.submit(job(1), max_length=10, pending_ttl=30)
    web.submit(job(2), max_length=10)
    assert web.length() == 2
    result, deadline = web.peek_result(job(1).id)
    assert result is None and deadline is not None

    claimed = model.claim("ms-1", count=10, block_ms=None)
    assert [c.job.id for c in claimed] == [job(1).id, job(2).id]
    model.reply([(c, Result.ok([Prediction(f"n{i}", 1.0)], {})) for i, c in enumerate(claimed)], result_ttl=30)
    assert web.wait_result(job(2).id, timeout=2).predictions[0].label == "n1"
    assert web.peek_result(job(1).id)[0].predictions[0].label == "n0"
    web.forget_pending(job(1).id)
    assert web.peek_result(job(1).id)[1] is None
    assert web.length() == 0

    # Taking over a dead consumer's entries, and leaving.
    web.submit(job(3), max_length=10)
    model.claim("dead", count=1, block_ms=None)
    assert [c.job.id for c in model.reclaim("ms-1", min_idle_ms=0, count=5)] == [job(3).id]
    model.discard([c.entry_id for c in model.reclaim("ms-1", min_idle_ms=0, count=5)])
    model.remove_server("ms-1")
    assert web.live_servers(30) == []


def test_the_web_user_cannot_forge_a_result_or_a_heartbeat(server, admin, config):
    web = queue_as(server, "web", config).redis
    keys = Keys(PREFIX, QUEUE)
    forged = Result.ok([Prediction("forged", 1.0)], {}).to_redis()
    assert "rpush" in denied(lambda: web.rpush(keys.result(job(1).id), forged))
    assert "lpush" in denied(lambda: web.lpush(keys.result(job(1).id), forged))
    # SET is allowed on pending markers only; not on a result or a heartbeat key.
    denied(lambda: web.set(keys.result(job(1).id), forged))
    denied(lambda: web.set(keys.server("ms-1"), heartbeat("ms-1").to_redis()))
    assert "zadd" in denied(lambda: web.zadd(keys.servers, {"ms-1": time.time()}))
    # Nor through a script of its own: commands inside scripts are checked against the same user.
    script = web.register_script("return redis.call('RPUSH', KEYS[1], ARGV[1])")
    denied(lambda: script(keys=[keys.result(job(1).id)], args=[forged]))
    assert "eval" in denied(lambda: web.eval("return 1", 0))
    # Nor take jobs off the queue or rewrite them.
    assert "xdel" in denied(lambda: web.xdel(keys.queue("tiny", "1"), "0-1"))
    assert "xtrim" in denied(lambda: web.xtrim(keys.queue("tiny", "1"), maxlen=0))
    assert "xreadgroup" in denied(lambda: web.xreadgroup("model_servers", "spy", {keys.queue("tiny", "1"): ">"}))
    # DEL is allowed on its pending markers only.
    for key in (keys.queue("tiny", "1"), keys.result(job(1).id), keys.server("ms-1"), keys.servers):
        denied(lambda: web.delete(key))
    # Nor read or write another deployment's keys.
    denied(lambda: web.set("other:job:1", "x"))
    assert not admin.exists(keys.result(job(1).id), keys.server("ms-1"), keys.servers, "other:job:1")


@pytest.mark.parametrize("role", ["web", "model_server"])
def test_neither_tier_runs_a_script_of_its_own(server, admin, config, role):
    """A script a tier could load could loop forever: Redis would answer BUSY to everyone."""
    client = queue_as(server, role, config).redis
    keys = Keys(PREFIX, QUEUE)
    harmless = admin.script_load("return 1")
    for call in (lambda: client.script_load("while true do end"), lambda: client.evalsha(harmless, 0),
                 lambda: client.eval("return 1", 0), lambda: client.execute_command("EVAL_RO", "return 1", 0),
                 lambda: client.execute_command("SCRIPT", "EXISTS", harmless),
                 lambda: client.function_load("#!lua name=mine\nredis.register_function('spin', function() "
                                              "while true do end end)"),
                 lambda: client.function_list(), lambda: client.function_delete(LIBRARY),
                 lambda: client.execute_command("FUNCTION", "FLUSH"),
                 lambda: client.execute_command("FUNCTION", "KILL")):
        denied(call)
    # Each calls the admin's functions on its own keys only: the web tier cannot write a result
    # through the submit function, the model server cannot set a pending marker through the reply.
    if role == "web":
        denied(lambda: client.fcall(SUBMIT, 2, keys.result(job(1).id), keys.pending(job(1).id), 10, 0, "0", "v", "1"))
    else:
        denied(lambda: client.fcall(REPLY, 2, keys.queue("tiny", "1"), keys.pending(job(1).id),
                                    "model_servers", "ms-1", 1000, "0-1", "forged"))
    assert admin.function_list(library=LIBRARY)  # still loaded


@pytest.mark.parametrize("role", ["web", "model_server"])
def test_neither_tier_can_run_admin_commands(server, admin, config, role):
    client = queue_as(server, role, config).redis
    admin.set("precious", "1")
    for call in (client.flushall, client.flushdb, lambda: client.config_get("*"), lambda: client.config_set("save", ""),
                 lambda: client.keys("*"), lambda: client.acl_list(), lambda: client.get("precious"),
                 lambda: client.execute_command("SHUTDOWN", "NOSAVE"),
                 lambda: client.execute_command("ACL", "SETUSER", role, "+@all", "~*"),
                 lambda: client.execute_command("SCRIPT", "FLUSH"),
                 lambda: client.client_list(), lambda: client.execute_command("MONITOR")):
        denied(call)
    assert admin.get("precious") == b"1" and admin.ping()


def test_the_model_server_user_cannot_touch_pending_markers_or_read_results(server, admin, config):
    model = queue_as(server, "model_server", config).redis
    keys = Keys(PREFIX, QUEUE)
    denied(lambda: model.set(keys.pending(job(1).id), "pending"))
    assert "lrange" in denied(lambda: model.lrange(keys.result(job(1).id), 0, -1))
    assert "xadd" in denied(lambda: model.xadd(keys.queue("tiny", "1"), {"v": "1"}))


def test_secret_files_are_private_and_hold_no_plain_password_but_their_own(server):
    prepared = server.prepared
    passwords = {role: prepared.password(role) for role in redis_users.ROLES}
    assert len(set(passwords.values())) == 3 and all(len(p) >= 32 for p in passwords.values())
    for path in (prepared.acl, prepared.conf, *(prepared.password_file(r) for r in ("model_server", "admin"))):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        if path.suffix != ".password":
            text = path.read_text()
            assert not any(p in text for p in passwords.values()), path
    web_mode = stat.S_IMODE(prepared.password_file("web").stat().st_mode)
    assert web_mode == (0o640 if os.geteuid() == 0 else 0o600)
    if os.geteuid() == 0:  # Apache's daemons (www-data) read the web password, and only that one
        import grp

        assert prepared.password_file("web").stat().st_gid == grp.getgrnam("www-data").gr_gid
        assert stat.S_IMODE(prepared.directory.stat().st_mode) == 0o750
    # No password on redis-server's command line (visible to every user in `ps`).
    cmdline = Path(f"/proc/{server.process.pid}/cmdline").read_bytes().decode()
    assert not any(p in cmdline for p in passwords.values())
    if server.tls:
        assert stat.S_IMODE(prepared.tls.key.stat().st_mode) == 0o600


def test_passwords_are_kept_across_restarts_so_running_tiers_reconnect(server, admin, config):
    web = queue_as(server, "web", config)
    assert web.length() == 0
    before = server.prepared.password("web")
    server.stop()
    server.start()
    assert server.prepared.password("web") == before
    assert web.length() == 0  # the same client, reconnected with the same password


def test_client_options_read_the_password_file_and_explain_mistakes(tmp_path):
    secret = tmp_path / "pw"
    secret.write_text("s3cret-value\n")
    assert redis_users.client_options({"REDIS_USERNAME": "web", "REDIS_PASSWORD_FILE": str(secret)}) == \
        {"username": "web", "password": "s3cret-value"}
    with pytest.raises(redis_users.RedisSecurityError, match="REDIS_PASSWORD_FILE") as caught:
        redis_users.client_options({"REDIS_USERNAME": "web", "REDIS_PASSWORD_FILE": str(tmp_path / "missing")})
    with pytest.raises(redis_users.RedisSecurityError, match="no password"):
        redis_users.client_options({"REDIS_USERNAME": "web"})
    with pytest.raises(redis_users.RedisSecurityError, match="only one"):
        redis_users.client_options({"REDIS_PASSWORD": "a", "REDIS_PASSWORD_FILE": str(secret)})
    with pytest.raises(redis_users.RedisSecurityError, match="rediss://") as caught:
        redis_users.client_options({"REDIS_URL": "redis://u:hidden@h:1/0", "REDIS_TLS_CA_FILE": "/ca.crt"})
    assert "hidden" not in str(caught.value)
    with pytest.raises(redis_users.RedisSecurityError, match="KEY_PREFIX"):
        redis_users.key_patterns("has space", "q")
    assert redis_users.key_patterns("a*b", "q")["result"] == r"a\*b:result:*"


def test_settings_dump_shows_no_secret(tmp_path):
    env = {**os.environ, "REDIS_PASSWORD": "pw-in-env-123", "API_KEYS": "ops:key-in-env-456-0123456789",
           "REDIS_URL": "redis://web:pw-in-url-789@10.0.0.1:6379/0", "REDIS_USERNAME": "web"}
    dump = subprocess.run([sys.executable, "settings.py"], cwd=PROJECT, env=env, capture_output=True, text=True,
                          timeout=30, check=True).stdout
    assert "REDIS_USERNAME=web" in dump
    for secret in ("pw-in-env-123", "key-in-env-456", "pw-in-url-789"):
        assert secret not in dump


def test_cli_prepares_a_redis_that_only_its_users_may_use(tmp_path):
    """What run.sh does: prepare, start redis-server with the conf, probe with each role."""
    port = free_port()
    env = {**os.environ, "REDIS_URL": f"redis://127.0.0.1:{port}/0", "KEY_PREFIX": PREFIX, "QUEUE_NAME": QUEUE}
    for name in ("REDIS_USERNAME", "REDIS_PASSWORD_FILE", "REDIS_PASSWORD"):
        env.pop(name, None)
    cli = [sys.executable, "-m", "keras_rest_api.queue.redis_users"]

    def run(*args: str, **extra: str) -> subprocess.CompletedProcess:
        return subprocess.run([*cli, *args], cwd=PROJECT, env={**env, **extra}, capture_output=True, text=True,
                              timeout=60)

    assert run("probe").returncode == 3  # nothing there yet
    prepared = run("prepare", "--dir", str(tmp_path / "secrets"), "--data-dir", str(tmp_path), "--port", str(port))
    assert prepared.returncode == 0, prepared.stderr
    values = dict(line.split("=", 1) for line in prepared.stdout.splitlines())
    password = Path(values["redis_web_password_file"]).read_text().strip()
    assert password not in prepared.stdout + prepared.stderr
    process = subprocess.Popen(["redis-server", values["redis_conf"]], stdout=subprocess.DEVNULL)
    try:
        admin = run("probe", "--wait", "10", "--role", "admin", "--dir", str(tmp_path / "secrets"))
        assert admin.returncode == 0, admin.stderr
        anonymous = run("probe")
        assert anonymous.returncode == 4 and "refuses" in anonymous.stderr
        web = run("probe", REDIS_USERNAME="web", REDIS_PASSWORD_FILE=values["redis_web_password_file"])
        assert web.returncode == 0, web.stderr
        wrong = run("probe", REDIS_USERNAME="web", REDIS_PASSWORD="not-it")
        assert wrong.returncode == 4 and "not-it" not in wrong.stderr
    finally:
        process.terminate()
        process.wait(10)


def test_the_rules_printed_for_an_existing_redis_create_working_users(tmp_path, config):
    """README: `python -m keras_rest_api.queue.redis_users rules`, given to ACL SETUSER on a Redis of your own."""
    port = free_port()
    process = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                "--dir", str(tmp_path)], stdout=subprocess.DEVNULL)
    try:
        owner = redis.Redis(port=port, socket_connect_timeout=0.2)
        wait_until(lambda: _answers(owner), 10, "redis-server")
        env = {**os.environ, "KEY_PREFIX": PREFIX, "QUEUE_NAME": QUEUE}
        rules = subprocess.run([sys.executable, "-m", "keras_rest_api.queue.redis_users", "rules"], cwd=PROJECT,
                               env=env, capture_output=True, text=True, timeout=30, check=True).stdout.splitlines()
        assert len(rules) == 2
        passwords = {"web": "web-" + "x" * 30, "model_server": "model-" + "y" * 30}
        for line in rules:  # as an operator would paste them into redis-cli
            for role, password in passwords.items():
                line = line.replace(f">{role.upper()}_PASSWORD", f">{password}")
            owner.execute_command(*line.split())
        owner.execute_command("ACL", "SETUSER", "owner", "on", ">owner-" + "z" * 30, "~*", "&*", "+@all")
        owner.execute_command("ACL", "SETUSER", "default", "off")
        url = f"redis://127.0.0.1:{port}/0"
        # README: the operator loads the queue's functions once, as a user allowed FUNCTION LOAD.
        subprocess.run([sys.executable, "-m", "keras_rest_api.queue.redis_users", "functions"], cwd=PROJECT,
                       env={**env, "REDIS_URL": url, "REDIS_USERNAME": "owner", "REDIS_PASSWORD": "owner-" + "z" * 30},
                       capture_output=True, text=True, timeout=30, check=True)

        def tier(role: str) -> JobQueue:
            return queue_from_settings({**config, "KEY_PREFIX": PREFIX, "QUEUE_NAME": QUEUE, "REDIS_URL": url,
                                        "REDIS_USERNAME": role, "REDIS_PASSWORD": passwords[role],
                                        "REDIS_PASSWORD_FILE": "", "REDIS_TLS_CA_FILE": ""},
                                       read_timeout=5).for_model("tiny", "1")

        whole_protocol(tier("web"), tier("model_server"))
        denied(lambda: tier("web").redis.rpush(Keys(PREFIX, QUEUE).result(job(1).id), b"{}"))
    finally:
        process.terminate()
        process.wait(10)


def _answers(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


def test_a_redis_without_the_functions_refuses_the_submit_and_the_log_says_how_to_load_them(server, admin, config,
                                                                                            caplog):
    web = queue_as(server, "web", config)
    admin.function_delete(LIBRARY)
    try:
        with pytest.raises(redis.ResponseError):
            web.submit(job(1), max_length=10)
    finally:
        admin.function_load(FUNCTIONS_SOURCE)
    assert "keras-rest-api-redis-users functions" in caplog.text
    web.submit(job(2), max_length=10)

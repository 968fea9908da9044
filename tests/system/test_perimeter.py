"""The perimeter, second pass (issue 21), as an attacker with a valid API key meets it through
real Apache, Redis and a model server: bounded parsing, short echoes, one answer for Redis,
maxmemory, jobs only for their owner and out of the access log, ranges, the key before the body.
"""
from __future__ import annotations

import json
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from keras_rest_api.queue import redis_users
from keras_rest_api.settings import load as load_settings
from tests.support.harness import running_stack
from tests.support.web_checks import png_bytes
from tests.system.test_decode_budget import RssSampler, daemon_pids

pytestmark = pytest.mark.e2e

MIB = 2**20
ALICE, BOB = "alice-" + "a" * 26, "bob-" + "b" * 28
INFER = "/v2/models/tiny/infer"


@pytest.fixture(scope="module")
def stack(tmp_path_factory, tiny_model_files):
    settings = {**tiny_model_files, "KEY_PREFIX": "perimeter", "API_KEYS": f"alice:{ALICE},bob:{BOB}",
                "WSGI_PROCESSES": 1, "WSGI_THREADS": 8, "REQUEST_TIMEOUT": 10, "MAX_QUEUE_LENGTH": 20,
                "DECODE_MEMORY_BUDGET": 256 * MIB, "DECODE_WAIT_MS": 500, "QUEUE_BLOCK_MS": 200,
                # Every route asks Redis itself (test_a_redis_that_refuses...): no cached model list.
                "METADATA_CACHE_SECONDS": 0}
    with running_stack(tmp_path_factory.mktemp("perimeter"), settings) as s:
        yield s


def key(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def infer_body(inputs: list[dict], **extra: object) -> bytes:
    return json.dumps({"inputs": inputs, **extra}).encode()


def pixels(**extra: object) -> dict:
    return {"name": "pixels", "datatype": "UINT8", "shape": [1, 32, 32, 3], "data": [7] * 3072, **extra}


# 1. ------------------------------------------------------------------------------------------------
def test_eight_concurrent_json_bodies_of_empty_objects_are_refused_before_they_are_parsed(stack):
    body = b'{"inputs": [' + b"{}," * int(19.5 * MIB / 3 - 10) + b"{}]}"
    assert 19 * MIB < len(body) < 20 * MIB
    pids = daemon_pids(stack)
    assert pids
    baseline = sum(int(open(f"/proc/{pid}/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") for pid in pids)

    def send(_: int) -> requests.Response:
        return requests.post(stack.url + INFER, data=body, headers=key(ALICE), timeout=120)

    with RssSampler(pids) as sampler, ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(send, range(8)))
    growth = sampler.peak - baseline
    print(f"\n[perimeter] 8 x {len(body) / MIB:.1f} MiB JSON of empty objects: web tier peak RSS "
          f"{sampler.peak / MIB:.0f} MiB, {growth / MIB:+.0f} MiB over its idle {baseline / MIB:.0f} MiB; "
          f"statuses {sorted(a.status_code for a in answers)}")
    for answer in answers:
        assert answer.status_code == 413, answer.text[:300]
        assert "MAX_JSON_BYTES" in answer.json()["error"]
    # Parsed whole, they cost ~0.5 GiB each (1.1 GiB for the eight on the base commit).
    assert growth < 64 * MIB


# 2. ------------------------------------------------------------------------------------------------
def test_a_megabyte_input_name_comes_back_cut_short_and_stays_out_of_the_log(stack):
    name = "n" * MIB
    answer = requests.post(stack.url + INFER, data=infer_body([pixels(name=name)]), headers=key(ALICE), timeout=30)
    print(f"\n[perimeter] answer to a 1 MiB input name: {len(answer.content)} bytes")
    assert answer.status_code == 400
    assert len(answer.content) < 1000, len(answer.content)
    assert "Unknown input 'nnnnn" in answer.json()["error"]
    assert "n" * 200 not in stack.log("apache")


# 3 and 4 ---------------------------------------------------------------------------------------------
def test_redis_has_maxmemory_sized_from_the_queue_bound_and_never_evicts(stack):
    admin = stack.redis.client()
    expected = redis_users.memory_limit(load_settings(stack.env))
    assert expected == 64 * MIB + 2 * 20 * 256 * 1024
    assert admin.config_get("maxmemory") == {"maxmemory": str(expected)}
    assert admin.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}


def test_a_write_refused_for_memory_is_a_503_with_retry_after_and_loses_nothing_accepted(stack):
    admin = stack.redis.client()
    limit = admin.config_get("maxmemory")["maxmemory"]
    os.killpg(stack.model_server.pid, signal.SIGSTOP)
    try:
        accepted = requests.post(f"{stack.url}/predict?async=1", files={"image": ("a.png", png_bytes(1))},
                                 headers=key(ALICE), timeout=30)
        assert accepted.status_code == 202, accepted.text
        admin.config_set("maxmemory", 1)  # Redis is full: every write is refused
        try:
            for refused in (requests.post(f"{stack.url}/predict", files={"image": ("b.png", png_bytes(2))},
                                          headers=key(ALICE), timeout=30),
                            requests.post(stack.url + INFER, data=infer_body([pixels()]), headers=key(ALICE),
                                          timeout=30)):
                assert refused.status_code == 503, refused.text
                assert refused.headers["Retry-After"]
                assert "out of memory" in refused.json()["error"] and "OOM" not in refused.text
        finally:
            admin.config_set("maxmemory", limit)
    finally:
        os.killpg(stack.model_server.pid, signal.SIGCONT)
    deadline = time.monotonic() + 30
    while True:
        result = requests.get(stack.url + accepted.json()["status_url"], headers=key(ALICE), timeout=30)
        if result.status_code != 202 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert result.status_code == 200 and result.json()["predictions"], result.text


# 5. ------------------------------------------------------------------------------------------------
def test_an_asynchronous_result_is_only_for_the_key_that_created_it(stack):
    accepted = requests.post(f"{stack.url}/predict?async=1", files={"image": ("a.png", png_bytes(3))},
                             headers=key(ALICE), timeout=30)
    assert accepted.status_code == 202, accepted.text
    job_id = accepted.json()["id"]
    deadline = time.monotonic() + 30
    while (own := requests.get(f"{stack.url}/result/{job_id}", headers=key(ALICE), timeout=30)).status_code == 202:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert own.status_code == 200, own.text

    other = requests.get(f"{stack.url}/result/{job_id}", headers=key(BOB), timeout=30)
    unknown_id = "f" * len(job_id)
    unknown = requests.get(f"{stack.url}/result/{unknown_id}", headers=key(BOB), timeout=30)
    assert other.status_code == unknown.status_code == 404
    assert other.json()["error"].replace(job_id, "ID") == unknown.json()["error"].replace(unknown_id, "ID")

    access_log = stack.server_root / "root-access.log"
    logged = access_log.read_text()
    assert "/result/<id>" in logged and "POST /predict?async=1" in logged
    assert job_id not in logged, [line for line in logged.splitlines() if job_id in line]
    assert job_id not in stack.log("apache"), [line for line in stack.log("apache").splitlines() if job_id in line]


# 9. ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("parameters", [{"timeout": 10**400}, {"timeout": 2**63}, {"timeout": -1}])
def test_out_of_range_numbers_are_a_400_that_says_what_is_allowed(stack, parameters):
    answer = requests.post(stack.url + INFER, data=infer_body([pixels()], parameters=parameters),
                           headers=key(ALICE), timeout=30)
    assert answer.status_code == 400, answer.text
    assert "timeout" in answer.json()["error"] and "int64" in answer.json()["error"]
    assert len(answer.content) < 1000


@pytest.mark.parametrize("tensor", [pixels(shape=[10**400, 32, 32, 3]), pixels(data=[10**400] * 3072),
                                    pixels(parameters={"binary_data_size": 10**400})])
def test_huge_numbers_in_tensors_are_a_400(stack, tensor):
    answer = requests.post(stack.url + INFER, data=infer_body([tensor]), headers=key(ALICE), timeout=30)
    assert answer.status_code == 400, answer.text
    assert len(answer.content) < 1000


def test_top_k_out_of_range_is_a_400(stack):
    for top_k in ("0", "21", "9" * 5000):
        answer = requests.post(f"{stack.url}/predict", files={"image": ("a.png", png_bytes(4))},
                               data={"top_k": top_k}, headers=key(ALICE), timeout=30)
        assert answer.status_code == 400 and "top_k" in answer.json()["error"], answer.text
        assert len(answer.content) < 1000


# 10. -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("path, headers, body", [
    ("/predict", {"Content-Type": "application/x-www-form-urlencoded"}, b"image=x"),
    ("/predict", {"Content-Type": "text/plain"}, b"x"),
    ("/models/tiny/predict", {"Content-Type": "application/json"}, b"{}"),
    (INFER, {"Content-Encoding": "gzip"}, b"\x1f\x8b"),
    (INFER, {"Content-Type": "application/json"}, b"[" * 100_000),
    ("/v2/repository/index", {"Content-Type": "application/json"}, b"{" * 10),
])
def test_without_a_key_every_route_answers_401_before_looking_at_the_body(stack, path, headers, body):
    answer = requests.post(stack.url + path, data=body, headers=headers, timeout=30)
    assert answer.status_code == 401, answer.text
    assert answer.headers["WWW-Authenticate"].startswith("Bearer")


# 3 (last: it locks the web tier out of Redis for a moment) ------------------------------------------
REDIS_ROUTES = [("GET", "/ready"), ("GET", "/models"), ("GET", "/metrics"), ("GET", "/result/" + "a" * 32),
                ("POST", "/predict"), ("GET", "/v2/health/ready"), ("GET", "/v2/models/tiny"),
                ("POST", INFER), ("POST", "/v2/repository/index")]


def test_a_redis_that_refuses_the_web_user_gets_one_answer_on_every_route(stack):
    admin = stack.redis.client()
    password_hash = next(rule for rule in admin.acl_getuser("web")["passwords"])
    admin.execute_command("ACL", "SETUSER", "web", "resetpass", ">" + "x" * 40)
    admin.execute_command("CLIENT", "KILL", "USER", "web")
    try:
        for method, path in REDIS_ROUTES:
            if method == "GET":
                answer = requests.get(stack.url + path, headers=key(ALICE), timeout=30)
            elif path == "/predict":
                answer = requests.post(stack.url + path, files={"image": ("a.png", png_bytes(5))}, headers=key(ALICE),
                                       timeout=30)
            else:
                answer = requests.post(stack.url + path, data=infer_body([pixels()]), headers=key(ALICE), timeout=30)
            assert answer.status_code == 503, (path, answer.text)
            assert answer.headers["Retry-After"], path
            assert answer.json()["error"] == "The queue (Redis) is unavailable. Retry shortly.", (path, answer.text)
    finally:
        admin.execute_command("ACL", "SETUSER", "web", "resetpass", "#" + password_hash)
    assert "WRONGPASS" in stack.log("apache") or "invalid username-password" in stack.log("apache")
    deadline = time.monotonic() + 30
    while requests.get(stack.url + "/ready", headers=key(ALICE), timeout=30).status_code != 200:
        assert time.monotonic() < deadline, "the web tier did not come back after Redis let it in again"
        time.sleep(0.5)

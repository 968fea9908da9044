"""Parsing a request body is bounded and counted in the process's decode budget (web.dataplane):
the JSON part is capped from its declared length, and what parsing may build is reserved first."""
from __future__ import annotations

import json
import tracemalloc

import pytest

from keras_rest_api.web.dataplane import JSON_BYTES_PER_BYTE

MIB = 2**20
N = 300_000
# The costliest JSON per byte sent: containers (dicts, lists) and the list slots pointing at them.
HOSTILE_JSON = {
    "empty objects": b'{"inputs":[' + b",".join([b"{}"] * N) + b"]}",
    "empty lists": b'{"inputs":[' + b",".join([b"[]"] * N) + b"]}",
    "nested lists": b"[" + b",".join([b"[[]]"] * N) + b"]",
    "objects in lists": b"[" + b",".join([b"[{}]"] * N) + b"]",
    "objects of lists": b"[" + b",".join([b'{"":[]}'] * N) + b"]",
    "floats": b"[" + b",".join([b"0.5"] * N) + b"]",
    "distinct keys": b"{" + b",".join([b'"%d":{}' % i for i in range(N)]) + b"}",
}


@pytest.mark.parametrize("kind", HOSTILE_JSON)
def test_json_parsing_costs_at_most_the_reserved_bytes_per_byte(kind):
    data = HOSTILE_JSON[kind]
    tracemalloc.start()
    try:
        value = json.loads(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    del value
    assert peak <= JSON_BYTES_PER_BYTE * len(data), f"{kind}: {peak / len(data):.1f} bytes per byte"


def test_json_beyond_the_cap_is_a_413_from_its_declared_length(client, heartbeat_only):
    body = b"{\"inputs\": [" + b"{}," * (2 * MIB) + b"{}]}"  # 6 MiB, over the default 4 MiB
    response = client.post("/v2/models/tiny/infer", data=body, content_type="application/json")
    assert response.status_code == 413
    assert "MAX_JSON_BYTES" in response.get_json()["error"]


def test_parsing_that_would_exceed_the_budget_is_refused_before_it_starts(make_client, heartbeat_only):
    client = make_client(MAX_JSON_BYTES=8 * MIB, DECODE_MEMORY_BUDGET=64 * MIB)
    body = b'{"inputs": [' + b"{}," * (3 * MIB // 3) + b"{}]}"  # 3 MiB of JSON: ~100 MiB once parsed
    response = client.post("/v2/models/tiny/infer", data=body, content_type="application/json")
    assert response.status_code == 413, response.get_data(as_text=True)
    assert "DECODE_MEMORY_BUDGET" in response.get_json()["error"]
    assert client.application.extensions["decode_budget"].in_use == 0

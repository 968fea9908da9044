"""API keys and minimal disclosure, in-process (the Flask app against the real Redis).

The same behaviour through real Apache is in tests/system/test_e2e_secure.py.
"""
from __future__ import annotations

import io
import logging

import pytest

from keras_rest_api.ids import new_request_id
from keras_rest_api.queue.records import Keys, Result
from keras_rest_api.web import auth
from tests.support.web_checks import png_bytes

# The loggers as auth.py names them: its warnings, and one access line per request.
AUTH_LOG = auth.log.name
ACCESS_LOG = auth.access_log.name

OPS_KEY = "ops-" + "a1" * 16
APP_KEY = "app-" + "b2" * 16
KEYS = f"ops:{OPS_KEY}, app:{APP_KEY}"
# Every route with data. GET / without Accept: text/html is the JSON description, like /api.
PROTECTED = [("GET", "/"), ("GET", "/api"), ("GET", "/ready"), ("GET", "/metrics"),
             ("GET", f"/result/{'0' * 32}"), ("POST", "/predict"), ("GET", "/no-such-route"), ("POST", "/"),
             ("GET", "/v2"), ("GET", "/v2/health/ready"), ("GET", "/v2/models/tiny"), ("POST", "/v2/repository/index"),
             ("POST", "/v2/models/tiny/infer"), ("GET", "/models"), ("GET", "/models/tiny"),
             ("POST", "/models/tiny/predict"), ("POST", "/docs")]
# The pages' files: the same for everyone, no data; a browser needs them before it can ask for a key.
PUBLIC_FILES = ["/", "/docs", "/ui/app.js", "/ui/app.css", "/ui/index.html", "/ui/docs.js", "/ui/favicon.svg",
                "/docs/assets/swagger-ui-bundle.js", "/docs/assets/swagger-ui.css", "/openapi.json"]


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture()
def keyed(make_client):
    return make_client(API_KEYS=KEYS)


@pytest.mark.parametrize("method,path", PROTECTED)
def test_every_route_but_liveness_needs_a_key(keyed, heartbeat_only, method, path):
    response = keyed.open(path, method=method)
    assert response.status_code == 401, response.get_data(as_text=True)
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    body = response.get_json()
    assert body["success"] is False and "Authorization: Bearer" in body["error"]


@pytest.mark.parametrize("method,path", PROTECTED)
def test_a_browser_asking_for_html_still_needs_a_key_for_data(keyed, heartbeat_only, method, path):
    response = keyed.open(path, method=method, headers={"Accept": "text/html,*/*;q=0.8"})
    if path == "/" and method == "GET":
        assert response.status_code == 200 and response.mimetype == "text/html"  # the page itself
        return
    assert response.status_code == 401, response.get_data(as_text=True)
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize("path", PUBLIC_FILES)
def test_the_pages_files_need_no_key_and_keep_their_security_headers(keyed, path, caplog):
    caplog.set_level(logging.INFO, logger=ACCESS_LOG)
    response = keyed.get(path, headers={"Accept": "text/html"})
    assert response.status_code == 200, response.get_data(as_text=True)
    assert "WWW-Authenticate" not in response.headers
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
    # Not counted or logged as a rejected client: nobody was asked for a key.
    assert not [r for r in caplog.records if r.name == ACCESS_LOG and "client=rejected" in r.getMessage()]
    response.close()


def test_the_page_has_an_api_key_field_and_sends_the_key_as_a_bearer_header(keyed):
    page = keyed.get("/", headers={"Accept": "text/html"}).get_data(as_text=True)
    assert 'id="api-key"' in page and 'type="password"' in page
    script = keyed.get("/ui/app.js").get_data(as_text=True)
    assert "sessionStorage.setItem" in script and "Bearer ${key}" in script
    assert "localStorage.setItem" not in script  # never kept beyond the tab (the browser test checks it too)


def test_swagger_ui_can_authorize_with_the_bearer_scheme(keyed):
    spec = keyed.get("/openapi.json").get_json()
    assert spec["components"]["securitySchemes"]["apiKey"] == {
        "type": "http", "scheme": "bearer", "description": "Only when the deployment configures API keys."}
    assert {"apiKey": []} in spec["security"]
    for path in ("/health", "/v2/health/live", "/docs", "/openapi.json"):
        assert spec["paths"][path]["get"]["security"] == [], path
    assert "security" not in spec["paths"]["/predict"]["post"]  # the global requirement applies
    assert "persistAuthorization: false" in keyed.get("/ui/docs.js").get_data(as_text=True)


@pytest.mark.parametrize("header", [f"Bearer {OPS_KEY[:-1]}", f"Bearer {OPS_KEY}x", f"Basic {OPS_KEY}",
                                    OPS_KEY, "Bearer ", f"bearer  {APP_KEY[1:]}"])
def test_a_wrong_key_or_scheme_is_a_401(keyed, heartbeat_only, header):
    response = keyed.get("/ready", headers={"Authorization": header})
    assert response.status_code == 401
    assert OPS_KEY not in response.get_data(as_text=True) and APP_KEY not in response.get_data(as_text=True)


def test_liveness_needs_no_key(keyed):
    assert keyed.get("/health").status_code == 200
    assert keyed.get("/v2/health/live").status_code == 200


def test_each_configured_key_is_accepted_and_named_in_the_log_and_metrics(keyed, model_server, caplog):
    caplog.set_level(logging.INFO, logger=ACCESS_LOG)
    for key in (OPS_KEY, APP_KEY):
        assert keyed.get("/ready", headers=bearer(key)).status_code == 200
    assert keyed.get("/ready", headers=bearer("x" * 20)).status_code == 401
    lines = [r.getMessage() for r in caplog.records if r.name == ACCESS_LOG]
    assert any("/ready 200 client=ops" in line for line in lines), lines
    assert any("/ready 200 client=app" in line for line in lines), lines
    assert any("/ready 401 client=rejected" in line for line in lines), lines
    metrics = keyed.get("/metrics", headers={"authorization": f"bearer {APP_KEY}"})  # case-insensitive scheme
    assert metrics.status_code == 200
    text = metrics.get_data(as_text=True)
    assert 'kras_http_requests_by_client_total{client="ops"}' in text
    assert 'kras_http_requests_by_client_total{client="rejected"}' in text
    for key in (OPS_KEY, APP_KEY):
        assert key not in text and not any(key in r.getMessage() for r in caplog.records)


def test_a_key_holder_gets_predictions(keyed, model_server):
    response = keyed.post("/predict", data={"image": (io.BytesIO(png_bytes()), "x.png")},
                          headers=bearer(OPS_KEY))
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json()["success"] is True
    assert response.headers["Cache-Control"] == "no-store"


def test_keys_from_a_file_with_comments(make_client, heartbeat_only, tmp_path):
    path = tmp_path / "keys"
    path.write_text(f"# rotated 2026-11\nops:{OPS_KEY}\n\napp:{APP_KEY}  # the web app\n")
    client = make_client(API_KEYS_FILE=str(path))
    assert client.get("/ready", headers=bearer(APP_KEY)).status_code == 200
    assert client.get("/ready").status_code == 401


@pytest.mark.parametrize("config,message", [
    ({"API_KEYS": "ops"}, "not `name:key`"),
    ({"API_KEYS": "ops:tiny1"}, "shorter than 16"),
    ({"API_KEYS": f"bad name:{OPS_KEY}"}, "not `name:key`"),
    ({"API_KEYS": f"ops:{OPS_KEY},ops:{APP_KEY}"}, "appears twice"),
    ({"API_KEYS": f"ops:{OPS_KEY},app:{OPS_KEY}"}, "two names"),
    ({"API_KEYS": ","}, "no `name:key`"),
    ({"API_KEYS_FILE": "/nonexistent/keys"}, "cannot be read"),
])
def test_unusable_key_settings_fail_at_start_without_showing_a_key(config, message):
    with pytest.raises(auth.ApiKeyError, match=message) as caught:
        auth.ApiKeys.from_config(config)
    assert OPS_KEY not in str(caught.value) and APP_KEY not in str(caught.value) and "tiny1" not in str(caught.value)


def test_identify_names_the_matching_key_only():
    keys = auth.ApiKeys({"ops": OPS_KEY, "app": APP_KEY})
    assert keys.identify(OPS_KEY) == "ops" and keys.identify(APP_KEY) == "app"
    for wrong in ("", OPS_KEY[:-1], OPS_KEY + " ", OPS_KEY.upper(), "\udcff"):
        assert keys.identify(wrong) is None


def test_an_open_api_warns_when_it_listens_beyond_loopback(make_client, caplog):
    caplog.set_level(logging.WARNING, logger=AUTH_LOG)
    make_client(HOST="127.0.0.1")
    assert not [r for r in caplog.records if r.name == AUTH_LOG]
    make_client(HOST="0.0.0.0")
    assert any("API keys are off" in r.getMessage() for r in caplog.records if r.name == AUTH_LOG)
    caplog.clear()
    make_client(HOST="0.0.0.0", API_KEYS=KEYS)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING and r.name == AUTH_LOG]


def test_open_api_answers_carry_security_headers_and_no_challenge(client, heartbeat_only):
    for path in ("/", "/api", "/health", "/ready", "/no-such-route"):
        response = client.get(path)
        assert response.status_code != 401
        assert "WWW-Authenticate" not in response.headers
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["X-Frame-Options"] == "DENY"
        assert response.headers["Referrer-Policy"] == "no-referrer"
        assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
        if path != "/":  # the page's route (web/page.py) sets its own policy
            assert response.headers["Content-Security-Policy"].startswith("default-src 'none'")


def test_a_model_failure_reaches_the_client_without_its_internals(client, web_config, redis_client):
    job_id = new_request_id()
    keys = Keys(web_config["KEY_PREFIX"], web_config["QUEUE_NAME"])
    internal = "ValueError: shape mismatch in /srv/models/x.py; batch id gpu7.example.org:4242#17"
    redis_client.rpush(keys.result(job_id), Result.failure(internal, 500).to_redis())
    response = client.get(f"/result/{job_id}")
    assert response.status_code == 500
    text = response.get_data(as_text=True)
    assert "gpu7" not in text and "ValueError" not in text and "4242" not in text
    assert "request id" in response.get_json()["error"]

"""Every setting is validated when the settings are loaded: a value that cannot be used stops a
program before it starts anything, with a message naming the setting and what it expects."""
from __future__ import annotations

import logging

import pytest

from keras_rest_api import settings, wsgi


def test_the_defaults_are_valid():
    settings.validate(settings.defaults())
    loaded = settings.load({})
    # The automatic (0) web-tier sizes become this machine's figures; everything else is the default.
    assert loaded["WSGI_PROCESSES"] >= 1 and loaded["APACHE_MAX_CLIENTS"] >= 256
    sized = {"WSGI_PROCESSES", "APACHE_MAX_CLIENTS"}
    assert {k: v for k, v in loaded.items() if k not in sized} == {
        k: v for k, v in settings.defaults().items() if k not in sized}


@pytest.mark.parametrize("name, raw, message", [
    ("API_KEYS", "plainkey", r"API_KEYS: entry 1 is not `name:key`"),
    ("API_KEYS", "ops:short", r"API_KEYS: the key named 'ops' is shorter than 16"),
    ("API_KEYS", "ops:" + "k" * 20 + ",ops:" + "j" * 20, r"the name 'ops' appears twice"),
    ("API_KEYS", "ops:" + "k" * 20 + ",app:" + "k" * 20, r"the same key is configured under two names"),
    ("BATCH_SIZE", "0", r"BATCH_SIZE must be above 0 \(default 8\), got 0"),
    ("BATCH_SIZE", "-3", r"BATCH_SIZE must be a finite number >= 0"),
    ("BATCH_SIZE", "eight", r"BATCH_SIZE must be a int \(default 8\), got 'eight'"),
    ("REQUEST_TIMEOUT", "inf", r"REQUEST_TIMEOUT must be a finite number"),
    ("REQUEST_TIMEOUT", "nan", r"REQUEST_TIMEOUT must be a finite number"),
    ("SYNC_WAIT_MS", "-1", r"SYNC_WAIT_MS must be a finite number >= 0"),
    ("PORT", "70000", r"PORT must be a TCP port, 1..65535"),
    ("MAX_INSTANCES", "0", r"MAX_INSTANCES must be above 0"),
    ("FEATURES_BATCH_SIZE", "0", r"FEATURES_BATCH_SIZE must be above 0"),
    ("MAX_JSON_BYTES", "10", r"MAX_JSON_BYTES must be at least 64 \(default 4194304\), got 10"),
    ("LOG_LEVEL", "LOUD", r"LOG_LEVEL must be one of DEBUG, INFO"),
    ("MODEL_PRECISION", "float8", r"MODEL_PRECISION must be one of float32, bfloat16"),
    ("MODEL_PREPROCESSING", "magic", r"MODEL_PREPROCESSING must be one of raw, unit"),
    ("KEY_PREFIX", "a*", r"KEY_PREFIX must be 1-64 letters"),
    ("QUEUE_NAME", "with space", r"QUEUE_NAME must be 1-64 letters"),
    ("REDIS_URL", "http://127.0.0.1:6379", r"REDIS_URL must start with redis://, rediss://, unix://"),
    ("DEFAULT_TOP_K", "50", r"DEFAULT_TOP_K \(50\) must be at most MAX_TOP_K \(20\)"),
    ("HEARTBEAT_INTERVAL", "30", r"HEARTBEAT_INTERVAL \(30.0\) must be below HEARTBEAT_TTL"),
    ("MAX_MODEL_PARAMETERS", "0", r"MAX_MODEL_PARAMETERS must be above 0"),
])
def test_a_setting_that_cannot_be_used_is_named_with_what_it_expects(name, raw, message):
    with pytest.raises(settings.SettingError, match=message):
        settings.load({name: raw})


def test_an_api_key_never_shows_in_the_message():
    with pytest.raises(settings.SettingError) as raised:
        settings.load({"API_KEYS": "ops:secret with spaces in it"})
    assert "secret" not in str(raised.value)


def test_a_huge_value_is_shown_cut():
    with pytest.raises(settings.SettingError) as raised:
        settings.load({"BATCH_SIZE": "x" * 100_000})
    assert len(str(raised.value)) < 200


def test_a_program_does_not_start_on_a_bad_setting(monkeypatch, caplog):
    monkeypatch.setenv("API_KEYS", "plainkey")
    with caplog.at_level(logging.ERROR):
        assert settings.start(logging.getLogger("test")) is None
    assert "cannot start: API_KEYS: entry 1 is not `name:key`" in caplog.text


def test_the_wsgi_app_refuses_to_load_on_a_bad_setting(monkeypatch, caplog):
    monkeypatch.setenv("API_KEYS", "plainkey")
    with caplog.at_level(logging.ERROR), pytest.raises(settings.SettingError, match="API_KEYS"):
        wsgi.load_application()
    assert "refusing to load the web tier: API_KEYS" in caplog.text


def test_the_web_tier_check_names_what_the_app_refuses_and_passes_what_it_accepts(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("API_KEYS_FILE", str(tmp_path / "missing"))
    assert wsgi.check() == 2
    assert f"web tier: cannot start: API_KEYS_FILE '{tmp_path / 'missing'}' cannot be read" in capsys.readouterr().err
    (tmp_path / "keys").write_text("ops:0123456789abcdef0123\n")
    monkeypatch.setenv("API_KEYS_FILE", str(tmp_path / "keys"))
    assert wsgi.check() == 0

"""The pages for people, in a real browser: headless Chromium (Debian's package) driven by
Selenium, through real Apache, Redis and a model-server process.

Screenshots are kept in tests/artifacts/ (git-ignored) for a person to look at.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

from harness import PROJECT, Stack
from imaging import decode_image

pytestmark = pytest.mark.e2e

ARTIFACTS = PROJECT / "tests" / "artifacts"
LABELS = ["cat", "dog", "fish", "bird", "horse"]


@pytest.fixture(scope="module")
def stack(tmp_path_factory, tiny_model_files):
    s = Stack(tmp_path_factory.mktemp("browser"), {**tiny_model_files, "KEY_PREFIX": "browser", "REQUEST_TIMEOUT": 5,
                                                     "WSGI_PROCESSES": 1, "WSGI_THREADS": 8})
    try:
        s.start()
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="module")
def browser():
    binary, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if binary is None or driver is None:
        pytest.fail("chromium and chromium-driver are not installed; run ./test.sh, which installs them")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1100,900",
                     "--disable-gpu"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    chrome = webdriver.Chrome(service=Service(driver), options=options)
    chrome.set_page_load_timeout(30)
    yield chrome
    chrome.quit()


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> Path:
    """scikit-image's `chelsea` (a cat), as the README's examples use."""
    import skimage.data

    path = tmp_path_factory.mktemp("photos") / "chelsea.jpg"
    Image.fromarray(skimage.data.chelsea()).save(path, "JPEG", quality=90)
    return path


def screenshot(browser, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    browser.save_screenshot(str(path))
    return path


def wait(browser, condition, timeout: float = 20):
    return WebDriverWait(browser, timeout).until(condition)


def csp_violations(browser) -> list[str]:
    return [entry["message"] for entry in browser.get_log("browser")
            if "Content Security Policy" in entry["message"] or entry["level"] == "SEVERE"]


def test_a_photo_is_classified_on_the_page(stack, browser, photo, tiny_model):
    browser.get_log("browser")
    browser.get(stack.url + "/")
    wait(browser, expected_conditions.text_to_be_present_in_element((By.ID, "status"), "Choose a photo"))
    assert not browser.find_element(By.ID, "chooser").is_displayed()  # one model: nothing to choose
    browser.find_element(By.ID, "file").send_keys(str(photo))
    wait(browser, expected_conditions.visibility_of_element_located((By.ID, "result")))
    rows = browser.find_elements(By.CSS_SELECTOR, "#predictions li")
    labels = [row.find_element(By.CLASS_NAME, "label").text for row in rows]
    values = [float(row.find_element(By.CLASS_NAME, "value").text.rstrip(" %")) / 100 for row in rows]

    probabilities = tiny_model.predict(decode_image(photo.read_bytes(), (32, 32), 50_000_000)[None])[0]
    top = np.argsort(-probabilities)[:5]
    assert labels == [LABELS[i] for i in top]
    np.testing.assert_allclose(values, probabilities[top], atol=0.0006)  # shown to 0.1 %
    assert browser.find_element(By.ID, "preview").is_displayed()
    assert not browser.find_element(By.ID, "error").is_displayed()
    assert not csp_violations(browser)
    screenshot(browser, "page-result.png")


def test_a_file_that_is_not_an_image_shows_the_services_error(stack, browser, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("shopping list: milk, eggs\n")
    browser.get(stack.url + "/")
    wait(browser, expected_conditions.text_to_be_present_in_element((By.ID, "status"), "Choose a photo"))
    browser.find_element(By.ID, "file").send_keys(str(notes))
    error = wait(browser, expected_conditions.visibility_of_element_located((By.ID, "error")))
    assert "not an image in a supported format" in error.text
    assert not browser.find_element(By.ID, "result").is_displayed()
    screenshot(browser, "page-error.png")


def test_swagger_ui_lists_the_operations(stack, browser):
    browser.get_log("browser")  # only this page's messages count below
    browser.get(stack.url + "/docs")
    wait(browser, lambda b: len(b.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")) > 10)
    paths = {element.text.replace("\u200b", "") for element in browser.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")}
    assert {"/predict", "/v2/models/{model_name}/infer", "/v2/repository/index"} <= paths
    assert not csp_violations(browser)
    screenshot(browser, "docs.png")


def test_pages_carry_security_headers_and_json_clients_still_get_json(stack):
    for path in ("/", "/docs", "/ui/app.js", "/docs/assets/swagger-ui-bundle.js"):
        response = requests.get(stack.url + path, headers={"Accept": "text/html"}, timeout=5)
        assert response.status_code == 200, path
        assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
        assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert "POST /predict" in requests.get(stack.url + "/", timeout=5).json()["endpoints"]
    assert "POST /predict" in requests.get(stack.url + "/api", headers={"Accept": "text/html"}, timeout=5).json()["endpoints"]

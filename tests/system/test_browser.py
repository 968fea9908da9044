"""The pages for people, in a real browser: headless Chromium (Debian's package) driven by
Selenium, through real Apache, Redis and a model-server process.

Screenshots are kept in tests/artifacts/ (git-ignored) for a person to look at.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest
import requests
from PIL import Image
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import Select, WebDriverWait

from keras_rest_api.imaging.decode import decode_image
from keras_rest_api.models import load_model
from keras_rest_api.models import open_repository
from tests.support.features_model import churn_row, write_churn_model
from tests.support.harness import PROJECT, Stack, running_stack

pytestmark = pytest.mark.e2e

ARTIFACTS = PROJECT / "tests" / "artifacts"
LABELS = ["cat", "dog", "fish", "bird", "horse"]
COLOURS = ["red", "green", "blue"]
API_KEY = "page-" + "7e" * 20
# Both models of the two-model repository take 32x32 photos squashed to 0..1 pixels, as the tiny
# model's MODEL_PREPROCESSING=unit does, so load_model(...) below predicts what the page should show.
REPOSITORY_CONFIG = """{
  "input": {"height": 32, "width": 32},
  "preprocessing": {"resize": "squash", "interpolation": "bilinear", "normalization": "unit"},
  "labels": "labels.txt",
  "batching": {"max_batch_size": 4, "max_wait_ms": 0}
}
"""
SETTINGS = {"REQUEST_TIMEOUT": 5, "WSGI_PROCESSES": 1, "WSGI_THREADS": 8}


def running(workdir: Path, settings: dict[str, object]) -> Iterator[Stack]:
    with running_stack(workdir, {**SETTINGS, **settings}) as started:
        yield started


@pytest.fixture(scope="module")
def stack(tmp_path_factory, tiny_model_files):
    yield from running(tmp_path_factory.mktemp("browser"), {**tiny_model_files, "KEY_PREFIX": "browser"})


@pytest.fixture(scope="module")
def colours_model_files(tmp_path_factory) -> dict[str, str]:
    """A second small Keras classifier (32x32 RGB, 3 classes) with its own labels."""
    import keras

    directory = tmp_path_factory.mktemp("colours_model")
    keras.utils.set_random_seed(11)
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(4, 3, strides=2, activation="relu")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(3, activation="softmax", kernel_initializer=keras.initializers.RandomNormal(stddev=2.0))(x)
    path = directory / "colours.keras"
    keras.Model(inputs, outputs).save(path)
    labels = directory / "labels.txt"
    labels.write_text("\n".join(COLOURS) + "\n")
    return {"MODEL": str(path), "MODEL_LABELS": str(labels), "MODEL_PREPROCESSING": "unit"}


@pytest.fixture(scope="module")
def two_models_stack(tmp_path_factory, tiny_model_files, colours_model_files):
    """A model repository with two models, `tiny` (the default) and `colours`, one version each."""
    root = tmp_path_factory.mktemp("two-models") / "repository"
    for name, files in (("tiny", tiny_model_files), ("colours", colours_model_files)):
        (root / name / "1").mkdir(parents=True)
        shutil.copy(files["MODEL"], root / name / "1" / "model.keras")
        shutil.copy(files["MODEL_LABELS"], root / name / "labels.txt")
        (root / name / "config.json").write_text(REPOSITORY_CONFIG)
    root.chmod(0o755)
    yield from running(root.parent, {"MODEL_REPOSITORY": str(root), "MODEL": "tiny,colours",
                                     "DEFAULT_MODEL": "tiny", "KEY_PREFIX": "browser2"})


@pytest.fixture(scope="module")
def features_repository(tmp_path_factory, tiny_model_files) -> Path:
    """A repository of an image model, `tiny` (the default), and a features model, `churn`."""
    root = tmp_path_factory.mktemp("features-page") / "repository"
    (root / "tiny" / "1").mkdir(parents=True)
    shutil.copy(tiny_model_files["MODEL"], root / "tiny" / "1" / "model.keras")
    shutil.copy(tiny_model_files["MODEL_LABELS"], root / "tiny" / "labels.txt")
    (root / "tiny" / "config.json").write_text(REPOSITORY_CONFIG)
    write_churn_model(root)
    for path in [root, *root.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return root


@pytest.fixture(scope="module")
def features_stack(features_repository):
    yield from running(features_repository.parent, {"MODEL_REPOSITORY": str(features_repository),
                                                    "MODEL": "tiny,churn", "DEFAULT_MODEL": "tiny",
                                                    "KEY_PREFIX": "browser4"})


@pytest.fixture(scope="module")
def keyed_stack(tmp_path_factory, tiny_model_files):
    yield from running(tmp_path_factory.mktemp("browser-keyed"),
                       {**tiny_model_files, "KEY_PREFIX": "browser3", "API_KEYS": f"person:{API_KEY}"})


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


def shown_predictions(browser) -> tuple[list[str], list[float]]:
    """The result's labels and probabilities, once the page shows a result."""
    wait(browser, expected_conditions.visibility_of_element_located((By.ID, "result")))
    rows = browser.find_elements(By.CSS_SELECTOR, "#predictions li")
    labels = [row.find_element(By.CLASS_NAME, "label").text for row in rows]
    values = [float(row.find_element(By.CLASS_NAME, "value").text.rstrip(" %")) / 100 for row in rows]
    return labels, values


def assert_shows_prediction_of(browser, model, labels: list[str], photo: Path) -> None:
    shown, values = shown_predictions(browser)
    probabilities = model.predict(decode_image(photo.read_bytes(), (32, 32), 50_000_000)[None])[0]
    top = np.argsort(-probabilities)[:5]
    assert shown == [labels[i] for i in top]
    np.testing.assert_allclose(values, probabilities[top], atol=0.0006)  # shown to 0.1 %


def test_a_photo_is_classified_on_the_page(stack, browser, photo, tiny_model):
    browser.get_log("browser")
    browser.get(stack.url + "/")
    wait(browser, expected_conditions.text_to_be_present_in_element((By.ID, "status"), "Choose a photo"))
    assert not browser.find_element(By.ID, "chooser").is_displayed()  # one model: nothing to choose
    assert not browser.find_element(By.ID, "key-form").is_displayed()  # an open service asks for no key
    browser.find_element(By.ID, "file").send_keys(str(photo))
    assert_shows_prediction_of(browser, tiny_model, LABELS, photo)
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


def test_with_two_models_the_chosen_model_classifies_the_photo(two_models_stack, browser, photo, tiny_model,
                                                                colours_model_files):
    browser.get_log("browser")
    browser.get(two_models_stack.url + "/")
    wait(browser, expected_conditions.text_to_be_present_in_element((By.ID, "status"), "Choose a photo"))
    assert browser.find_element(By.ID, "chooser").is_displayed()
    chooser = Select(browser.find_element(By.ID, "model"))
    assert sorted(option.text for option in chooser.options) == ["colours (version 1)", "tiny (version 1)"]

    chooser.select_by_visible_text("tiny (version 1)")
    browser.find_element(By.ID, "file").send_keys(str(photo))
    assert_shows_prediction_of(browser, tiny_model, LABELS, photo)
    assert browser.find_element(By.ID, "model-used").text == "tiny v1"

    chooser.select_by_visible_text("colours (version 1)")
    browser.execute_script("document.getElementById('result').hidden = true;")  # so the wait below sees the new one
    browser.find_element(By.ID, "file").clear()
    browser.find_element(By.ID, "file").send_keys(str(photo))
    wait(browser, expected_conditions.text_to_be_present_in_element((By.ID, "model-used"), "colours v1"))
    assert_shows_prediction_of(browser, load_model(colours_model_files), COLOURS, photo)
    assert not browser.find_element(By.ID, "error").is_displayed()
    assert not csp_violations(browser)
    screenshot(browser, "page-two-models.png")


def test_with_api_keys_the_page_asks_for_the_key_and_keeps_it_in_the_tab_only(keyed_stack, browser, photo,
                                                                                tiny_model):
    browser.get_log("browser")
    browser.get(keyed_stack.url + "/")  # the page's own files need no key
    wait(browser, expected_conditions.text_to_be_present_in_element((By.ID, "status"), "needs an API key"))
    assert browser.find_element(By.ID, "key-form").is_displayed()
    assert not browser.find_element(By.ID, "error").is_displayed()
    field = browser.find_element(By.ID, "api-key")
    assert browser.switch_to.active_element == field

    field.send_keys("wrong-" + "0" * 20, Keys.ENTER)
    error = wait(browser, expected_conditions.visibility_of_element_located((By.ID, "error")))
    assert "The API key is not valid" in error.text  # the service's own error text
    screenshot(browser, "page-wrong-key.png")

    field.send_keys(API_KEY, Keys.ENTER)
    wait(browser, expected_conditions.text_to_be_present_in_element((By.ID, "status"), "Choose a photo"))
    assert not browser.find_element(By.ID, "error").is_displayed()
    assert not browser.find_element(By.ID, "key-form").is_displayed()
    browser.find_element(By.ID, "file").send_keys(str(photo))
    assert_shows_prediction_of(browser, tiny_model, LABELS, photo)
    screenshot(browser, "page-with-key.png")

    assert browser.execute_script("return sessionStorage.getItem('api-key')") == API_KEY
    assert browser.execute_script("return localStorage.length") == 0
    assert API_KEY not in browser.current_url and not browser.get_cookies()
    assert field.get_attribute("value") == ""
    # Only SEVERE entries: the two 401 answers above are logged as failed resource loads.
    assert not [m for m in csp_violations(browser) if "401" not in m]

    # The key lasts for the tab: a reload classifies without asking again.
    browser.refresh()
    wait(browser, expected_conditions.text_to_be_present_in_element((By.ID, "status"), "Choose a photo"))
    assert not browser.find_element(By.ID, "key-form").is_displayed()


def execute_get_models(browser) -> tuple[str, Any, Any]:
    """Try out GET /models in Swagger UI: (the status shown, the operation, its status cell)."""
    operation = browser.find_element(By.ID, "operations-default-get_models")
    operation.find_element(By.CSS_SELECTOR, ".opblock-summary").click()
    wait(browser, lambda b: operation.find_elements(By.CSS_SELECTOR, ".try-out__btn"))[0].click()
    wait(browser, lambda b: operation.find_elements(By.CSS_SELECTOR, ".execute"))[0].click()
    status = wait(browser, lambda b: operation.find_elements(By.CSS_SELECTOR, ".live-responses-table tbody .response-col_status"))
    # The cell holds the code, then "Undocumented" for a status the API description does not list.
    return status[0].text.split()[0], operation, status[0]


def test_swagger_ui_authorizes_with_an_api_key(keyed_stack, browser):
    # The control: without authorizing, the same call is refused, so the 200 below is the key's doing.
    browser.get(keyed_stack.url + "/docs")
    wait(browser, lambda b: len(b.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")) > 10)
    unauthorized, operation, _ = execute_get_models(browser)
    assert unauthorized == "401", operation.text

    browser.get(keyed_stack.url + "/docs")
    wait(browser, lambda b: len(b.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")) > 10)
    browser.find_element(By.CSS_SELECTOR, ".auth-wrapper .authorize").click()
    modal = wait(browser, expected_conditions.visibility_of_element_located((By.CSS_SELECTOR, ".auth-container input")))
    modal.send_keys(API_KEY)
    browser.find_element(By.CSS_SELECTOR, ".auth-btn-wrapper .authorize").click()
    browser.find_element(By.CSS_SELECTOR, ".auth-btn-wrapper .btn-done").click()

    status, operation, cell = execute_get_models(browser)
    assert status == "200", operation.text
    assert "tiny" in operation.find_element(By.CSS_SELECTOR, ".live-responses-table tbody .microlight").text
    browser.execute_script("arguments[0].scrollIntoView()", cell)
    screenshot(browser, "docs-authorized.png")


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


def test_a_features_model_gets_a_form_from_its_contract_and_answers_it(features_stack, features_repository, browser):
    browser.get_log("browser")
    browser.get(features_stack.url + "/")
    wait(browser, expected_conditions.text_to_be_present_in_element((By.ID, "status"), "Serving"))
    Select(browser.find_element(By.ID, "model")).select_by_visible_text("tiny (version 1)")
    wait(browser, expected_conditions.text_to_be_present_in_element((By.ID, "status"), "Choose a photo"))
    assert browser.find_element(By.ID, "drop").is_displayed()
    assert not browser.find_element(By.ID, "features-form").is_displayed()
    Select(browser.find_element(By.ID, "model")).select_by_visible_text("churn (version 1)")
    wait(browser, expected_conditions.visibility_of_element_located((By.ID, "features-form")))
    assert not browser.find_element(By.ID, "drop").is_displayed()
    fields = browser.find_elements(By.CSS_SELECTOR, "#fields input, #fields select")
    assert [field.get_attribute("name") for field in fields] == ["age", "income", "region", "plan"]
    assert browser.find_element(By.ID, "feature-age").get_attribute("max") == "120"
    assert [o.text for o in Select(browser.find_element(By.ID, "feature-plan")).options] == ["(choose)", "basic", "gold"]

    # A value out of the declared range: the service's field error is shown.
    browser.find_element(By.ID, "feature-age").send_keys("130")
    Select(browser.find_element(By.ID, "feature-region")).select_by_visible_text("south")
    Select(browser.find_element(By.ID, "feature-plan")).select_by_visible_text("gold")
    browser.find_element(By.ID, "predict").click()
    error = wait(browser, expected_conditions.visibility_of_element_located((By.ID, "error")))
    assert "'age'" in error.text and "outside" in error.text
    assert not csp_violations(browser)[1:]  # the one logged line is that 400 itself

    age = browser.find_element(By.ID, "feature-age")
    age.clear()
    age.send_keys("52")  # income left empty: its default stands in
    browser.find_element(By.ID, "predict").click()
    wait(browser, expected_conditions.visibility_of_element_located((By.ID, "result")))
    labels, values = shown_predictions(browser)
    churn = open_repository({"MODEL_REPOSITORY": str(features_repository), "BATCH_SIZE": 8, "BATCH_WAIT_MS": 0,
                             "FEATURES_BATCH_SIZE": 256, "MODEL_PRECISION": "float32"}).load("churn", "1")
    expected = float(churn.predict(churn_row({"age": 52, "region": "south", "plan": "gold"}))[0, 0])
    assert labels == ["churn"]
    assert values[0] == pytest.approx(expected, abs=0.0006)  # shown to 0.1 %
    assert browser.find_element(By.ID, "model-used").text == "churn v1"
    assert not browser.find_element(By.ID, "error").is_displayed()
    assert not csp_violations(browser)
    screenshot(browser, "page-features.png")

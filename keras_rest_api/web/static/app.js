// The classifier page: lists the served models (model repository index), sends the chosen photo
// to the Open Inference Protocol's infer route as one encoded image in binary form, and shows
// the classification extension's top labels. Nothing here loads from another site.
//
// A features model (its contract, from GET /models/<name>, takes named features) gets a form
// generated from that contract instead: a number field per numeric feature (its range as
// min/max), a list per categorical one; the form posts one JSON instance to the model's
// predict route and shows the probability or the named values it answers.
//
// When the service requires API keys (a call answers 401 with WWW-Authenticate: Bearer), the page
// asks for one and sends it as `Authorization: Bearer` on its calls. The key is kept in
// sessionStorage (this tab, until it is closed): never in the URL, localStorage or a cookie.
"use strict";

const TOP = 5;
const KEY_ITEM = "api-key";
const $ = (id) => document.getElementById(id);
let models = [];
let keyInMemory = "";  // where the key lives when the browser refuses sessionStorage

class KeyRequired extends Error {}

function apiKey() {
  try { return sessionStorage.getItem(KEY_ITEM) || ""; } catch (_) { return keyInMemory; }
}

function keepApiKey(key) {
  keyInMemory = key;
  try { sessionStorage.setItem(KEY_ITEM, key); } catch (_) { /* kept in memory only */ }
}

function askForKey() {
  $("key-form").hidden = false;
  if (document.activeElement !== $("api-key")) $("api-key").focus();
}

// fetch with the key (if any); the JSON answer, or an Error with the service's own error text.
async function call(url, init = {}) {
  const headers = new Headers(init.headers || {});
  const key = apiKey();
  if (key) headers.set("Authorization", `Bearer ${key}`);
  const response = await fetch(url, { ...init, headers, credentials: "omit", cache: "no-store" });
  const challenged = response.status === 401 && /^bearer\b/i.test(response.headers.get("WWW-Authenticate") || "");
  if (challenged) askForKey();
  let body = null;
  try { body = await response.json(); } catch (_) { /* not JSON: say so below */ }
  if (!response.ok) {
    const message = body && body.error ? body.error : `The service answered ${response.status} ${response.statusText}.`;
    throw challenged ? new KeyRequired(message) : new Error(message);
  }
  return body;
}

async function loadModels() {
  hideError();
  try {
    models = await call("/v2/repository/index", { method: "POST", body: JSON.stringify({ ready: true }) });
    $("key-form").hidden = true;  // a key, if one was needed, works
  } catch (error) {
    models = [];
    $("chooser").hidden = true;
    if (error instanceof KeyRequired && !apiKey()) {
      $("status").textContent = "This service needs an API key: type it above.";
      return;
    }
    showError(`Could not list the models: ${error.message}`);  // e.g. the service's "not valid" for a wrong key
    $("status").textContent = error instanceof KeyRequired
      ? "The service did not accept that API key: type a valid one above." : "Could not list the models.";
    return;
  }
  const select = $("model");
  select.replaceChildren(...models.map((model, i) => {
    const option = document.createElement("option");
    option.value = String(i);
    option.textContent = `${model.name} (version ${model.version})`;
    return option;
  }));
  $("chooser").hidden = models.length < 2;
  $("status").textContent = models.length ? serving() : "No model is being served right now: start a model "
    + "server, then reload this page.";
  await showModel();
}

function serving() {
  const next = contract ? "Fill in the features and press Predict." : "Choose a photo.";
  return `Serving ${models.map((m) => `${m.name} v${m.version}`).join(", ")}. ${next}`;
}

let contract = null;  // the chosen model's contract when it takes features, else null

// The chosen model's contract decides the input: the photo drop, or a form of its features.
async function showModel() {
  const model = models[Number($("model").value)];
  contract = null;
  $("result").hidden = true;
  if (model) {
    try {
      const described = await call(`/models/${encodeURIComponent(model.name)}`);
      const version = described.versions.find((v) => v.version === model.version);
      if (version && version.contract.input_kind === "features") contract = version.contract;
    } catch (error) {
      showError(`Could not read the model's contract: ${error.message}`);
    }
  }
  $("drop").hidden = contract !== null;
  $("features-form").hidden = contract === null;
  if (contract) buildForm(contract);
  if (models.length) $("status").textContent = serving();
}

function buildForm(described) {
  $("features-note").textContent = `${described.name} takes ${described.features.length} features; `
    + "fields with a default may be left empty.";
  $("fields").replaceChildren(...described.features.map((feature) => {
    const row = document.createElement("p");
    const label = document.createElement("label");
    label.htmlFor = `feature-${feature.name}`;
    label.textContent = feature.unit ? `${feature.name} (${feature.unit})` : feature.name;
    let input;
    if (feature.type === "categorical") {
      input = document.createElement("select");
      const choices = feature.default === null ? [""].concat(feature.vocabulary) : feature.vocabulary;
      input.append(...choices.map((value) => {
        const option = document.createElement("option");
        option.value = value;
        option.textContent = value || "(choose)";
        option.selected = value === feature.default;
        return option;
      }));
    } else {
      input = document.createElement("input");
      input.type = "number";
      input.step = "any";
      if (feature.low !== null) input.min = String(feature.low);
      if (feature.high !== null) input.max = String(feature.high);
      if (feature.default !== null) input.placeholder = `default ${feature.default}`;
      else if (feature.normalization === "mean_std") input.placeholder = `e.g. ${Number(feature.mean.toFixed(4))}`;
    }
    input.id = `feature-${feature.name}`;
    input.name = feature.name;
    input.dataset.kind = feature.type;
    row.append(label, input);
    return row;
  }));
}

// One JSON instance from the form: empty fields are left out (a default stands in, or the
// service says which required field is missing).
function instance() {
  const values = {};
  for (const input of $("fields").querySelectorAll("input, select")) {
    if (input.value === "") continue;
    values[input.name] = input.dataset.kind === "categorical" ? input.value : Number(input.value);
  }
  return values;
}

async function predictFeatures() {
  hideError();
  $("result").hidden = true;
  const model = models[Number($("model").value)];
  const path = `/models/${encodeURIComponent(model.name)}/versions/${encodeURIComponent(model.version)}/predict`;
  $("status").textContent = `Asking ${model.name}…`;
  try {
    const answer = await call(path, {
      method: "POST", body: JSON.stringify(instance()), headers: { "Content-Type": "application/json" },
    });
    const used = `${answer.model} v${answer.version}`;
    if (answer.predictions.length && "value" in answer.predictions[0]) showValues(answer.predictions, used);
    else showPredictions(answer.predictions.map((p) => `${p.probability}::${p.label}`), used, "Prediction");
    $("status").textContent = "Done.";
  } catch (error) {
    showError(error.message);
    $("status").textContent = "Not predicted: fix the fields the message names.";
  }
}

function showValues(values, modelName) {
  $("predictions").replaceChildren(...values.map((item) => {
    const li = document.createElement("li");
    const name = document.createElement("span");
    name.className = "label";
    name.textContent = item.name;
    const value = document.createElement("span");
    value.className = "value";
    value.textContent = `${Number(item.value.toPrecision(6))} ${item.unit}`.trim();
    li.append(name, value);
    return li;
  }));
  $("result-title").textContent = "Predicted values";
  $("model-used").textContent = modelName;
  $("result").hidden = false;
}

function modelPath(model) {
  return `/v2/models/${encodeURIComponent(model.name)}/versions/${encodeURIComponent(model.version)}`;
}

// The JSON inference header, then the BYTES tensor: a 4-byte little-endian length and the file.
function inferBody(fileBytes, classes) {
  const header = new TextEncoder().encode(JSON.stringify({
    inputs: [{ name: "image", shape: [1], datatype: "BYTES", parameters: { binary_data_size: 4 + fileBytes.byteLength } }],
    outputs: [{ name: "probabilities", parameters: { classification: classes, binary_data: false } }],
  }));
  const body = new Uint8Array(header.byteLength + 4 + fileBytes.byteLength);
  body.set(header, 0);
  new DataView(body.buffer).setUint32(header.byteLength, fileBytes.byteLength, true);
  body.set(new Uint8Array(fileBytes), header.byteLength + 4);
  return { body, headerLength: header.byteLength };
}

async function classify(file) {
  hideError();
  $("result").hidden = true;
  const model = models[Number($("model").value)];
  if (!model) { showError("No model is being served right now."); return; }
  $("status").textContent = `Classifying ${file.name} with ${model.name}…`;
  try {
    const metadata = await call(modelPath(model));
    const classes = Math.min(TOP, metadata.outputs[0].shape[1]);
    const { body, headerLength } = inferBody(await file.arrayBuffer(), classes);
    const answer = await call(`${modelPath(model)}/infer`, {
      method: "POST", body, headers: { "Inference-Header-Content-Length": String(headerLength) },
    });
    showPredictions(answer.outputs[0].data, `${answer.model_name} v${answer.model_version}`);
    $("status").textContent = `${file.name}: done.`;
  } catch (error) {
    showError(error.message);
    $("status").textContent = `${file.name}: not classified.`;
  }
}

function showPredictions(elements, modelName, title = "Top labels") {
  $("result-title").textContent = title;
  const items = elements.map((element) => {
    // "score:index:label"; a label may itself contain colons.
    const [score, , ...label] = element.split(":");
    const probability = Number(score);
    const li = document.createElement("li");
    const name = document.createElement("span");
    name.className = "label";
    name.textContent = label.join(":");
    name.title = name.textContent;
    const bar = document.createElement("span");
    bar.className = "bar";
    const fill = document.createElement("span");
    fill.style.width = `${Math.max(0, Math.min(100, probability * 100)).toFixed(1)}%`;
    bar.append(fill);
    const value = document.createElement("span");
    value.className = "value";
    value.textContent = `${(probability * 100).toFixed(1)} %`;
    li.append(name, bar, value);
    return li;
  });
  $("predictions").replaceChildren(...items);
  $("model-used").textContent = modelName;
  $("result").hidden = false;
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = false;
}

function hideError() {
  $("error").hidden = true;
}

function preview(file) {
  const image = $("preview");
  if (image.src) URL.revokeObjectURL(image.src);
  image.hidden = !file.type.startsWith("image/");
  if (!image.hidden) image.src = URL.createObjectURL(file);
  image.onerror = () => { image.hidden = true; };
}

function take(file) {
  if (!file) return;
  preview(file);
  classify(file);
}

document.addEventListener("DOMContentLoaded", () => {
  const drop = $("drop");
  $("file").addEventListener("change", (event) => take(event.target.files[0]));
  drop.addEventListener("keydown", (event) => { if (event.key === "Enter" || event.key === " ") $("file").click(); });
  drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    take(event.dataTransfer.files[0]);
  });
  $("model").addEventListener("change", () => showModel());
  $("features-form").addEventListener("submit", (event) => {
    event.preventDefault();  // sent as JSON by fetch, not as a form submission
    predictFeatures();
  });
  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();  // the key never goes into a URL or a form submission
    const key = $("api-key").value.trim();
    if (!key) { showError("Type the API key you were given, then press Enter."); return; }
    keepApiKey(key);
    $("api-key").value = "";
    loadModels();
  });
  loadModels();
});

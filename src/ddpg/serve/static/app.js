// ddpg serve's page: pick an image and settings from /v1/models, submit a job (POST /v1/jobs), follow its
// Server-Sent Events with fetch() (EventSource cannot send the Authorization header), then show the result
// beside the observation it started from (or the clean upload) with the sidecar's metrics and a download link.
// Plain JS, no build step, no network beyond this server. The API is described in docs/jobs.md.
"use strict";

const $ = (id) => document.getElementById(id);
const FORM_FIELDS = ["image", "token", "task", "method", "sigma_y", "steps", "seed", "observed"];
const FINAL_STATES = ["done", "failed", "cancelled"];
const TOKEN_KEY = "ddpg-token";

const page = {
  token: sessionStorage.getItem(TOKEN_KEY) || "",
  model: null, // the first entry of /v1/models
  file: null, // the chosen image
  sent: null, // the image of the job followed (another may be chosen meanwhile)
  job: null, // the job followed: its id and urls
  every: 1, // its step events: every K-th step
  final: false, // whether the job followed has ended
  stream: null, // AbortController of its event stream
  poll: null, // timer of the queue-position poll
  urls: [], // object URLs to revoke when a new job starts
  before: null, // what the comparison can show left of its line: {observed: {url, size}, original, clean, task}
};

// ---- the server ----------------------------------------------------------------------------------------

function api(path, options = {}) {
  const headers = { ...(options.headers || {}) };
  if (page.token) headers.Authorization = `Bearer ${page.token}`;
  return fetch(path, { ...options, headers });
}

// A refusal's {error, field}: a 401 is about the token field, a 429 says when to retry.
async function errorBody(response) {
  let body = { error: `the server answered ${response.status} ${response.statusText}` };
  try {
    const answer = await response.json();
    if (answer && typeof answer.error === "string") body = answer;
  } catch (_) { /* not JSON: the status line says it */ }
  if (response.status === 401 && !body.field) body = { ...body, field: "token" };
  const retry = response.headers.get("Retry-After");
  if (response.status === 429 && retry) body = { ...body, error: `${body.error} (try again in ${retry} s)` };
  return body;
}

function jobUrl(name) {
  const urls = page.job.urls || {};
  const base = `/v1/jobs/${encodeURIComponent(page.job.id)}`;
  return urls[name] || (name === "self" ? base : `${base}/${name}`);
}

// Server-Sent Events from a fetch() response: yields {name, data} with data parsed as JSON.
async function* serverEvents(response) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer = (buffer + value).replace(/\r\n|\r(?=[\s\S])/g, "\n"); // a lone \r at the end waits for its \n
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const event = parseEvent(buffer.slice(0, end));
        buffer = buffer.slice(end + 2);
        if (event) yield event;
      }
    }
  } finally {
    reader.cancel().catch(() => {});
  }
}

function parseEvent(block) {
  let name = "message";
  const data = [];
  for (const line of block.split("\n")) {
    if (!line || line.startsWith(":")) continue; // a comment: the keep-alive
    const colon = line.indexOf(":");
    const key = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
    if (key === "event") name = value;
    else if (key === "data") data.push(value);
  }
  return data.length ? { name, data: JSON.parse(data.join("\n")) } : null;
}

// ---- messages beside fields ------------------------------------------------------------------------------

function clearErrors() {
  for (const field of [...FORM_FIELDS, "general"]) {
    $(`error-${field}`).textContent = "";
    if (field !== "general") $(field).removeAttribute("aria-invalid");
  }
}

// An error body {error, field}: its message beside the field it names, or above the buttons.
function showError(body) {
  const field = FORM_FIELDS.includes(body.field) ? body.field : "general";
  const named = body.field && field === "general" ? `${body.field}: ` : "";
  $(`error-${field}`).textContent = named + body.error;
  if (field === "token") $("token-row").hidden = false;
  if (field !== "general") {
    $(field).setAttribute("aria-invalid", "true");
    $(field).focus();
  }
}

function setInfo(text) {
  $("server-info").textContent = text;
}

// ---- the form --------------------------------------------------------------------------------------------

function fillSelect(select, names, chosen) {
  select.replaceChildren(...names.map((name) => new Option(name, name, false, name === chosen)));
}

// The methods the server restores the chosen task with (`method_tasks`; without it, every method).
function methodsFor(task) {
  const byMethod = page.model.method_tasks || {};
  return page.model.methods.filter((method) => !byMethod[method] || byMethod[method].includes(task));
}

function onTaskChange() {
  const allowed = methodsFor($("task").value);
  for (const option of $("method").options) option.disabled = !allowed.includes(option.value);
  if (!allowed.includes($("method").value) && allowed.length) $("method").value = allowed[0];
  showDefaults();
}

// The σ_y and steps the server resolves for the chosen method and task, shown as the empty fields' placeholders.
function showDefaults() {
  const defaults = ((page.model.defaults || {})[$("method").value] || {})[$("task").value] || {};
  for (const name of ["sigma_y", "steps"]) {
    const value = defaults[name];
    $(name).placeholder = value === undefined || value === null ? "" : String(value);
  }
}

async function loadModels() {
  let response;
  try {
    response = await api("/v1/models");
  } catch (err) {
    setInfo(`Cannot reach the server (${err.message}).`);
    return false;
  }
  if (response.status === 401) {
    $("token-row").hidden = false;
    setInfo("This server needs an access token: type it below.");
    if (page.token) showError(await errorBody(response));  // a token was given: the wrong one
    return false;
  }
  if (!response.ok) {
    setInfo(`The server's model list failed: ${(await errorBody(response)).error}`);
    return false;
  }
  const body = await response.json();
  page.model = body.models[0];
  if (page.model.token_required) $("token-row").hidden = false;
  const task = $("task").value;
  fillSelect($("task"), page.model.tasks, task || page.model.tasks[0]);
  fillSelect($("method"), page.model.methods, $("method").value || page.model.methods[0]);
  onTaskChange();
  const size = page.model.image_size ? ` (${page.model.image_size} px)` : "";
  const limits = page.model.limits || {};
  const most = limits.max_pixels ? ` Images up to ${limits.max_pixels.toLocaleString("en")} pixels` +
    (limits.max_body_bytes ? ` and ${(limits.max_body_bytes / 2 ** 20).toFixed(0)} MiB.` : ".") : "";
  setInfo(`Prior ${page.model.prior}${size} on ${page.model.device || "the server"}.${most}`);
  $("error-token").textContent = "";
  $("token").removeAttribute("aria-invalid");
  return true;
}

function onTokenChange() {
  page.token = $("token").value.trim();
  if (page.token) sessionStorage.setItem(TOKEN_KEY, page.token);
  else sessionStorage.removeItem(TOKEN_KEY);
  loadModels();
}

function pickFile(file) {
  if (!file) return;
  page.file = file;
  const picked = $("picked");
  URL.revokeObjectURL(picked.src);
  picked.src = URL.createObjectURL(file);
  picked.alt = `Chosen: ${file.name}`;
  picked.hidden = false;
  $("drop-text").textContent = `${file.name} (${Math.ceil(file.size / 1024)} KB): drop or choose another`;
  $("error-image").textContent = "";
  $("image").removeAttribute("aria-invalid");
}

function wireDropZone() {
  const zone = $("drop-zone");
  zone.addEventListener("dragover", (event) => {
    event.preventDefault();
    zone.classList.add("dragging");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("dragging"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("dragging");
    pickFile(event.dataTransfer.files[0]);
  });
  $("image").addEventListener("change", () => pickFile($("image").files[0]));
}

function formBody() {
  const body = new FormData();
  body.append("image", page.file, page.file.name);
  for (const name of ["task", "method", "sigma_y", "steps", "seed"]) {
    const value = $(name).value.trim();
    if (value !== "") body.append(name, value);
  }
  if ($("observed").checked) body.append("observed", "true");
  return body;
}

// ---- a job -----------------------------------------------------------------------------------------------

async function submit(event) {
  event.preventDefault();
  clearErrors();
  if (!page.model && !(await loadModels())) {
    showError({ field: page.token ? "general" : "token", error: "the server's settings could not be loaded" });
    return;
  }
  if (!page.file) {
    showError({ field: "image", error: "choose an image first" });
    return;
  }
  setBusy(true);
  let response;
  try {
    response = await api("/v1/jobs", { method: "POST", body: formBody() });
  } catch (err) {
    showError({ error: `could not reach the server (${err.message})` });
    setBusy(false);
    return;
  }
  if (response.status !== 202) {
    showError(await errorBody(response));
    setBusy(false);
    return;
  }
  page.every = eventEvery();
  page.sent = page.file;
  follow(await response.json());
}

function setBusy(busy) {
  $("submit").disabled = busy;
  $("cancel").disabled = !busy;
}

function resetJobView() {
  for (const url of page.urls) URL.revokeObjectURL(url);
  page.urls = [];
  $("result").hidden = true;
  $("preview-figure").hidden = true;
  $("progress").value = 0;
  $("job").hidden = false;
}

async function follow(job) {
  resetJobView();
  page.job = job;
  page.final = false;
  page.stream = new AbortController();
  applyStatus(job);
  for (let attempt = 0; attempt < 5 && !page.final; attempt++) {
    try {
      await readEvents(page.stream.signal);
    } catch (err) {
      if (page.stream.signal.aborted) return;
    }
    if (!page.final) await new Promise((resolve) => setTimeout(resolve, 500 * (attempt + 1)));
  }
  if (!page.final) {
    finish();
    showError({ error: `lost the connection to the server while following job ${job.id}` });
  }
}

// A step event (with its preview) every K-th step: about 50 in all, whatever the number of steps.
function eventEvery() {
  const steps = Number($("steps").value || $("steps").placeholder) || 1;
  return Math.max(1, Math.floor(steps / 50));
}

async function readEvents(signal) {
  const url = `${jobUrl("events")}?every=${page.every}&preview=1`;
  const response = await api(url, { signal, headers: { Accept: "text/event-stream" } });
  if (!response.ok) {
    finish();
    showError(await errorBody(response));
    return;
  }
  for await (const event of serverEvents(response)) {
    await onEvent(event);
    if (page.final) break;
  }
}

async function onEvent({ name, data }) {
  if (name === "status") applyStatus(data);
  else if (name === "step") applyStep(data);
  else if (FINAL_STATES.includes(name)) {
    applyStatus(data);
    finish();
    if (name === "done") await showResult(data);
    if (name === "failed" && data.error) showError(data.error);
  }
}

function applyStatus(status) {
  const view = $("job-state");
  view.dataset.jobId = status.id;
  view.dataset.state = status.state;
  if (status.steps) $("progress").max = status.steps;
  if (typeof status.step === "number") $("progress").value = status.step;
  view.textContent = describe(status);
  clearInterval(page.poll);
  if (status.state === "queued") page.poll = setInterval(pollStatus, 1000); // the position moves unannounced
}

function describe(status) {
  const total = status.timings && status.timings.total_s;
  switch (status.state) {
    case "queued": return `Queued: position ${status.position ?? "?"} in the queue.`;
    case "running": return `Running: step ${status.step ?? 0} of ${status.steps ?? "?"}.`;
    case "done": return `Done${typeof total === "number" ? ` in ${total.toFixed(1)} s` : ""}.`;
    case "failed": return "Failed: see the message above.";
    case "cancelled": return "Cancelled.";
    default: return status.state;
  }
}

async function pollStatus() {
  if (page.final || !page.job) return clearInterval(page.poll);
  try {
    const response = await api(jobUrl("self"));
    if (response.ok && !page.final) {
      const status = await response.json();
      if (status.state === "queued") $("job-state").textContent = describe(status);
      else clearInterval(page.poll);
    }
  } catch (_) { /* the event stream reports a lost server */ }
}

function applyStep(data) {
  const view = $("job-state");
  view.dataset.state = "running";
  view.textContent = describe({ state: "running", step: data.step, steps: data.steps });
  $("progress").max = data.steps;
  $("progress").value = data.step;
  clearInterval(page.poll);
  if (data.preview) {
    $("preview").src = `data:image/png;base64,${data.preview}`;
    $("preview-figure").hidden = false;
  }
}

function finish() {
  page.final = true;
  clearInterval(page.poll);
  setBusy(false);
}

async function cancel() {
  if (!page.job || page.final) return;
  $("cancel").disabled = true;
  let response;
  try {
    response = await api(jobUrl("self"), { method: "DELETE" });
  } catch (err) {
    showError({ error: `could not reach the server to cancel (${err.message})` });
    $("cancel").disabled = false;
    return;
  }
  if (!response.ok) {
    showError(await errorBody(response));
    $("cancel").disabled = false;
    return;
  }
  const status = await response.json();
  if (status.state === "cancelled" && !page.final) {
    applyStatus(status);
    finish();
    page.stream.abort();
  }
}

// ---- the result ------------------------------------------------------------------------------------------

function pngUrl(base64) {
  const bytes = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
  const url = URL.createObjectURL(new Blob([bytes], { type: "image/png" }));
  page.urls.push(url);
  return url;
}

// The (width, height) a base64 PNG's header gives (bytes 16 to 23).
function pngSize(base64) {
  const bytes = Uint8Array.from(atob(base64.slice(0, 32)), (c) => c.charCodeAt(0));
  const view = new DataView(bytes.buffer);
  return [view.getUint32(16), view.getUint32(20)];
}

async function showResult(status) {
  const response = await api(`${jobUrl("result")}?format=json`);
  if (!response.ok) {
    showError(await errorBody(response));
    return;
  }
  const { png, sidecar, observed } = await response.json();
  const restored = pngUrl(png);
  const clean = !(sidecar.settings && sidecar.settings.observed);
  let original = null;
  if (clean) {
    original = URL.createObjectURL(page.sent);
    page.urls.push(original);
  }
  const observedSize = observed ? pngSize(observed) : null;
  page.before = {
    observed: observed ? {
      url: pngUrl(observed), size: observedSize,
      placement: observedPlacement(sidecar.operator, observedSize, pngSize(png)),
    } : null,
    original,
    clean,
    task: sidecar.task,
  };
  $("choice-observed").hidden = !page.before.observed;
  $("choice-original").hidden = !original;
  $("after").src = restored;
  showBefore(page.before.observed ? "observed" : "original");
  const stem = page.sent.name.replace(/\.[^.]*$/, "") || "image";
  $("download").href = restored;
  $("download").download = `${stem}_restored.png`;
  showMetrics(sidecar, status);
  $("result").hidden = false;
  $("download").focus();
}

// Where the observation lies over the restored image (both fill the square box as CSS "contain" would): each
// observed pixel measured scale×scale image pixels, so when a side of the image is not a multiple of the scale the
// last observed row or column reaches past its edge. The observation is then drawn that much larger and clipped
// at the image's edge, every pixel over the pixels it measured; null when it covers the image exactly.
function observedPlacement(operator, observedSize, restoredSize) {
  const scale = (operator && operator.scale) || 1;
  const [width, height] = restoredSize;
  const [coveredWidth, coveredHeight] = [observedSize[0] * scale, observedSize[1] * scale];
  if (coveredWidth === width && coveredHeight === height) return null;
  const k = 1 / Math.max(width, height); // the restored image spans k·width by k·height of the box
  const percent = (fraction) => `${(fraction * 100).toFixed(4)}%`;
  return {
    left: percent((1 - k * width) / 2), top: percent((1 - k * height) / 2),
    width: percent(k * coveredWidth), height: percent(k * coveredHeight), objectFit: "fill",
    clipPath: `inset(0 ${percent(1 - width / coveredWidth)} ${percent(1 - height / coveredHeight)} 0)`,
  };
}

const UNPLACED = { left: "", top: "", width: "", height: "", objectFit: "", clipPath: "" };

// The comparison's left side: the observation the restoration started from ("observed"), or the clean upload
// ("original"); the slider's label, the corner tag and the help say which.
function showBefore(name) {
  const before = page.before;
  $(`compare-${name}`).checked = true;
  $("before").src = name === "observed" ? before.observed.url : before.original;
  Object.assign($("before").style, (name === "observed" && before.observed.placement) || UNPLACED);
  $("before").dataset.shows = name;
  $("before-tag").textContent = name;
  $("compare-label").textContent = `${name === "observed" ? "Observed" : "Original"} ◀ ▶ restored`;
  let left;
  if (name === "original") {
    left = `your upload, the clean image the server degraded (${before.task}) before restoring it and measured ` +
      "the metrics against";
  } else {
    const [width, height] = before.observed.size;
    left = `the observation the restoration started from (${width}×${height} pixels, enlarged with square ` +
      `pixels): ${before.clean ? `the ${before.task} degradation the server made of your upload` : "your upload"}`;
  }
  $("before").alt = `Before: ${left}`;
  $("compare-help").textContent = `Left of the line: ${left}; right of it: the restoration. The slider (arrow ` +
    "keys work) moves the line.";
}

function showMetrics(sidecar, status) {
  const rows = [];
  for (const [name, value] of Object.entries(sidecar.metrics || {})) rows.push([name, value]);
  rows.push(["task", sidecar.task], ["method", sidecar.method], ["σ_y", sidecar.sigma_y],
    ["steps", sidecar.steps], ["seed", sidecar.seed]);
  const total = status.timings && status.timings.total_s;
  if (typeof total === "number") rows.push(["seconds in all", total.toFixed(2)]);
  $("metrics").replaceChildren(...rows.flatMap(([name, value]) => {
    const dt = document.createElement("dt");
    const dd = document.createElement("dd");
    dt.textContent = name;
    dd.textContent = typeof value === "number" && !Number.isInteger(value) ? value.toFixed(4) : String(value);
    return [dt, dd];
  }));
}

function wireCompare() {
  const slider = $("compare-slider");
  const move = () => $("compare").style.setProperty("--pos", `${slider.value}%`);
  slider.addEventListener("input", move);
  move();
  for (const choice of document.querySelectorAll('input[name="compare-with"]')) {
    choice.addEventListener("change", () => showBefore(choice.value));
  }
}

// ---- start -----------------------------------------------------------------------------------------------

function start() {
  $("token").value = page.token;
  $("token").addEventListener("change", onTokenChange);
  $("task").addEventListener("change", onTaskChange);
  $("method").addEventListener("change", showDefaults);
  $("restore-form").addEventListener("submit", submit);
  $("cancel").addEventListener("click", cancel);
  wireDropZone();
  wireCompare();
  loadModels();
}

start();

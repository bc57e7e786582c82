// lucidmt web page: plain JavaScript, no build step, nothing loaded from elsewhere.
// Talks to /v1/info, /v1/translate and /v1/explain; draws every matrix listed in an explain answer's `heatmaps`
// (rows: target words, columns: source words; attention, and attributions when asked for) and outlines the
// word alignment (`alignments`: Pharaoh pairs [source word, target word]).
"use strict";

const $ = (id) => document.getElementById(id);
const form = $("form"), source = $("source"), beam = $("beam"), toggle = $("show-explain");
const attributions = $("with-attributions");
const button = $("translate"), statusBox = $("status"), output = $("output"), timing = $("timing");
const explainSection = $("explain"), explanations = $("explanations"), keyInput = $("api-key");
const MAX_EXPLAIN = 10; // sentences explained per click; each is one /v1/explain request (batched by the server)

keyInput.value = sessionStorage.getItem("lucidmt-api-key") || "";
keyInput.addEventListener("change", () => {
  sessionStorage.setItem("lucidmt-api-key", keyInput.value);
  loadInfo();
});

class ApiError extends Error {
  constructor(status, body, retryAfter) {
    super(body && body.message ? body.message : `HTTP ${status}`);
    this.status = status;
    this.kind = body && body.error;
    this.retryAfter = retryAfter;
  }
}

async function api(path, body) {
  const headers = { Accept: "application/json" };
  if (keyInput.value) headers.Authorization = "Bearer " + keyInput.value;
  const init = { method: body === undefined ? "GET" : "POST", headers };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (err) {
    throw new ApiError(0, { error: "network", message: "cannot reach the translation service" });
  }
  let data = null;
  try {
    data = await response.json();
  } catch (err) {
    data = null;
  }
  if (!response.ok) throw new ApiError(response.status, data, response.headers.get("Retry-After"));
  return data;
}

function showStatus(message, kind) {
  statusBox.textContent = message;
  statusBox.dataset.kind = kind || "error";
  statusBox.hidden = false;
}

function clearStatus() {
  statusBox.hidden = true;
  statusBox.textContent = "";
}

function explainError(err) {
  const wait = err.retryAfter ? ` Please try again in ${err.retryAfter} s.` : " Please try again shortly.";
  switch (err.status) {
    case 0:
      return ["Cannot reach the translation service. Is the server running?", "error"];
    case 401:
      $("settings").open = true;
      return ["This server needs an API key: enter it under “API key”, then translate again.", "error"];
    case 413:
      return ["The text is too long for this server (" + err.message + "). Shorten it or split it.", "error"];
    case 422:
      return ["The server could not accept this request: " + err.message, "error"];
    case 503:
      if (err.kind === "timeout") return ["The server is overloaded and did not answer in time." + wait, "busy"];
      return ["The server is busy (its queue is full)." + wait, "busy"];
    default:
      return [`The server failed (HTTP ${err.status}): ${err.message}`, "error"];
  }
}

async function loadInfo() {
  try {
    const info = await api("/v1/info");
    const params = info.parameters ? `, ${(info.parameters / 1e6).toFixed(info.parameters < 1e6 ? 2 : 1)}M parameters` : "";
    $("model-info").textContent =
      `Model ${info.model}: ${info.source_lang} → ${info.target_lang}${params}, engine ${info.engine}`;
    $("src-lang").textContent = `(${info.source_lang})`;
    $("tgt-lang").textContent = `(${info.target_lang})`;
    source.lang = info.source_lang || "";
    output.lang = info.target_lang || "";
    source.dataset.maxChars = info.limits.max_chars;
    source.dataset.maxTexts = info.limits.max_texts;
    clearStatus();
  } catch (err) {
    $("model-info").textContent = "Model information unavailable.";
    showStatus(...explainError(err));
  }
}

function checkInput(lines) {
  const maxChars = Number(source.dataset.maxChars || Infinity);
  const maxTexts = Number(source.dataset.maxTexts || Infinity);
  if (lines.length > maxTexts) return `At most ${maxTexts} lines per request (you have ${lines.length}).`;
  const long = lines.findIndex((l) => l.length > maxChars);
  if (long >= 0) return `Line ${long + 1} has ${lines[long].length} characters; the limit is ${maxChars}.`;
  return null;
}

// -- drawing -------------------------------------------------------------------------------------------------
function confidenceColour(p) {
  // red (0) -> yellow (0.5) -> green (1), light enough for dark text
  const hue = Math.max(0, Math.min(1, p)) * 120;
  return `hsl(${hue.toFixed(0)}, 75%, 85%)`;
}

function cellColour(v, scale) {
  // blue for weight (or a positive attribution), red for a negative attribution; scale maps the largest to 1
  const a = Math.max(0.03, Math.min(1, Math.abs(v) / scale)).toFixed(3);
  return v < 0 ? `rgba(191, 48, 31, ${a})` : `rgba(31, 95, 191, ${a})`;
}

function el(tag, props, ...children) {
  const node = document.createElement(tag);
  Object.assign(node, props || {});
  for (const c of children) node.append(c);
  return node;
}

function drawTarget(words) {
  const p = el("p", { className: "target" });
  for (const w of words) {
    if (w.text === "</s>") continue;
    const pct = w.confidence == null ? null : Math.round(w.confidence * 100);
    const span = el("span", { className: "word", title: pct == null ? "" : `confidence ${pct}%` }, w.text);
    if (pct != null) {
      span.style.background = confidenceColour(w.confidence);
      span.dataset.confidence = w.confidence.toFixed(4);
      span.append(el("span", { className: "sr-only" }, ` (confidence ${pct}%)`));
    }
    p.append(span, " ");
  }
  return p;
}

function drawHeatmap(map, rows, cols, alignments) {
  const aligned = new Set((alignments || []).map(([s, t]) => `${t},${s}`));
  const largest = Math.max(1e-9, ...map.values.flat().map(Math.abs));
  const scale = map.signed ? largest : 1;
  const table = el("table", { className: "heatmap" });
  table.dataset.name = map.name;
  const unit = map.signed ? "" : " (percent)";
  table.append(el("caption", {}, `${map.name}${unit}: ${map.note}`));
  const head = el("tr", {}, el("th", { scope: "col" }, el("span", { className: "sr-only" }, "target \\ source")));
  for (const c of cols) head.append(el("th", { scope: "col" }, c.text));
  table.append(el("thead", {}, head));
  const body = el("tbody");
  map.values.forEach((row, i) => {
    const tr = el("tr", {}, el("th", { scope: "row" }, rows[i] ? rows[i].text : String(i)));
    row.forEach((v, j) => {
      const shown = map.signed ? (Math.abs(v) < 0.005 ? 0 : v).toFixed(2) : String(Math.round(v * 100));
      const label = `${rows[i] && rows[i].text} → ${cols[j] && cols[j].text}: ${map.signed ? shown : shown + "%"}`;
      const td = el("td", { title: label }, shown);
      td.style.background = cellColour(v, scale);
      if (Math.abs(v) / scale > 0.5) td.classList.add("dark");
      if (aligned.has(`${i},${j}`)) td.classList.add("aligned");
      tr.append(td);
    });
    body.append(tr);
  });
  table.append(body);
  return el("div", { className: "heatmap-wrap" }, table);
}

function drawExplanation(result) {
  const box = el("div", { className: "sentence" });
  box.append(el("p", { className: "source", lang: source.lang }, result.source));
  box.append(drawTarget(result.target_words));
  for (const map of result.heatmaps || []) {
    box.append(drawHeatmap(map, result.target_words, result.source_words, result.alignments));
  }
  if (result.pharaoh) {
    box.append(el("p", { className: "muted alignment" }, `Word alignment (outlined cells): ${result.pharaoh}`));
  }
  return box;
}

function showTranslations(lines) {
  output.replaceChildren(...lines.map((t) => el("p", {}, t)));
}

// -- actions -------------------------------------------------------------------------------------------------
async function translate() {
  const lines = source.value.split("\n").map((l) => l.trim());
  while (lines.length && !lines[lines.length - 1]) lines.pop();
  if (!lines.length) {
    showStatus("Type a sentence to translate.", "error");
    source.focus();
    return;
  }
  const problem = checkInput(lines);
  if (problem) {
    showStatus(problem, "error");
    return;
  }
  clearStatus();
  button.disabled = true;
  output.setAttribute("aria-busy", "true");
  const beamSize = Number(beam.value);
  const started = performance.now();
  try {
    if (toggle.checked) {
      const todo = lines.filter((l) => l).slice(0, MAX_EXPLAIN);
      const methods = attributions.checked ? ["integrated_gradients", "alti"] : [];
      const results = await Promise.all(
        todo.map((text) => api("/v1/explain", { text, beam_size: beamSize, methods })),
      );
      showTranslations(results.map((r) => r.translation));
      explanations.replaceChildren(...results.map(drawExplanation));
      explainSection.hidden = false;
      const more = lines.filter((l) => l).length - todo.length;
      timing.textContent = `${results.length} sentence(s) in ${Math.round(performance.now() - started)} ms` +
        (more > 0 ? ` (the first ${MAX_EXPLAIN} explained; ${more} more not shown)` : "");
    } else {
      const r = await api("/v1/translate", { texts: lines, beam_size: beamSize });
      showTranslations(r.translations);
      explanations.replaceChildren();
      explainSection.hidden = true;
      const batch = r.batch ? `; batched with ${r.batch.requests - 1} other request(s)` : "";
      timing.textContent = `${lines.length} line(s) in ${Math.round(r.elapsed_ms)} ms on the server${batch}`;
    }
  } catch (err) {
    if (!(err instanceof ApiError)) throw err;
    showStatus(...explainError(err));
  } finally {
    button.disabled = false;
    output.setAttribute("aria-busy", "false");
  }
}

form.addEventListener("submit", (event) => {
  event.preventDefault();
  translate();
});
source.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
    event.preventDefault();
    translate();
  }
});
toggle.addEventListener("change", () => {
  attributions.disabled = !toggle.checked;
  if (!toggle.checked) explainSection.hidden = true;
  else if (output.childElementCount) translate();
});
attributions.addEventListener("change", () => {
  if (toggle.checked && output.childElementCount) translate();
});
attributions.disabled = !toggle.checked;

loadInfo();

// The map page of `georag serve`: photos in (chosen or dropped, several at once), each POSTed to
// v1/locate like any client, the answers listed and drawn on the map. Untrusted text (LLM answers, ids,
// server messages) only ever goes into the page as textContent.

import { featureCollection, neighbors } from "./geojson.js";
import { WorldMap, degrees } from "./map.js";

const $ = (id) => document.getElementById(id);
const ID_CHARS = /[^\w.@:+-]/g; // what the server accepts in an id: [\w.@:+-]{1,128}

const state = { info: null, map: null, items: [], selected: null, running: false };
window.georagPage = {
  state,
  markers: () => (state.map ? state.map.describe() : []),
  prediction: () => (state.map ? state.map.prediction() : null),
};

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function photoId(name, n) {
  const clean = name.replace(ID_CHARS, "_").slice(-120);
  return clean || `photo-${n}`;
}

function download(link, name, value, type) {
  if (link.href.startsWith("blob:")) URL.revokeObjectURL(link.href);
  link.href = URL.createObjectURL(new Blob([JSON.stringify(value, null, 1)], { type }));
  link.download = name;
}

function stem(id) {
  return id.replace(/\.[^.]*$/, "") || "result";
}

// The server and its settings.

async function loadInfo() {
  const answer = await fetch("v1/info");
  if (!answer.ok) throw new Error(`v1/info: HTTP ${answer.status}`);
  const info = await answer.json();
  const select = $("strategy");
  for (const name of info.strategies) {
    const option = el("option", "", name);
    option.value = name;
    option.selected = name === info.default_strategy;
    select.append(option);
  }
  const llm = info.llm ? "LLM on" : "no LLM (retrieval only)";
  $("server-info").textContent = `${llm} · ${info.k_near} similar + ${info.k_far} dissimilar references`;
  return info;
}

// The queue: one card per photo, located one after another.

function addFiles(files) {
  for (const file of files) {
    const n = state.items.length + 1;
    const item = { n, file, id: photoId(file.name, n), status: "queued", result: null, error: null };
    item.url = URL.createObjectURL(file);
    item.card = card(item);
    $("queue").append(item.card);
    state.items.push(item);
  }
  $("queue-box").hidden = state.items.length === 0;
  run();
}

function card(item) {
  const li = el("li", "card");
  li.dataset.n = String(item.n);
  const img = el("img", "card-thumb");
  img.alt = "";
  img.src = item.url;
  img.addEventListener("error", () => img.replaceWith(el("span", "card-thumb card-none", "?")));
  const text = el("div", "card-text");
  text.append(el("div", "card-name", item.file.name), el("div", "card-status", "queued"));
  li.append(img, text);
  li.tabIndex = 0;
  li.addEventListener("click", () => select(item));
  li.addEventListener("keydown", (event) => {
    if (event.key === "Enter" || event.key === " ") {
      event.preventDefault();
      select(item);
    }
  });
  return li;
}

function setStatus(item, status, text) {
  item.status = status;
  item.card.dataset.status = status;
  item.card.querySelector(".card-status").textContent = text;
}

async function run() {
  if (state.running) return;
  state.running = true;
  try {
    for (;;) {
      const item = state.items.find((i) => i.status === "queued");
      if (!item) break;
      setStatus(item, "running", "locating…");
      if (state.selected === null || state.selected.status !== "done") select(item);
      await locate(item);
      if (state.selected === item) select(item);
      updateAll();
    }
  } finally {
    state.running = false;
  }
}

async function locate(item) {
  const query = new URLSearchParams({ id: item.id, strategy: $("strategy").value });
  let answer;
  try {
    answer = await fetch(`v1/locate?${query}`, {
      method: "POST",
      body: item.file,
      headers: { "Content-Type": "application/octet-stream" },
    });
  } catch (exc) {
    fail(item, `the server did not answer (${exc.message})`);
    return;
  }
  let body = null;
  try {
    body = await answer.json();
  } catch {
    body = null;
  }
  if (!answer.ok) {
    const message = body && typeof body.error === "string" ? body.error : answer.statusText || "no message";
    fail(item, `HTTP ${answer.status}: ${message}`);
    return;
  }
  if (body === null || typeof body !== "object") {
    fail(item, "the server's answer is not JSON");
    return;
  }
  item.result = body;
  const strategy = body.fallback ? `${body.strategy} (fell back)` : body.strategy;
  setStatus(item, "done", `${degrees(body.lat)}, ${degrees(body.lon)} · ${strategy}`);
}

function fail(item, message) {
  item.error = message;
  setStatus(item, "error", message);
}

function updateAll() {
  const done = state.items.filter((i) => i.result !== null).map((i) => i.result);
  const link = $("download-all");
  link.hidden = done.length < 2;
  if (done.length >= 2) download(link, "georag-results.geojson", featureCollection(done, true), "application/geo+json");
}

// The selected photo.

function select(item) {
  state.selected = item;
  for (const other of state.items) other.card.classList.toggle("selected", other === item);
  $("detail").hidden = false;
  const photo = $("photo");
  photo.hidden = false;
  photo.onerror = () => {
    photo.hidden = true;
  };
  photo.src = item.url;
  photo.alt = item.file.name;
  $("photo-name").textContent = item.file.name;
  const result = item.result;
  const error = $("error");
  error.hidden = item.error === null;
  error.textContent = item.error || "";
  $("result").hidden = result === null;
  $("pending").hidden = item.status !== "running" && item.status !== "queued";
  if (result === null) {
    state.map.clear();
    return;
  }
  showResult(result);
  state.map.show(result);
}

function field(name, text, value) {
  const node = document.querySelector(`[data-field="${name}"]`);
  node.textContent = text;
  node.dataset.value = value === undefined ? text : String(value);
}

function showResult(result) {
  field("lat", degrees(result.lat), result.lat);
  field("lon", degrees(result.lon), result.lon);
  const confidence = Number(result.confidence);
  field("confidence", `${Math.round(confidence * 100)}%`, confidence);
  $("confidence-bar").style.width = `${Math.max(0, Math.min(1, confidence)) * 100}%`;
  field("strategy", result.strategy);
  const fallback = $("fallback");
  fallback.hidden = !result.fallback;
  field("fallback", result.fallback || "", result.fallback || "");
  const total = ((result.evidence || {}).timings || {}).total_s;
  $("timing").textContent = Number.isFinite(total) ? `answered in ${total.toFixed(2)} s` : "";
  const base = stem(String(result.id));
  download($("download-json"), `${base}.json`, result, "application/json");
  download($("download-geojson"), `${base}.geojson`, featureCollection([result], true), "application/geo+json");
  showAnswers(result);
  showNeighbors(result);
}

function answersOf(result) {
  const evidence = result.evidence || {};
  const out = [];
  const rag = evidence.rag && typeof evidence.rag === "object" ? evidence.rag : evidence;
  for (const a of rag.answers || []) out.push({ stage: a.variant || "rag", text: a.text, parsed: a.parsed });
  const prior = evidence.prior && typeof evidence.prior === "object" ? evidence.prior : null;
  for (const s of (prior && prior.samples) || []) out.push({ stage: "prior", text: s.text, parsed: null });
  const errors = [...(rag.llm_errors || []), ...((prior && prior.llm_errors) || [])];
  return { answers: out, errors };
}

function showAnswers(result) {
  const { answers, errors } = answersOf(result);
  const box = $("answers");
  box.hidden = answers.length === 0 && errors.length === 0;
  $("answers-count").textContent = String(answers.length);
  const list = $("answers-list");
  list.replaceChildren();
  for (const a of answers) {
    const li = el("li", "answer");
    const head = el("div", "answer-head", a.stage);
    if (Array.isArray(a.parsed)) head.append(el("span", "answer-parsed", ` → ${degrees(a.parsed[0])}, ${degrees(a.parsed[1])}`));
    else if (a.stage !== "prior") head.append(el("span", "answer-none", " → no coordinates"));
    li.append(head, el("pre", "answer-text", a.text === null || a.text === undefined ? "" : String(a.text)));
    list.append(li);
  }
  for (const message of errors) list.append(el("li", "answer answer-error", String(message)));
}

function showNeighbors(result) {
  const rows = neighbors(result);
  for (const side of ["near", "far"]) {
    const grid = $(`${side}-grid`);
    grid.replaceChildren();
    $(`${side}-count`).textContent = String(rows[side].length);
    rows[side].forEach((r, rank) => {
      const item = el("button", `tile tile-${side}`);
      item.type = "button";
      item.title = `${degrees(r.lat)}, ${degrees(r.lon)} · gallery row ${r.row}`;
      if (state.info.thumbnails) {
        const img = el("img", "tile-img");
        img.alt = "";
        img.loading = "lazy";
        img.src = `v1/gallery/${r.row}/thumbnail`;
        img.addEventListener("error", () => img.replaceWith(el("span", "tile-img tile-none", "no image")));
        item.append(img);
      }
      item.append(el("span", "tile-caption", `#${rank + 1} · ${Number(r.score).toFixed(3)}`));
      item.append(el("span", "tile-where", `${Number(r.lat).toFixed(2)}, ${Number(r.lon).toFixed(2)}`));
      item.addEventListener("click", () => state.map.open(side, rank));
      grid.append(item);
    });
  }
}

// Dropping and choosing photos.

function wireInput() {
  const input = $("files");
  input.addEventListener("change", () => {
    addFiles([...input.files]);
    input.value = "";
  });
  const drop = $("drop");
  for (const name of ["dragenter", "dragover"]) {
    drop.addEventListener(name, (event) => {
      event.preventDefault();
      drop.classList.add("over");
    });
  }
  for (const name of ["dragleave", "drop"]) drop.addEventListener(name, () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    addFiles([...event.dataTransfer.files]);
  });
  // A drop anywhere else must not make the browser leave the page to open the photo.
  window.addEventListener("dragover", (event) => event.preventDefault());
  window.addEventListener("drop", (event) => event.preventDefault());
}

async function main() {
  const status = $("page-status");
  try {
    state.info = await loadInfo();
    state.map = new WorldMap("map", Boolean(state.info.thumbnails));
    wireInput();
    await state.map.loadOutlines("static/vendor/world-atlas/countries-110m.json");
    document.body.dataset.ready = "1";
    status.hidden = true;
  } catch (exc) {
    status.hidden = false;
    status.textContent = `The page could not start: ${exc.message}`;
  }
}

main();

// succu's dial page. Reads /info once, draws a dial per pane (a slider over two sources, a
// triangle and linked shares over three, linked shares over more, nothing without a dial), and
// streams each pane's continuation from /stream as server-sent events. Side by side, Generate
// streams both panes from one /panes stream (one batched forward pass per token on the server;
// each event names its pane). Moving a pane's dial takes it off its stream (the server stops
// generating once no pane reads one) and opens a new one for it alone at the new position; the
// pane shows the position the server reports it used, not the dial's current value.
"use strict";

const $ = (id) => document.getElementById(id);
const panes = {};
let info = null;

// ---- dials ---------------------------------------------------------------------------------
function fmt(x) { return String(Math.round(x * 1000) / 1000); }
// Corpus names come from the checkpoint file: shown as text, never as markup.
function esc(text) {
  return String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function slider(id, start, onChange) {
  const el = document.createElement("div");
  el.className = "dial";
  el.innerHTML = `<div class="ends"><span>← ${esc(info.corpora[0])} (0)</span>
    <span>alpha = <b id="readout-${id}"></b></span><span>(1) ${esc(info.corpora[1])} →</span></div>
    <input type="range" id="alpha-${id}" min="0" max="1" step="0.01" aria-label="alpha">`;
  const input = el.querySelector("input"), readout = el.querySelector("b");
  const show = () => { readout.textContent = fmt(Number(input.value)); };
  input.value = start; show();
  input.addEventListener("input", () => { show(); onChange(); });
  return { el, get: () => fmt(Number(input.value)), set: (text) => { input.value = text; show(); onChange(); } };
}

// Shares on the simplex: editing one rescales the others so that they still sum to 1.
function simplex(id, start, onChange) {
  const k = info.k;
  let shares = start.split(",").map(Number);
  const el = document.createElement("div");
  el.className = "dial";
  const box = document.createElement("div");
  box.className = "shares";
  const inputs = info.corpora.map((name, i) => {
    const label = document.createElement("label");
    label.innerHTML = `${esc(name)} <input type="number" id="share-${id}-${i}" min="0" max="1" step="0.05">`;
    box.append(label);
    const input = label.querySelector("input");
    input.addEventListener("change", () => { setShare(i, Number(input.value)); onChange(); });
    return input;
  });
  const tri = k === 3 ? triangle(id, (point) => { shares = point; draw(); onChange(); }) : null;
  function setShare(i, v) {
    v = Math.min(1, Math.max(0, Number.isFinite(v) ? v : 0));
    const rest = shares.reduce((s, x, j) => s + (j === i ? 0 : x), 0);
    shares = shares.map((x, j) => (j === i ? v : rest > 0 ? (x * (1 - v)) / rest : (1 - v) / (k - 1)));
    draw();
  }
  function draw() {
    inputs.forEach((input, i) => { input.value = fmt(shares[i]); });
    if (tri) tri.place(shares);
  }
  function get() {  // rounded, with the last share taking the remainder so the sum stays 1
    const head = shares.slice(0, -1).map((x) => Math.round(x * 1000) / 1000);
    const last = Math.max(0, Math.round((1 - head.reduce((s, x) => s + x, 0)) * 1000) / 1000);
    return [...head, last].join(",");
  }
  if (tri) el.append(tri.svg);
  el.append(box);
  draw();
  return { el, get, set: (text) => { shares = text.split(",").map(Number); draw(); onChange(); } };
}

// A clickable triangle for three sources: corner i is source i; a point is its shares
// (barycentric coordinates). A click or drag outside is pulled onto the triangle.
function triangle(id, onPick) {
  const ns = "http://www.w3.org/2000/svg";
  const corners = [[20, 175], [200, 175], [110, 19]];
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("class", "triangle");
  svg.setAttribute("id", `triangle-${id}`);
  svg.setAttribute("viewBox", "-50 0 320 200");  // room for the corner labels
  const labels = corners.map(([x, y], i) =>
    `<text x="${x}" y="${i === 2 ? y - 6 : y + 16}" text-anchor="middle">${esc(info.corpora[i])}</text>`);
  svg.innerHTML = `<polygon points="${corners.map((c) => c.join(",")).join(" ")}"/>${labels.join("")}
    <circle r="6"/>`;
  const dot = svg.querySelector("circle");
  function shares(x, y) {
    const [[x0, y0], [x1, y1], [x2, y2]] = corners;
    const det = (y1 - y2) * (x0 - x2) + (x2 - x1) * (y0 - y2);
    const a = ((y1 - y2) * (x - x2) + (x2 - x1) * (y - y2)) / det;
    const b = ((y2 - y0) * (x - x2) + (x0 - x2) * (y - y2)) / det;
    const raw = [a, b, 1 - a - b].map((s) => Math.max(0, s));
    const sum = raw.reduce((s, v) => s + v, 0);
    return raw.map((s) => s / sum);
  }
  function pick(event) {  // the pointer in the triangle's own coordinates
    const point = svg.createSVGPoint();
    point.x = event.clientX;
    point.y = event.clientY;
    const { x, y } = point.matrixTransform(svg.getScreenCTM().inverse());
    onPick(shares(x, y));
  }
  let dragging = false;
  svg.addEventListener("pointerdown", (e) => { dragging = true; pick(e); });
  svg.addEventListener("pointermove", (e) => { if (dragging) pick(e); });
  window.addEventListener("pointerup", () => { dragging = false; });
  function place(s) {
    dot.setAttribute("cx", s.reduce((acc, w, i) => acc + w * corners[i][0], 0));
    dot.setAttribute("cy", s.reduce((acc, w, i) => acc + w * corners[i][1], 0));
  }
  return { svg, place };
}

// ---- panes and streams ----------------------------------------------------------------------
function makePane(id, start) {
  const section = $(`pane-${id}`);
  const pane = { id, section, source: null, ran: false, timer: null, dial: null };
  const onChange = () => {  // debounced: a drag fires many input events
    clearTimeout(pane.timer);
    pane.timer = setTimeout(() => { if (pane.ran && !section.hidden) { clearError(); run(pane); } }, 120);
  };
  if (info.k === 2) pane.dial = slider(id, start, onChange);
  else if (info.k > 2) pane.dial = simplex(id, start, onChange);
  if (pane.dial) section.append(pane.dial.el);
  section.insertAdjacentHTML("beforeend", `<div class="used" id="used-${id}"></div>
    <div class="text" id="text-${id}"><span class="prompt"></span><span class="out" id="out-${id}"></span></div>
    <div class="status" id="status-${id}"></div>`);
  pane.used = section.querySelector(".used");
  pane.prompt = section.querySelector(".prompt");
  pane.out = section.querySelector(".out");
  pane.status = section.querySelector(".status");
  return pane;
}

function corner(i) { return Array.from({ length: info.k }, (_, j) => (j === i ? 1 : 0)).join(","); }

function showError(message) { $("error").textContent = message; }
function clearError() { $("error").textContent = ""; }

function close(pane, state) {
  const source = pane.source;
  pane.source = null;
  pane.section.dataset.state = state;
  // A side-by-side stream is shared: it closes once no pane reads it.
  if (source && !Object.values(panes).some((p) => p.source === source)) source.close();
}

function settings() {
  return new URLSearchParams({
    prompt: $("prompt").value, temperature: $("temperature").value, top_p: $("top_p").value,
    max_new_tokens: $("length").value, seed: $("seed").value,
  });
}

function reset(pane) {
  clearTimeout(pane.timer);  // a dial move still waiting to restart the pane: this stream has it
  close(pane, "streaming");
  pane.ran = true;
  pane.prompt.textContent = $("prompt").value;
  pane.out.textContent = "";
  pane.used.textContent = "";
  pane.status.textContent = "starting…";
}

function run(pane) {
  reset(pane);
  const params = settings();
  if (pane.dial) params.set("alpha", pane.dial.get());
  listen(pane, new EventSource(`/stream?${params}`), null);
}

// Side by side: every pane from one stream, pane i at the i-th position.
function runTogether(list) {
  list.forEach(reset);
  const params = settings();
  params.set("alpha", list.map((p) => p.dial.get()).join(";"));
  const source = new EventSource(`/panes?${params}`);
  list.forEach((pane, i) => listen(pane, source, i));
}

// A pane's share of `source`: every event of a stream of its own (index null), else the events
// naming its index and those naming none (an error ends every pane).
function listen(pane, source, index) {
  pane.source = source;
  const mine = (handler) => (event) => {
    if (pane.source !== source) return;
    const d = event.data ? JSON.parse(event.data) : null;
    if (index === null || d === null || d.pane === undefined || d.pane === index) handler(d);
  };
  source.addEventListener("start", mine((d) => {
    pane.used.textContent = d.label;
    pane.section.dataset.alpha = d.alpha ?? "";
    pane.status.textContent = ["streaming…", ...d.notes].join(" · ");
  }));
  source.addEventListener("token", mine((d) => { pane.out.textContent += d.text; }));
  source.addEventListener("done", mine((d) => {
    const at = d.alpha === null ? "" : ` at alpha = ${d.alpha}`;
    pane.status.textContent = `done: ${d.chars} character${d.chars === 1 ? "" : "s"} in ${d.seconds} s${at}`;
    close(pane, "done");
  }));
  source.addEventListener("error", mine((d) => {
    // A named `error` event carries the server's message; a bare one is a lost connection.
    showError(d ? d.message : "lost the connection to the server");
    pane.status.textContent = "error";
    close(pane, "error");
  }));
}

function visible() { return Object.values(panes).filter((p) => !p.section.hidden); }

async function boot() {
  info = await (await fetch("/info")).json();
  const dial = info.k ? `dial over ${info.corpora.join(", ")}` : "no dial";
  $("model").textContent = `${info.checkpoint} · ${info.model} · ${dial}` +
    `${info.kv_cache ? " · KV cache" : ""} · at most ${info.max_new_tokens} new tokens`;
  $("temperature").value = info.defaults.temperature;
  $("top_p").value = info.defaults.top_p;
  $("length").value = info.defaults.max_new_tokens;
  $("length").max = info.max_new_tokens;
  $("seed").value = info.defaults.seed;
  $("compare-box").hidden = !info.k;
  const far = info.k === 2 ? "1" : corner(info.k - 1);
  panes.a = makePane("a", info.centre ?? "");
  panes.b = makePane("b", info.k ? far : "");
  $("controls").addEventListener("submit", (event) => {
    event.preventDefault();
    clearError();
    const shown = visible();
    if (shown.length > 1 && info.k) runTogether(shown);
    else shown.forEach(run);
  });
  $("prompt").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) $("controls").requestSubmit();
  });
  $("stop").addEventListener("click", () => visible().forEach((p) => {
    if (p.source) { close(p, "stopped"); p.status.textContent = "stopped"; }
  }));
  $("compare").addEventListener("change", () => {
    const on = $("compare").checked;
    panes.b.section.hidden = !on;
    $("panes").classList.toggle("compare", on);
    if (!on) close(panes.b, "closed");
    else if (panes.a.ran) run(panes.b);
  });
  document.body.dataset.ready = "1";
}

// For scripts (succu.serve --screenshot): put a pane's dial at a position without the mouse.
window.succuPage = { setPosition: (id, text) => panes[id].dial.set(text) };
boot().catch((err) => showError(`could not read the checkpoint's description: ${err}`));

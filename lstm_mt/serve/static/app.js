// lstm-mt serve: translate as you type, and draw the attention and the gates of the answer.
// Plain browser JavaScript, no libraries: every figure is an SVG built here from /v1/translate's JSON.
"use strict";

const DEBOUNCE_MS = 250;
const GATE_UNITS = 16;
const GATES = [["i", "input"], ["f", "forget"], ["o", "output"]];
const LINE_COLORS = ["#1f5fbf", "#d1495b", "#2e933c", "#8e44ad", "#e69f00", "#00798c", "#7f7f7f", "#a0522d"];
const VIRIDIS = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];
const SVG_NS = "http://www.w3.org/2000/svg";

const $ = (id) => document.getElementById(id);
const view = { seq: 0, timer: null, controller: null, result: null, layer: null, maxChars: null };

// --- talking to the server ---------------------------------------------------------------

async function loadInfo() {
  try {
    const info = await (await fetch("/v1/info")).json();
    const { source, target } = info.languages;
    const params = (info.model.parameters / 1e6).toFixed(info.model.parameters < 1e6 ? 3 : 1);
    $("model-info").textContent =
      `${source ?? "?"} → ${target ?? "?"} · ${params}M parameters · step ${info.checkpoint.step ?? "?"} · ${info.device}`;
    $("source-lang").textContent = source ? `(${source})` : "";
    $("target-lang").textContent = target ? `(${target})` : "";
    if (target) $("translation").lang = target;
    $("source").maxLength = info.limits.max_chars;
    selectValue($("beam-size"), info.decoding.beam_size);
  } catch (error) {
    $("model-info").textContent = "could not read /v1/info";
  }
}

function selectValue(select, value) {
  if (![...select.options].some((option) => Number(option.value) === value)) {
    select.add(new Option(String(value), String(value)));
  }
  select.value = String(value);
}

function schedule() {
  clearTimeout(view.timer);
  view.timer = setTimeout(translateNow, DEBOUNCE_MS);
}

async function translateNow() {
  const text = $("source").value.replace(/\s+/g, " ").trim();
  if (view.controller) view.controller.abort();
  const seq = ++view.seq;
  if (!text) {
    showStatus("");
    render(null);
    return;
  }
  const beam = Number($("beam-size").value);
  const request = {
    sentences: [text],
    beam_size: beam,
    nbest: Math.min(Number($("nbest-size").value), beam),
    attention: true,
    gates: true,
    gate_units: GATE_UNITS,
  };
  view.controller = new AbortController();
  showStatus("translating…");
  const started = performance.now();
  try {
    const response = await fetch("/v1/translate", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(request),
      signal: view.controller.signal,
    });
    const answer = await response.json();
    if (seq !== view.seq) return; // a newer request is on its way
    if (!response.ok) {
      showStatus(answer.error || `error ${response.status}`, true);
      return;
    }
    render(answer.translations[0]);
    showStatus(`${Math.round(performance.now() - started)} ms`);
    document.body.dataset.translated = text; // what the page now shows the translation of
  } catch (error) {
    if (error.name !== "AbortError" && seq === view.seq) showStatus(`request failed: ${error.message}`, true);
  }
}

function showStatus(message, isError = false) {
  $("status").textContent = message;
  $("status").classList.toggle("error", isError);
}

// --- what the page shows -------------------------------------------------------------------

function render(result) {
  view.result = result;
  $("translation").textContent = result ? result.text : "";
  const list = $("nbest");
  list.replaceChildren();
  for (const candidate of result ? result.nbest : []) {
    const item = document.createElement("li");
    item.dataset.score = String(candidate.score);
    const text = document.createElement("span");
    text.className = "text";
    text.textContent = candidate.text;
    const score = document.createElement("span");
    score.className = "score";
    score.textContent = candidate.score.toFixed(3);
    item.append(text, score);
    list.append(item);
  }
  $("attention").replaceChildren();
  if (result && result.attention.length) {
    $("attention").append(
      heatmap(result.attention, result.target_pieces, result.source_pieces, blues, { cell: 22, id: "attention-map" }),
    );
  }
  const layers = result ? result.gates : [];
  if (!layers.some((layer) => layer.name === view.layer)) view.layer = layers.length ? layers[0].name : null;
  renderLayerButtons(layers);
  renderGates();
  renderCellNorms(result);
}

function renderLayerButtons(layers) {
  const box = $("layer-buttons");
  box.replaceChildren();
  for (const layer of layers) {
    const button = document.createElement("button");
    button.type = "button";
    button.role = "tab";
    button.textContent = layer.name;
    button.dataset.layer = layer.name;
    button.setAttribute("aria-selected", String(layer.name === view.layer));
    button.addEventListener("click", () => {
      view.layer = layer.name;
      renderLayerButtons(layers);
      renderGates();
    });
    box.append(button);
  }
}

function renderGates() {
  const box = $("gates");
  box.replaceChildren();
  const result = view.result;
  const layer = result && result.gates.find((candidate) => candidate.name === view.layer);
  if (!layer) return;
  box.dataset.layer = layer.name;
  const steps = layer.side === "encoder" ? result.source_pieces : result.target_pieces;
  for (const [key, name] of GATES) {
    const trace = layer[key];
    const byUnit = trace.units.map((_, k) => trace.values.map((row) => row[k])); // [units][steps]
    const figure = heatmap(byUnit, trace.units.map((unit) => `unit ${unit}`), steps, viridis, {
      cell: 16,
      angle: 60,
      title: `${name} gate`,
      id: `gate-${key}`,
    });
    figure.dataset.gate = key;
    box.append(figure);
  }
}

function renderCellNorms(result) {
  const box = $("cell-norm");
  box.replaceChildren();
  if (!result || !result.gates.length) return;
  for (const side of ["encoder", "decoder"]) {
    const layers = result.gates.filter((layer) => layer.side === side);
    const steps = side === "encoder" ? result.source_pieces : result.target_pieces;
    if (layers.length) box.append(lineChart(layers, steps, `${side}`));
  }
}

// --- SVG figures -----------------------------------------------------------------------------

function svgElement(name, attributes = {}, text = null) {
  const element = document.createElementNS(SVG_NS, name);
  for (const [key, value] of Object.entries(attributes)) element.setAttribute(key, String(value));
  if (text !== null) element.textContent = text;
  return element;
}

function textWidth(labels, perChar = 6.6) {
  return Math.min(160, Math.max(0, ...labels.map((label) => label.length)) * perChar + 8);
}

// A matrix values[row][col] as colored cells, row labels on the left, column labels on top at `angle` degrees.
function heatmap(values, rowLabels, colLabels, color, { cell, angle = 45, title = null, id = null }) {
  const radians = (angle * Math.PI) / 180;
  const labelLength = textWidth(colLabels);
  const left = textWidth(rowLabels);
  const top = labelLength * Math.sin(radians) + (title ? 20 : 6);
  const width = left + colLabels.length * cell + labelLength * Math.cos(radians) + 4;
  const height = top + rowLabels.length * cell + 4;
  const svg = svgElement("svg", { width, height, viewBox: `0 0 ${width} ${height}`, class: "heatmap" });
  if (id) svg.id = id;
  if (title) svg.append(svgElement("text", { x: left, y: 12, "font-weight": 600 }, title));
  colLabels.forEach((label, col) => {
    const x = left + col * cell + cell / 2 + 3;
    const y = top - 4;
    svg.append(svgElement("text", { x, y, transform: `rotate(-${angle} ${x} ${y})`, class: "col-label" }, label));
  });
  rowLabels.forEach((label, row) => {
    const y = top + row * cell + cell / 2 + 4;
    svg.append(svgElement("text", { x: left - 4, y, "text-anchor": "end", class: "row-label" }, label));
    values[row].forEach((value, col) => {
      const rect = svgElement("rect", {
        x: left + col * cell, y: top + row * cell, width: cell - 1, height: cell - 1,
        fill: color(value), class: "cell", "data-row": row, "data-col": col, "data-value": value,
      });
      rect.append(svgElement("title", {}, `${label} · ${colLabels[col]}: ${value.toFixed(3)}`));
      svg.append(rect);
    });
  });
  return svg;
}

// ‖c_t‖ of each layer of one side, one line per layer, over that side's subwords.
function lineChart(layers, steps, title) {
  const step = Math.max(22, Math.min(48, 560 / Math.max(1, steps.length)));
  const plot = { left: 44, top: 22, height: 120 };
  const bottom = textWidth(steps) * 0.75 + 8;
  const width = plot.left + steps.length * step + 200;
  const height = plot.top + plot.height + bottom;
  const maximum = Math.max(1e-9, ...layers.flatMap((layer) => layer.c_norm));
  const x = (t) => plot.left + t * step + step / 2;
  const y = (value) => plot.top + plot.height * (1 - value / maximum);
  const svg = svgElement("svg", { width, height, viewBox: `0 0 ${width} ${height}`, class: "line-chart" });
  svg.dataset.side = title;
  svg.append(svgElement("text", { x: plot.left, y: 12, "font-weight": 600 }, `${title} ‖c_t‖`));
  svg.append(svgElement("line", { x1: plot.left, y1: plot.top + plot.height, x2: x(steps.length - 1) + step / 2,
    y2: plot.top + plot.height, stroke: "#999" }));
  svg.append(svgElement("line", { x1: plot.left, y1: plot.top, x2: plot.left, y2: plot.top + plot.height, stroke: "#999" }));
  svg.append(svgElement("text", { x: plot.left - 4, y: plot.top + 4, "text-anchor": "end", class: "axis-title" },
    maximum.toFixed(1)));
  svg.append(svgElement("text", { x: plot.left - 4, y: plot.top + plot.height, "text-anchor": "end",
    class: "axis-title" }, "0"));
  steps.forEach((label, t) => {
    const base = plot.top + plot.height + 12;
    svg.append(svgElement("text", { x: x(t) - 4, y: base, transform: `rotate(45 ${x(t) - 4} ${base})` }, label));
  });
  layers.forEach((layer, index) => {
    const colorOf = LINE_COLORS[index % LINE_COLORS.length];
    const points = layer.c_norm.map((value, t) => `${x(t).toFixed(1)},${y(value).toFixed(1)}`).join(" ");
    svg.append(svgElement("polyline", { points, fill: "none", stroke: colorOf, "stroke-width": 2,
      "data-layer": layer.name, "data-values": JSON.stringify(layer.c_norm) }));
    layer.c_norm.forEach((value, t) => svg.append(svgElement("circle", { cx: x(t), cy: y(value), r: 2.5, fill: colorOf })));
    const legendY = plot.top + 8 + index * 16;
    const legendX = x(steps.length - 1) + step / 2 + 12;
    svg.append(svgElement("line", { x1: legendX, y1: legendY - 4, x2: legendX + 16, y2: legendY - 4, stroke: colorOf,
      "stroke-width": 2 }));
    svg.append(svgElement("text", { x: legendX + 20, y: legendY }, layer.name));
  });
  return svg;
}

// --- colors ------------------------------------------------------------------------------------

function blues(value) { // 0: white, 1: dark blue
  const v = Math.max(0, Math.min(1, value));
  const mix = (from, to) => Math.round(from + (to - from) * v);
  return `rgb(${mix(255, 8)},${mix(255, 48)},${mix(255, 107)})`;
}

function viridis(value) { // 0: dark purple, 1: yellow
  const v = Math.max(0, Math.min(1, value)) * (VIRIDIS.length - 1);
  const low = Math.min(Math.floor(v), VIRIDIS.length - 2);
  const share = v - low;
  const [a, b] = [VIRIDIS[low], VIRIDIS[low + 1]];
  return `rgb(${a.map((channel, k) => Math.round(channel + (b[k] - channel) * share)).join(",")})`;
}

// --- wiring ----------------------------------------------------------------------------------

$("source").addEventListener("input", schedule);
$("beam-size").addEventListener("change", translateNow);
$("nbest-size").addEventListener("change", translateNow);
loadInfo().then(() => { if ($("source").value.trim()) translateNow(); });

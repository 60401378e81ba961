"use strict";
// Helpers shared by the pages (served as /static/page.js).

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value; else if (key === "text") node.textContent = value;
    else node.setAttribute(key, value);
  }
  node.append(...children);
  return node;
}

// The API's own words for a failed request: "status code: detail".
async function apiError(response) {
  try {
    const body = await response.json();
    return `${response.status} ${body.error || ""}: ${body.detail || JSON.stringify(body)}`;
  } catch (_) {
    return `${response.status} ${response.statusText}`;
  }
}

// The API key, when the service asks for one (it answers 401): kept for this browser tab only.
const KEY = "inspectApiKey";

async function apiFetch(url, options = {}) {
  const headers = new Headers(options.headers || {});
  const key = sessionStorage.getItem(KEY);
  if (key) headers.set("Authorization", `Bearer ${key}`);
  const response = await fetch(url, {...options, headers});
  if (response.status === 401) askForKey(key ? "That key was refused." : "This service needs an API key.");
  return response;
}

// Answers may come in another order than they were asked for (filters changed, a button clicked again, a poll
// overtaken by a click): a page draws only the answer to its latest request of one kind. `const turn = latest();`
// once, then per request `const current = turn();` and, when its answer has come, `if (!current()) return;`.
function latest() {
  let asked = 0;
  return () => {
    const mine = ++asked;
    return () => mine === asked;
  };
}

// Buttons that change something stay disabled until their request is answered: a second click would ask for the
// same change again (another version, or a 409 for a change based on a version no longer active).
async function whileAnswering(buttons, work) {
  for (const button of buttons) button.disabled = true;
  try {
    return await work();
  } finally {
    for (const button of buttons) button.disabled = false;
  }
}

// A picture in a format the browser cannot draw (TIFF or Netpbm, as line cameras write; no Chromium draws them) as
// the service reads it (POST /images/preview, with a category by its settings): {blob, width, height}, a PNG and the
// size the picture was sent at, where every box of an answer lies; throws the API's message
async function servicePreview(picture, category = null) {
  const form = new FormData();
  form.append("file", picture, picture.name || "picture.tif");
  if (category) form.append("category", category);
  const response = await apiFetch("/images/preview", {method: "POST", body: form});
  if (!response.ok) throw new Error(await apiError(response));
  return {blob: await response.blob(), width: Number(response.headers.get("X-Image-Width")),
          height: Number(response.headers.get("X-Image-Height"))};
}

// the formats every browser draws; the service reads TIFF and Netpbm besides, as line cameras write them
const DRAWN = ["image/png", "image/jpeg", "image/bmp", "image/webp"];

// Images come through apiFetch too (an <img src> cannot send a key); a kept file of a format no browser draws (the
// log keeps the file itself with INSPECT_LOG_IMAGES=full: a TIFF, a PGM) as the service reads it.
async function apiImage(img, url) {  // the response, for its headers
  const response = await apiFetch(url);
  if (!response.ok) { img.title = await apiError(response); return response; }
  let blob = await response.blob();
  if (!DRAWN.includes(blob.type)) {
    try { blob = (await servicePreview(blob)).blob; } catch (error) { img.title = error.message; }
  }
  img.src = URL.createObjectURL(blob);
  return response;
}

function askForKey(why) {
  if (document.getElementById("keyBar")) return;
  const input = el("input", {id: "apiKey", type: "password", size: 40, placeholder: "API key"});
  const use = el("button", {id: "useKey", text: "Use this key"});
  use.onclick = () => { sessionStorage.setItem(KEY, input.value.trim()); location.reload(); };
  input.onkeydown = (event) => { if (event.key === "Enter") use.click(); };
  document.body.prepend(el("div", {id: "keyBar", class: "error"}, `${why} `, input, " ", use,
    el("span", {class: "small", text: " (kept in this tab only; ask your administrator for one)"})));
}

// Drift (GET /categories/{name}/drift): the sentence a warning shows, or null when the line looks as calibrated.
function driftWarning(d) {
  const pct = (v) => `${(100 * v).toFixed(1)}%`;
  const n = (v) => Number(v).toLocaleString("en-US");  // 29,730 of 39,057, as the category page counts
  const advice = (more) => more ? "More defects on the line, or the line has changed (lighting, camera, supplier): review the flagged parts."
                                : "Fewer flagged than good parts alone would give: check that the camera still sees the parts.";
  const said = [];
  if (d.warning) {
    said.push(`${d.category}: ${n(d.flagged)} of ${n(d.inspections)} parts flagged in the last ${d.window_hours} hours (${pct(d.flagged_share)}; ` +
      `90% interval ${pct(d.interval[0])} to ${pct(d.interval[1])}), where its threshold predicts ${pct(d.predicted_false_alarm_rate)} ` +
      `of good parts. ${advice(d.flagged_share > d.predicted_false_alarm_rate)}`);
  }
  const p = d.parts;  // the parts the line named, each flagged when any view is
  if (p && p.warning) {
    said.push(`${d.category}: ${n(p.flagged)} of ${n(p.parts)} named parts flagged on any view in the last ${d.window_hours} hours ` +
      `(${pct(p.flagged_share)}; 90% interval ${pct(p.interval[0])} to ${pct(p.interval[1])}), where its threshold predicts ` +
      `${pct(p.predicted_false_alarm_rate)} of good parts on any view.` + (d.warning ? "" : ` ${advice(p.flagged_share > p.predicted_false_alarm_rate)}`));
  }
  // the false alarms themselves, as the window's reviews found them: of the answers, and of the named parts
  for (const [r, predicted, what] of [[d.reviews, d.predicted_false_alarm_rate, "flagged answers"],
                                      [p && p.reviews, p && p.predicted_false_alarm_rate, "flagged named parts"]]) {
    if (!r || !r.warning) continue;
    said.push(`${d.category}: as reviewed, an estimated ${pct(r.false_alarm_rate)} of good parts flagged (90% interval ${pct(r.interval[0])} ` +
      `to ${pct(r.interval[1])}; ${n(r.flagged_found_good)} of ${n(r.flagged_reviewed)} ${what} reviewed were good), where its threshold predicts ` +
      `${pct(predicted)}. ` + (r.false_alarm_rate > predicted
        ? "Good parts now look different to it (lighting, camera, supplier): teach it the good parts it flags, or set the threshold again."
        : "Fewer false alarms than its calibration expects: a lower threshold would catch more defects at the promised rate."));
  }
  const b = d.body;  // the passed parts against the good scores' median: the whole line's shift, before the flagged share shows it
  if (b && b.warning) {
    said.push(`${d.category}: ${n(b.above_good_median)} of ${n(b.passed)} passed parts score above the good parts' median (${pct(b.share)}; ` +
      `90% interval ${pct(b.interval[0])} to ${pct(b.interval[1])}), where a calibrated line gives ${pct(b.expected_share)}. ` +
      (b.share > b.expected_share
        ? "The parts it passes look less like its good images than they did (lighting, camera, supplier): check the line before the false alarms rise."
        : "The parts it passes score lower than its good images did: if the camera or lighting changed, check that it still sees the parts."));
  }
  return said.length ? said.join("\n") : null;  // each warning a line of its own (.drift-warning keeps the breaks)
}

// how rare the score is among good parts (the answer's p_value), in words a line can act on
function rarity(p) {
  if (p == null) return "";
  if (p >= 0.1) return `${Math.round(p * 100)}% of good parts score as high`;
  if (p < 1e-6) return "fewer than 1 good part in a million scores as high";
  return `1 good part in ${Math.round(1 / p).toLocaleString("en")} scores as high`;
}

// how rare a part is among good parts, at most (GET /parts' p_value: its views times its rarest view's p-value)
function partRarity(p) {
  if (p == null) return "";
  if (p >= 0.1) return `at most ${Math.round(p * 100)}% of good parts show a view as rare`;
  if (p < 1e-6) return "fewer than 1 good part in a million shows a view as rare";
  return `at most 1 good part in ${Math.round(1 / p).toLocaleString("en")} shows a view as rare`;
}

// what teaching a good image said of it (added normals' notes, by file name: an image enlarged more than the good
// images before it taught the model its blur as good), after the teaching's result
function taughtNotes(result) {
  return Object.values(result.notes || {}).flat().map((note) => `; note: ${note}`).join("");
}

function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  node.append(...children);
  return node;
}

// The drift window as two small plots: the share flagged per hour beside the predicted rate and the window's 90%
// interval; and the recent scores' distribution beside the good scores the threshold came from.
function driftPlots(d) {
  const W = 520, H = 170, L = 44, B = 22, T = 8;
  const top = Math.min(1, Math.max(0.05, 3 * (d.predicted_false_alarm_rate || 0),
                                   ...d.hours.map((h) => h.flagged_share), ...(d.interval ? [d.interval[1]] : [])));
  const y = (v) => T + (H - T - B) * (1 - Math.min(v, top) / top);
  const rates = svg("svg", {class: "drift-rates", width: W, height: H, viewBox: `0 0 ${W} ${H}`});
  if (d.interval) rates.append(svg("rect", {x: L, width: W - L, y: y(d.interval[1]), height: y(d.interval[0]) - y(d.interval[1]), fill: "#cfe3f7"}));
  const step = (W - L) / Math.max(d.hours.length, 1);
  d.hours.forEach((h, i) => rates.append(svg("rect", {class: "hour", x: L + i * step + 1, width: Math.max(step - 2, 1),
    y: y(h.flagged_share), height: H - B - y(h.flagged_share), fill: "#4a78a8"}, svg("title", {}, `${h.hour}: ${h.flagged} of ${h.inspections}`))));
  if (d.predicted_false_alarm_rate != null) {
    rates.append(svg("line", {x1: L, x2: W, y1: y(d.predicted_false_alarm_rate), y2: y(d.predicted_false_alarm_rate), stroke: "#c0392b", "stroke-dasharray": "5 3"}));
  }
  for (const v of [0, top]) rates.append(svg("text", {x: 2, y: y(v) + 4, "font-size": 11}, `${(100 * v).toFixed(0)}%`));
  rates.append(svg("text", {x: L, y: H - 6, "font-size": 11}, "share flagged per hour (bars), window's 90% interval (band), predicted for good parts (dashed)"));

  const scores = svg("svg", {class: "drift-scores", width: W, height: H, viewBox: `0 0 ${W} ${H}`});
  const all = [...d.scores, ...d.good_scores, d.threshold];
  const lo = Math.min(...all), hi = Math.max(...all) * 1.001, bins = 30;
  const histogram = (values) => {
    const counts = new Array(bins).fill(0);
    for (const v of values) counts[Math.min(bins - 1, Math.floor((v - lo) / (hi - lo) * bins))] += 1;
    return counts.map((c) => values.length ? c / values.length : 0);
  };
  const x = (v) => L + (W - L) * (v - lo) / (hi - lo);
  const good = histogram(d.good_scores), recent = histogram(d.scores), peak = Math.max(...good, ...recent, 1e-9);
  const hy = (f) => T + (H - T - B) * (1 - f / peak);
  const line = (fractions) => fractions.map((f, i) => `${x(lo + (i + 0.5) * (hi - lo) / bins)},${hy(f)}`).join(" ");
  scores.append(svg("polyline", {points: line(good), fill: "none", stroke: "#2e8b57", "stroke-width": 2}),
                svg("polyline", {class: "recent", points: line(recent), fill: "none", stroke: "#4a78a8", "stroke-width": 2}),
                svg("line", {x1: x(d.threshold), x2: x(d.threshold), y1: T, y2: H - B, stroke: "#c0392b", "stroke-dasharray": "5 3"}),
                svg("text", {x: L, y: H - 6, "font-size": 11}, `scores: good images (green), the window's ${d.scores.length} answers (blue), threshold (dashed)`));
  return [rates, scores];
}

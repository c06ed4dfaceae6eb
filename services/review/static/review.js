// Label review: page through a dataset job's images, drag keypoints or head radii, see both Norberg
// angles update live, and accept / correct / reject with the keyboard. Angles use the same formula as
// hipgen.anatomy.norberg_angle (atan2(|cross|, dot)), so what the reviewer sees is what is saved.
"use strict";

const job = document.body.dataset.job;
const csrf = document.querySelector('meta[name="csrf-token"]').content;
const SVG = "http://www.w3.org/2000/svg";
const $ = (id) => document.getElementById(id);
const POINTS = ["left_head", "right_head", "left_rim", "right_rim"];

const state = { items: [], index: -1, item: null, kp: null, original: null, scale: 1, shownAt: 0, busy: false };

function norbergAngle(head, other, rim) {
  const ax = other[0] - head[0], ay = other[1] - head[1];
  const bx = rim[0] - head[0], by = rim[1] - head[1];
  if (Math.hypot(ax, ay) === 0 || Math.hypot(bx, by) === 0) return NaN;
  return (Math.atan2(Math.abs(ax * by - ay * bx), ax * bx + ay * by) * 180) / Math.PI;
}

function angles(kp) {
  return {
    left: norbergAngle(kp.left_head, kp.right_head, kp.left_rim),
    right: norbergAngle(kp.right_head, kp.left_head, kp.right_rim),
  };
}

function kpFromRecord(r) {
  return {
    left_head: [r.left_head_x, r.left_head_y], right_head: [r.right_head_x, r.right_head_y],
    left_rim: [r.left_rim_x, r.left_rim_y], right_rim: [r.right_rim_x, r.right_rim_y],
    left_radius: r.left_radius, right_radius: r.right_radius,
  };
}

const fmt = (v, d = 1) => (v === null || v === undefined || Number.isNaN(v) ? "—" : Number(v).toFixed(d));
const clone = (o) => JSON.parse(JSON.stringify(o));
const dirty = () => state.kp && JSON.stringify(state.kp) !== JSON.stringify(state.original);

async function api(path, options = {}) {
  const headers = { "X-CSRF-Token": csrf, ...(options.headers || {}) };
  const resp = await fetch(path, { credentials: "same-origin", ...options, headers });
  const body = resp.headers.get("content-type")?.includes("json") ? await resp.json() : { error: await resp.text() };
  if (!resp.ok) throw new Error(body.error || resp.statusText);
  return body;
}

function say(text, kind = "") {
  const el = $("status-line");
  el.textContent = text;
  el.className = "status-line " + kind;
}

// --- the list -----------------------------------------------------------------------------------
function filterQuery() {
  const q = new URLSearchParams();
  if ($("min-delta").value) q.set("min_delta", $("min-delta").value);
  if ($("max-confidence").value) q.set("max_confidence", $("max-confidence").value);
  q.set("status", $("status").value);
  return q.toString();
}

let pollTimer = null;

// refresh the list (and, unless polling, open an image); polling while the model measures never
// touches the open image, so a drag in progress or unsaved edits survive it
async function loadList(keepKey, { poll = false } = {}) {
  const data = await api(`/api/jobs/${job}/items?${filterQuery()}`);
  state.items = data.items;
  $("progress").textContent = `${data.reviewed} / ${data.total} reviewed`;
  $("measure-status").textContent = data.measuring
    ? `measuring ${data.measuring[0]} / ${data.measuring[1]}…`
    : data.confidences ? `${data.confidences} measured` : "";
  clearTimeout(pollTimer);
  pollTimer = data.measuring ? setTimeout(() => loadList(null, { poll: true }).catch(() => {}), 1000) : null;
  renderList();
  if (poll) {
    state.index = state.item ? state.items.findIndex((it) => it.key === state.item.key) : -1;
    markCurrent();
    return;
  }
  let i = keepKey ? state.items.findIndex((it) => it.key === keepKey) : -1;
  if (i < 0) i = Math.max(0, state.items.findIndex((it) => !it.decision));
  if (state.items.length) await select(i, { force: true });
  else showEmpty();
}

function renderList() {
  const list = $("items");
  list.replaceChildren();
  state.items.forEach((it, i) => {
    const li = document.createElement("li");
    li.dataset.key = it.key;
    li.className = "item " + (it.decision || "pending");
    const delta = it.delta_deg === null ? "" : `Δ ${fmt(it.delta_deg)}°`;
    const conf = it.confidence === null ? "" : ` · conf ${fmt(it.confidence, 2)}`;
    li.innerHTML = `<span class="key"></span><span class="meta"></span>`;
    li.querySelector(".key").textContent = it.key;
    li.querySelector(".meta").textContent = `${fmt(it.na_left)}° / ${fmt(it.na_right)}°  ${delta}${conf}`;
    li.addEventListener("click", () => select(i));
    list.appendChild(li);
  });
}

function showEmpty() {
  state.item = null;
  $("overlay").replaceChildren();
  $("radiograph").removeAttribute("href");
  $("item-title").textContent = "No images match the filters";
}

function markCurrent() {
  document.querySelectorAll("#items li").forEach((li, i) => li.classList.toggle("current", i === state.index));
  document.querySelector("#items li.current")?.scrollIntoView({ block: "nearest" });
}

// --- one image ------------------------------------------------------------------------------------
let selecting = 0;

async function select(i, { force = false } = {}) {
  if (i < 0 || i >= state.items.length) return;
  if (!force && dirty()) {
    say("unsaved edits: press C to save them or Z to undo them first", "bad");
    return;
  }
  const key = state.items[i].key;
  const ticket = ++selecting;
  const item = await api(`/api/jobs/${job}/items/${encodeURIComponent(key)}`);
  if (ticket !== selecting) return; // a later selection won: never render an older answer over it
  state.index = i;
  state.item = item;
  state.kp = kpFromRecord(item.record);
  state.original = clone(state.kp);
  state.scale = item.image.scale;
  const svg = $("viewer");
  svg.setAttribute("viewBox", `0 0 ${item.image.width} ${item.image.height}`);
  const img = $("radiograph");
  img.setAttribute("width", item.image.width);
  img.setAttribute("height", item.image.height);
  img.setAttribute("href", `/api/jobs/${job}/items/${encodeURIComponent(key)}/image.png`);
  $("item-title").textContent = item.file_name;
  $("requested").textContent = item.requested ? `${fmt(item.requested[0])}° / ${fmt(item.requested[1])}°` : "—";
  $("measured").textContent = `${fmt(item.na_left)}° / ${fmt(item.na_right)}°`;
  $("delta").textContent = item.delta_deg === null ? "—" : `${fmt(item.delta_deg)}°`;
  $("confidence").textContent = item.confidence === null ? "not measured" : fmt(item.confidence, 2);
  $("decision").textContent = item.decision || "not reviewed";
  $("decision").className = "decision-" + (item.decision || "pending");
  renderHistory(item.history);
  buildOverlay();
  update();
  markCurrent();
  state.shownAt = performance.now();
  say("");
}

function renderHistory(history) {
  const ol = $("history");
  ol.replaceChildren();
  if (!history.length) {
    const li = document.createElement("li");
    li.className = "muted";
    li.textContent = "no decisions yet";
    ol.appendChild(li);
  }
  for (const e of history) {
    const li = document.createElement("li");
    const when = new Date(e.at * 1000).toLocaleString();
    const before = `${fmt(e.previous.na_left)}°/${fmt(e.previous.na_right)}°`;
    const after = `${fmt(e.record.na_left)}°/${fmt(e.record.na_right)}°`;
    li.textContent = `${when} · ${e.reviewer} · ${e.action}` + (e.action === "correct" ? ` · ${before} → ${after}` : "");
    ol.appendChild(li);
  }
}

function el(name, attrs, parent) {
  const e = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  parent.appendChild(e);
  return e;
}

// image units per screen pixel: handles and text keep one on-screen size whatever the image's size
function unitsPerPixel() {
  const svg = $("viewer"), vb = svg.viewBox.baseVal;
  if (!vb || !vb.width || !svg.clientWidth) return 1;
  return 1 / Math.min(svg.clientWidth / vb.width, svg.clientHeight / vb.height);
}

function buildOverlay() {
  const g = $("overlay");
  g.replaceChildren();
  for (const side of ["left", "right"]) {
    el("circle", { id: `${side}-circle`, class: `head-circle ${side}`, fill: "none" }, g);
    el("circle", { id: `${side}-ring`, class: `ring ${side}`, fill: "none", "data-radius": side }, g);
    el("line", { id: `${side}-rimline`, class: `rimline ${side}` }, g);
    el("text", { id: `${side}-label`, class: `angle-label ${side}`, "text-anchor": "middle" }, g);
  }
  el("line", { id: "headline", class: "headline" }, g);
  for (const name of POINTS) {
    el("circle", { id: `pt-${name}`, class: `handle ${name.split("_")[0]}`, "data-point": name, tabindex: 0 }, g);
  }
  g.querySelectorAll("[data-point], [data-radius]").forEach((h) => h.addEventListener("pointerdown", startDrag));
  sizeOverlay();
}

function sizeOverlay() {
  const u = unitsPerPixel();
  const g = $("overlay");
  g.querySelectorAll(".head-circle, .rimline, .headline").forEach((e) => e.setAttribute("stroke-width", 2 * u));
  g.querySelectorAll(".ring").forEach((e) => e.setAttribute("stroke-width", 12 * u));
  g.querySelectorAll(".handle").forEach((e) => { e.setAttribute("r", 7 * u); e.setAttribute("stroke-width", 2.5 * u); });
  g.querySelectorAll(".angle-label").forEach((e) => { e.setAttribute("font-size", 18 * u); e.setAttribute("stroke-width", 4 * u); });
  if (state.kp) update();
}
window.addEventListener("resize", sizeOverlay);

function update() {
  const s = state.scale, kp = state.kp;
  const d = (p) => [p[0] * s, p[1] * s];
  for (const side of ["left", "right"]) {
    const head = d(kp[`${side}_head`]), rim = d(kp[`${side}_rim`]), rad = kp[`${side}_radius`] * s;
    for (const id of [`${side}-circle`, `${side}-ring`]) {
      const c = $(id);
      c.setAttribute("cx", head[0]); c.setAttribute("cy", head[1]); c.setAttribute("r", rad);
    }
    const l = $(`${side}-rimline`);
    l.setAttribute("x1", head[0]); l.setAttribute("y1", head[1]); l.setAttribute("x2", rim[0]); l.setAttribute("y2", rim[1]);
  }
  const lh = d(kp.left_head), rh = d(kp.right_head);
  const hl = $("headline");
  hl.setAttribute("x1", lh[0]); hl.setAttribute("y1", lh[1]); hl.setAttribute("x2", rh[0]); hl.setAttribute("y2", rh[1]);
  for (const name of POINTS) {
    const p = d(kp[name]), h = $(`pt-${name}`);
    h.setAttribute("cx", p[0]); h.setAttribute("cy", p[1]);
  }
  const a = angles(kp);
  const u = unitsPerPixel();
  for (const side of ["left", "right"]) {
    const head = d(kp[`${side}_head`]), rad = kp[`${side}_radius`] * s;
    const t = $(`${side}-label`);
    t.setAttribute("x", head[0]); t.setAttribute("y", head[1] + rad + 24 * u); // under the head circle
    t.textContent = `${fmt(a[side])}°`;
    $(`na-${side}`).textContent = `${fmt(a[side])}°`;
    const big = a[side] >= 105;
    $(`class-${side}`).textContent = Number.isNaN(a[side]) ? "" : big ? "Big" : "Small";
    $(`class-${side}`).className = "cls " + (big ? "big" : "small");
  }
  const changed = dirty();
  $("correct").disabled = !changed;
  $("reset").disabled = !changed;
  document.body.classList.toggle("edited", changed);
}

// --- dragging -------------------------------------------------------------------------------------
function svgPoint(evt) {
  const svg = $("viewer");
  const pt = svg.createSVGPoint();
  pt.x = evt.clientX; pt.y = evt.clientY;
  const p = pt.matrixTransform(svg.getScreenCTM().inverse());
  return [p.x / state.scale, p.y / state.scale];
}

function startDrag(evt) {
  if (!state.item) return;
  evt.preventDefault();
  const target = evt.currentTarget;
  const point = target.dataset.point, radius = target.dataset.radius;
  target.setPointerCapture(evt.pointerId);
  const w = Number($("radiograph").getAttribute("width")) / state.scale;
  const h = Number($("radiograph").getAttribute("height")) / state.scale;
  const clamp = (p) => [Math.min(Math.max(p[0], 0), w), Math.min(Math.max(p[1], 0), h)];
  const move = (e) => {
    const p = clamp(svgPoint(e));
    if (point) state.kp[point] = p;
    else {
      const c = state.kp[`${radius}_head`];
      state.kp[`${radius}_radius`] = Math.max(1, Math.hypot(p[0] - c[0], p[1] - c[1]));
    }
    update();
  };
  const end = () => {
    target.removeEventListener("pointermove", move);
    target.removeEventListener("pointerup", end);
    target.removeEventListener("pointercancel", end);
  };
  target.addEventListener("pointermove", move);
  target.addEventListener("pointerup", end);
  target.addEventListener("pointercancel", end);
}

// --- decisions ------------------------------------------------------------------------------------
async function decide(action) {
  if (!state.item || state.busy) return;
  if (action === "accept" && dirty()) action = "correct"; // never drop an edit silently
  if (action === "correct" && !dirty()) return;
  state.busy = true;
  const body = { action, seconds: (performance.now() - state.shownAt) / 1000 };
  if (action === "correct") body.keypoints = state.kp;
  try {
    const key = state.item.key;
    const res = await api(`/api/jobs/${job}/items/${encodeURIComponent(key)}`, {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
    });
    say(`${key}: ${res.decision} saved to the dataset`, "ok");
    const row = state.items[state.index];
    row.decision = action;
    row.na_left = res.record.na_left; row.na_right = res.record.na_right;
    await loadList(nextPendingKey(key));
  } catch (err) {
    say(`not saved: ${err.message}`, "bad");
  } finally {
    state.busy = false;
  }
}

function nextPendingKey(after) {
  const i = state.items.findIndex((it) => it.key === after);
  const later = state.items.slice(i + 1).find((it) => !it.decision);
  const any = later || state.items.find((it) => !it.decision);
  return (any || state.items[Math.min(i + 1, state.items.length - 1)]).key;
}

function reset() {
  if (!state.original) return;
  state.kp = clone(state.original);
  update();
}

async function measure() {
  try {
    await api(`/api/jobs/${job}/measure`, { method: "POST" });
    await loadList(state.item?.key);
  } catch (err) {
    say(`measuring failed: ${err.message}`, "bad");
  }
}

document.addEventListener("keydown", (e) => {
  if (e.repeat || e.target.closest("input, select, textarea") || e.ctrlKey || e.metaKey || e.altKey) return;
  const k = e.key.toLowerCase();
  const handled = { a: () => decide("accept"), c: () => decide("correct"), r: () => decide("reject"), z: reset,
    arrowright: () => select(state.index + 1), arrowleft: () => select(state.index - 1),
    j: () => select(state.index + 1), k: () => select(state.index - 1) }[k];
  if (handled) { e.preventDefault(); handled(); }
});
$("accept").addEventListener("click", () => decide("accept"));
$("correct").addEventListener("click", () => decide("correct"));
$("reject").addEventListener("click", () => decide("reject"));
$("reset").addEventListener("click", reset);
$("measure").addEventListener("click", measure);
for (const id of ["min-delta", "max-confidence", "status"]) {
  $(id).addEventListener("change", () => loadList(state.item?.key).catch((err) => say(err.message, "bad")));
}
$("filters").addEventListener("submit", (e) => { e.preventDefault(); loadList(); });
loadList().catch((err) => say(err.message, "bad"));

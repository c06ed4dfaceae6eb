// Reader study: one image at a time; one click (or R/S then 1-5) answers real/synthetic with a
// confidence. The server times each answer from when it served the image.
"use strict";

const study = document.body.dataset.study;
const csrf = document.querySelector('meta[name="csrf-token"]').content;
const $ = (id) => document.getElementById(id);
let current = null, armed = null, busy = false, shown = false;

// an answer counts only for an image on screen: until the new one has loaded, clicks and keys wait
$("study-image").addEventListener("load", () => { shown = true; });

async function api(path, options = {}) {
  const resp = await fetch(path, { credentials: "same-origin", ...options, headers: { "X-CSRF-Token": csrf, ...(options.headers || {}) } });
  const body = await resp.json().catch(() => ({}));
  if (!resp.ok) throw new Error(body.error || resp.statusText);
  return body;
}

async function next() {
  const n = await api(`/api/study/${study}/next`);
  if (n.done) {
    $("study-body").classList.add("hidden");
    $("study-done").classList.remove("hidden");
    $("counter").textContent = `${n.answered} of ${n.total} answered`;
    $("meter-fill").style.width = "100%";
    current = null;
    return;
  }
  shown = false;
  current = n;
  armed = null;
  document.querySelectorAll(".answer-row").forEach((r) => r.classList.remove("armed"));
  $("study-image").src = n.image;
  $("counter").textContent = `image ${n.number} of ${n.total}`;
  $("meter-fill").style.width = `${(100 * (n.number - 1)) / n.total}%`;
}

async function answer(said, confidence) {
  if (!current || busy || !shown) return;
  busy = true;
  try {
    try {
      await api(`/api/study/${study}/answer`, {
        method: "POST", headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ item_id: current.item_id, said, confidence }),
      });
    } catch (err) {
      $("counter").textContent = `answer not saved: ${err.message}`;
      return;
    }
    try {
      await next();
    } catch (err) {
      $("counter").textContent = `answer saved; the next image did not load (${err.message}): reload the page`;
    }
  } finally {
    busy = false;
  }
}

document.querySelectorAll("button.conf").forEach((b) =>
  b.addEventListener("click", () => answer(b.dataset.said, Number(b.dataset.confidence))));
document.addEventListener("keydown", (e) => {
  if (e.repeat) return;
  const k = e.key.toLowerCase();
  if (k === "r" || k === "s") {
    armed = k === "r" ? "real" : "synthetic";
    document.querySelectorAll(".answer-row").forEach((r) => r.classList.toggle("armed", r.classList.contains(armed)));
  } else if (armed && /^[1-5]$/.test(k)) {
    answer(armed, Number(k));
  }
});
next().catch((err) => { $("counter").textContent = err.message; });

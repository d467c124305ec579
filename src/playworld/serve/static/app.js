// playworld play page: one WebSocket per tab; the protocol is documented in serve/app.py.
// Frames arrive as binary messages (12-byte header + raw RGB) and go straight into a canvas.
"use strict";

const $ = (id) => document.getElementById(id);
const FRAME_HEADER_BYTES = 12;
const DIRECTIONS = ["left", "right", "up", "down"];
// Keyboard roles, mapped onto the world's action labels by the words they contain
// (earlier words preferred), falling back to the lowest unused action id.
const KEY_ROLES = [
  { keys: ["ArrowLeft", "a"], glyph: "←", words: ["left", "west"] },
  { keys: ["ArrowRight", "d"], glyph: "→", words: ["right", "east"] },
  { keys: ["ArrowUp", "w"], glyph: "↑", words: ["up", "jump", "north", "forward"] },
  { keys: ["ArrowDown", "s"], glyph: "↓", words: ["down", "crouch", "south", "back"] },
  { keys: [" "], glyph: "Space", words: ["jump", "fire", "shoot", "action", "interact"] },
];
const NOOP_WORDS = /\b(still|stay|stays|no-?op|noop|idle|none|nothing|wait|stand)\b/i;

const state = {
  ws: null,
  hello: null,
  ready: false,
  inFlight: 0,           // step/reset requests awaiting their frame (we keep at most one)
  taps: [],              // key presses not yet stepped (so a quick tap always moves once)
  held: [],              // actions whose key/button is down, most recent last
  lastAction: null,
  idle: "pause",
  cap: 30,
  nextSend: 0,
  timer: null,
  frameTimes: [],
  stepMs: [],
  frames: 0,
  seq: 0,
  recording: false,
  recorded: 0,
  keyToAction: new Map(),
  buttons: [],
  prompt: null,
};

const canvas = $("screen");
const stage = $("stage");
const ctx = canvas.getContext("2d", { alpha: false });
let image = null;

// ---- connection ----------------------------------------------------------------------------
function connect() {
  setStatus("connecting", "connecting");
  $("overlay").hidden = true;
  const proto = location.protocol === "https:" ? "wss" : "ws";
  const ws = new WebSocket(`${proto}://${location.host}/ws`);
  ws.binaryType = "arraybuffer";
  state.ws = ws;
  state.ready = false;
  state.inFlight = 0;
  ws.onmessage = (ev) => (typeof ev.data === "string" ? onMessage(JSON.parse(ev.data)) : onFrame(ev.data));
  ws.onclose = () => {
    if (state.ws !== ws) return;
    state.ready = false;
    if ($("status").dataset.state !== "busy") {
      setStatus("closed", "disconnected");
      showOverlay("Disconnected", "The connection to the playworld server was lost. Is `playworld play` still running?");
      $("world-meta").textContent = "disconnected";
    }
  };
}

function send(msg) {
  if (state.ws && state.ws.readyState === WebSocket.OPEN) state.ws.send(JSON.stringify(msg));
}

function onMessage(msg) {
  switch (msg.type) {
    case "hello": return onHello(msg);
    case "busy":
      setStatus("busy", "busy");
      $("world-meta").textContent = "no free play session";
      showOverlay("Server busy", msg.message);
      return;
    case "reset":
      state.seq = 0;
      selectPrompt(msg.prompt);
      return;
    case "recording": return onRecording(msg);
    case "settings": $("maskgit").value = String(msg.maskgit_steps); return;
    case "error":
      if (msg.request === "step" || msg.request === "reset") state.inFlight = Math.max(0, state.inFlight - 1);
      toast(msg.message);
      pump();
      return;
    case "pong": return;
  }
}

function onHello(h) {
  state.hello = h;
  state.ready = true;
  setStatus("live", "live");
  const [fh, fw] = h.frame_size;
  $("world-meta").textContent = `${fw}×${fh} world · ${h.num_actions} latent actions`;
  $("stage").style.aspectRatio = `${fw} / ${fh}`;
  $("max-upload").textContent = Math.round(h.max_upload_bytes / 2 ** 20);
  const cap = h.fps_cap > 0 ? Math.round(h.fps_cap) : 60;
  $("fps-cap").max = cap;
  $("fps-cap").value = cap;
  setCap(cap);
  buildKeyMap(h.action_labels);
  buildActionButtons(h.action_labels);
  buildIdleSelect(h.action_labels);
  buildPrompts(h.prompts);
  buildMaskgitSelect(h.maskgit_steps);
}

function buildMaskgitSelect(current) {
  $("maskgit-field").hidden = current === null || current === undefined;
  if ($("maskgit-field").hidden) return;
  const sel = $("maskgit");
  sel.replaceChildren();
  const values = [...new Set([1, 2, 4, 8, 12, 25, current])].sort((a, b) => a - b);
  for (const v of values) {
    const o = document.createElement("option");
    o.value = String(v);
    o.textContent = `${v} MaskGIT step${v > 1 ? "s" : ""}${v === current ? " (the world's default)" : ""}`;
    sel.append(o);
  }
  sel.value = String(current);
}

// ---- frames ----------------------------------------------------------------------------------
function onFrame(buf) {
  const view = new DataView(buf);
  const seq = view.getUint32(0, true), h = view.getUint16(4, true), w = view.getUint16(6, true);
  const stepMs = view.getFloat32(8, true);
  const rgb = new Uint8Array(buf, FRAME_HEADER_BYTES);
  if (canvas.width !== w || canvas.height !== h || !image) {
    canvas.width = w;
    canvas.height = h;
    image = ctx.createImageData(w, h);
  }
  const px = image.data;
  for (let i = 0, j = 0, n = w * h * 4; i < n; i += 4, j += 3) {
    px[i] = rgb[j]; px[i + 1] = rgb[j + 1]; px[i + 2] = rgb[j + 2]; px[i + 3] = 255;
  }
  ctx.putImageData(image, 0, 0);

  const now = performance.now();
  state.frames += 1;
  state.seq = seq;
  state.frameTimes.push(now);
  if (seq > 0) state.stepMs.push(stepMs);
  if (state.stepMs.length > 30) state.stepMs.shift();
  if (state.recording) state.recorded += 1;
  $("frame-no").textContent = `frame ${seq}`;
  canvas.dataset.frames = String(state.frames);
  state.inFlight = Math.max(0, state.inFlight - 1);
  pump();
}

function updateHud() {
  const now = performance.now();
  while (state.frameTimes.length && now - state.frameTimes[0] > 1000) state.frameTimes.shift();
  const t = state.frameTimes;
  // frames in the last second; sub-integer precision once there are a few
  const fps = t.length >= 2 ? ((t.length - 1) * 1000) / Math.max(now - t[0], 1) : 0;
  $("fps-value").textContent = fps.toFixed(fps < 10 ? 1 : 0);
  if (state.stepMs.length) {
    const ms = state.stepMs.reduce((a, b) => a + b, 0) / state.stepMs.length;
    $("step-ms").textContent = `${ms.toFixed(1)} ms/step`;
  }
  if (state.recording) $("rec-count").textContent = state.recorded;
}
setInterval(updateHud, 250);

// ---- stepping: at most one request in flight, at most `cap` steps per second -----------------
function currentAction() {
  if (state.held.length) return state.held[state.held.length - 1];
  if (state.idle === "pause") return null;
  if (state.idle === "repeat") return state.lastAction;
  return Number(state.idle);
}

function pump() {
  if (!state.ready || state.inFlight > 0) return;
  const action = state.taps.length ? state.taps[0] : currentAction();
  if (action === null || action === undefined) return;
  const now = performance.now();
  const wait = state.nextSend - now;
  if (wait > 0) {
    if (!state.timer) state.timer = setTimeout(() => { state.timer = null; pump(); }, wait);
    return;
  }
  if (state.taps.length) state.taps.shift();
  state.inFlight += 1;
  // a fixed cadence (timer jitter is made up, at most one period's worth) instead of now + period
  const period = 1000 / state.cap;
  state.nextSend = Math.max(state.nextSend, now - period) + period;
  state.lastAction = action;
  send({ type: "step", action });
  state.buttons.forEach((b, i) => b.classList.toggle("last", i === action));
}

function press(action) {
  state.held = state.held.filter((a) => a !== action);
  state.held.push(action);
  if (state.taps.length < 4) state.taps.push(action);
  renderHeld();
  pump();
}

function release(action) {
  state.held = state.held.filter((a) => a !== action);
  renderHeld();
}

function renderHeld() {
  state.buttons.forEach((b, i) => b.classList.toggle("active", state.held.includes(i)));
}

function setCap(cap) {
  state.cap = Math.max(1, Number(cap));
  $("fps-cap-value").textContent = state.cap;
}

function reset(promptId) {
  if (!state.ready) return;
  state.taps = [];
  state.inFlight += 1;
  send(promptId ? { type: "reset", prompt: promptId } : { type: "reset" });
}

// ---- controls ----------------------------------------------------------------------------------
function labelHas(label, word) {
  return new RegExp(`(^|[^a-z])${word}([^a-z]|$)`, "i").test(label);
}

function buildKeyMap(labels) {
  const map = new Map();
  const used = new Set();
  const glyphs = labels.map(() => []);
  for (const role of KEY_ROLES) {
    let best = null, bestScore = Infinity;
    labels.forEach((label, i) => {
      if (used.has(i)) return;
      role.words.forEach((word, rank) => {
        if (!labelHas(label, word)) return;
        // prefer the role's first words and "pure" labels ("moves left" over "up-left")
        const score = rank * 10 + DIRECTIONS.filter((d) => labelHas(label, d)).length;
        if (score < bestScore) { best = i; bestScore = score; }
      });
    });
    if (best === null) best = labels.findIndex((_, i) => !used.has(i));
    if (best < 0) break;
    used.add(best);
    role.keys.forEach((k) => map.set(k, best));
    glyphs[best].push(role.glyph);
  }
  labels.forEach((_, i) => { if (i < 9) map.set(String(i + 1), i); });
  state.keyToAction = map;
  state.keyGlyphs = glyphs;
}

function buildActionButtons(labels) {
  const box = $("actions");
  box.replaceChildren();
  state.buttons = labels.map((label, i) => {
    const b = document.createElement("button");
    b.type = "button";
    b.className = "action";
    b.dataset.action = String(i);
    b.title = `latent action ${i}: ${label}`;
    const name = document.createElement("span");
    name.className = "label";
    name.textContent = label;
    const keys = document.createElement("span");
    keys.className = "keys";
    for (const k of [...(i < 9 ? [String(i + 1)] : []), ...state.keyGlyphs[i]]) {
      const kbd = document.createElement("kbd");
      kbd.textContent = k;
      keys.append(kbd);
    }
    b.append(name, keys);
    b.addEventListener("pointerdown", (e) => { e.preventDefault(); b.setPointerCapture(e.pointerId); press(i); });
    const up = () => release(i);
    b.addEventListener("pointerup", up);
    b.addEventListener("pointercancel", up);
    b.addEventListener("lostpointercapture", up);
    box.append(b);
    return b;
  });
}

function buildIdleSelect(labels) {
  const sel = $("idle");
  sel.replaceChildren();
  const opt = (value, text) => { const o = document.createElement("option"); o.value = value; o.textContent = text; sel.append(o); };
  opt("pause", "Pause the world");
  opt("repeat", "Keep doing the last action");
  labels.forEach((label, i) => opt(String(i), `Keep stepping: ${label}`));
  const noop = labels.findIndex((l) => NOOP_WORDS.test(l));
  state.idle = noop >= 0 ? String(noop) : "pause";
  sel.value = state.idle;
}

function buildPrompts(prompts) {
  const box = $("prompts");
  box.replaceChildren();
  for (const p of prompts) addPromptThumb(p.id, p.url, p.name);
  selectPrompt(state.prompt);
}

function addPromptThumb(id, url, name, first = false) {
  const b = document.createElement("button");
  b.type = "button";
  b.className = "prompt";
  b.dataset.prompt = id;
  b.title = name || id;
  const img = document.createElement("img");
  img.src = url;
  img.alt = name || id;
  b.append(img);
  b.addEventListener("click", () => reset(id));
  if (first) $("prompts").prepend(b); else $("prompts").append(b);
}

function selectPrompt(id) {
  state.prompt = id;
  for (const b of $("prompts").children) b.classList.toggle("selected", b.dataset.prompt === id);
}

function isTyping(e) {
  const t = e.target;
  return t && (t.tagName === "INPUT" && t.type !== "range" && t.type !== "file" || t.tagName === "TEXTAREA");
}

window.addEventListener("keydown", (e) => {
  if (isTyping(e) || e.ctrlKey || e.metaKey || e.altKey) return;
  const key = e.key.length === 1 ? e.key.toLowerCase() : e.key;
  if (key === "r") { e.preventDefault(); if (!e.repeat) reset(); return; }
  const action = state.keyToAction.get(key);
  if (action === undefined) return;
  e.preventDefault();  // arrows/space must not scroll the page or move a select
  if (!e.repeat) press(action);
});
window.addEventListener("keyup", (e) => {
  const key = e.key.length === 1 ? e.key.toLowerCase() : e.key;
  const action = state.keyToAction.get(key);
  if (action !== undefined) release(action);
});
window.addEventListener("blur", () => { state.held = []; renderHeld(); });

// after a click, keys go back to the world (so Space/arrows never re-press a focused button)
document.addEventListener("click", (e) => {
  if (e.target.closest("button:not(#overlay-retry)")) stage.focus({ preventScroll: true });
});
$("idle").addEventListener("change", (e) => { state.idle = e.target.value; e.target.blur(); pump(); });
$("maskgit").addEventListener("change", (e) => {
  send({ type: "settings", maskgit_steps: Number(e.target.value) });
  e.target.blur();
});
$("fps-cap").addEventListener("input", (e) => setCap(e.target.value));
$("reset").addEventListener("click", () => reset());
$("overlay-retry").addEventListener("click", () => connect());

// ---- prompts from files: upload, drag and drop, paste ------------------------------------------
async function uploadImage(file) {
  if (!file) return;
  const max = state.hello ? state.hello.max_upload_bytes : 10 * 2 ** 20;
  if (file.size > max) return toast(`That file is ${(file.size / 2 ** 20).toFixed(1)} MB; images up to ${Math.round(max / 2 ** 20)} MB are accepted.`);
  const form = new FormData();
  form.append("file", file, file.name || "pasted.png");
  let res, body;
  try {
    res = await fetch("/api/prompts", { method: "POST", body: form });
    body = await res.json();
  } catch (err) {
    return toast(`Upload failed: ${err}`);
  }
  if (!res.ok) return toast(body.error || `Upload failed (${res.status})`);
  addPromptThumb(body.id, URL.createObjectURL(file), file.name || "uploaded image", true);
  reset(body.id);
  toast("Image uploaded: the world now starts from it.", "info");
}

$("upload").addEventListener("change", (e) => { uploadImage(e.target.files[0]); e.target.value = ""; });
stage.addEventListener("dragover", (e) => { e.preventDefault(); $("drop-hint").hidden = false; });
stage.addEventListener("dragleave", () => { $("drop-hint").hidden = true; });
stage.addEventListener("drop", (e) => {
  e.preventDefault();
  $("drop-hint").hidden = true;
  uploadImage(e.dataTransfer.files[0]);
});
window.addEventListener("paste", (e) => {
  const item = [...(e.clipboardData?.items || [])].find((i) => i.type.startsWith("image/"));
  if (item) uploadImage(item.getAsFile());
});

// ---- recording ------------------------------------------------------------------------------------
function onRecording(msg) {
  state.recording = msg.on;
  state.recorded = msg.frames;
  $("record").setAttribute("aria-pressed", String(msg.on));
  $("record-text").textContent = msg.on ? "Stop recording" : "Start recording";
  $("rec-chip").hidden = !msg.on;
  $("rec-count").textContent = msg.frames;
  $("dl-gif").disabled = $("dl-mp4").disabled = msg.frames === 0;
  $("record-info").textContent = msg.on ? "Recording… play, then stop and download."
    : `${msg.frames} frames recorded.`;
  if (msg.reason) toast(msg.reason);
}

$("record").addEventListener("click", () => send({ type: "record", on: !state.recording }));

async function download(fmt, button) {
  if (!state.hello) return;
  const text = button.textContent;
  button.disabled = true;
  button.textContent = "Encoding…";
  try {
    const res = await fetch(`/api/sessions/${state.hello.session}/recording.${fmt}`);
    if (!res.ok) throw new Error((await res.json()).error || res.status);
    const url = URL.createObjectURL(await res.blob());
    const a = document.createElement("a");
    a.href = url;
    a.download = `playworld-${new Date().toISOString().replace(/[:.]/g, "-")}.${fmt}`;
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  } catch (err) {
    toast(`Download failed: ${err.message || err}`);
  } finally {
    button.textContent = text;
    button.disabled = false;
  }
}
$("dl-gif").addEventListener("click", (e) => download("gif", e.currentTarget));
$("dl-mp4").addEventListener("click", (e) => download("mp4", e.currentTarget));

// ---- little UI helpers -------------------------------------------------------------------------
function setStatus(kind, text) {
  $("status").dataset.state = kind;
  $("status-text").textContent = text;
}

function showOverlay(title, text) {
  $("overlay-title").textContent = title;
  $("overlay-text").textContent = text;
  $("overlay").hidden = false;
}

let toastTimer = null;
function toast(text, kind = "error") {
  const t = $("toast");
  t.textContent = text;
  t.className = `toast ${kind === "info" ? "info" : ""}`;
  t.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { t.hidden = true; }, 4000);
}

// for tests and the curious: window.playworld.state
window.playworld = { state };
connect();
stage.focus();

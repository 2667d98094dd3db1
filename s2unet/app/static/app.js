// s2unet label: the page. The server holds the masks; this draws them and sends edits.
// Coordinates sent to the server are pixel indices of the image (x = column, y = row).
"use strict";

const COLORS = [[255, 64, 64], [64, 200, 255], [255, 210, 0], [120, 255, 120], [255, 120, 255], [255, 150, 40]];
const $ = (id) => document.getElementById(id);
const S = {
  info: null, caseId: null, kind: "image", plane: 0, nSlices: 1, width: 0, height: 0,
  masks: [], image: null, scale: 1, drag: null, pending: 0, version: 0, conflict: false,
};

function setBusy(delta) {
  S.pending += delta;
  document.body.dataset.busy = S.pending > 0 ? "1" : "0";
  if (delta < 0) document.body.dataset.version = String(++S.version);
}

function message(text, kind = "info", action = null) {
  const el = $("message");
  el.textContent = text || "";
  el.className = text ? kind : "";
  if (action) {
    const b = document.createElement("button");
    b.textContent = action.label;
    b.id = action.id;
    b.onclick = action.run;
    el.appendChild(b);
  }
}

async function call(path, body) {
  setBusy(1);
  try {
    const r = await fetch(path, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
    const data = await r.json().catch(() => ({ detail: `${r.status} ${r.statusText}` }));
    if (!r.ok) {
      const err = new Error(typeof data.detail === "string" ? data.detail : JSON.stringify(data.detail));
      err.status = r.status;
      err.confirm = data.confirm;
      throw err;
    }
    return data;
  } finally {
    setBusy(-1);
  }
}

function where() {
  return { case: S.caseId, plane: S.plane, layer: Number($("layer").value || 0), window: $("window").value || "auto" };
}

function decodeMask(b64) {
  return new Promise((resolve, reject) => {
    const img = new Image();
    img.onload = () => {
      const c = document.createElement("canvas");
      c.width = img.width; c.height = img.height;
      const g = c.getContext("2d");
      g.drawImage(img, 0, 0);
      const px = g.getImageData(0, 0, img.width, img.height).data;
      const out = new Uint8Array(img.width * img.height);
      for (let i = 0; i < out.length; i++) out[i] = px[i * 4] > 127 ? 1 : 0;
      resolve(out);
    };
    img.onerror = () => reject(new Error("mask could not be decoded"));
    img.src = "data:image/png;base64," + b64;
  });
}

async function applyState(st) {
  if (st.case !== S.caseId || st.plane !== S.plane) return;
  S.masks = await Promise.all(st.masks.map(decodeMask));
  $("undo").disabled = !st.can_undo;
  $("redo").disabled = !st.can_redo;
  const s = st.stats;
  $("stats").textContent = `clicks ${s.clicks} · strokes ${s.strokes} · boxes ${s.boxes} · ${s.seconds} s` +
    (st.seconds !== undefined ? ` · last answer ${st.seconds.toFixed(2)} s` : "");
  $("labelled").checked = st.labelled;
  $("labelled-count").textContent = `${st.n_labelled} of ${S.nSlices} slices labelled`;
  if (st.note) message(st.note, "info");
  render();
}

function loadImage() {
  return new Promise((resolve) => {
    setBusy(1);
    const img = new Image();
    img.onload = () => { S.image = img; setBusy(-1); fit(); render(); resolve(); };
    img.onerror = () => { setBusy(-1); message(`image of ${S.caseId} could not be shown`, "error"); resolve(); };
    const q = new URLSearchParams({ case: S.caseId, plane: S.plane, window: $("window").value || "auto", t: Date.now() });
    img.src = "/api/image?" + q;
  });
}

function fit() {
  const availW = window.innerWidth - 40, availH = window.innerHeight - 170;
  S.scale = Math.max(0.1, Math.min(availW / S.width, availH / S.height, 2));
  const c = $("canvas");
  c.width = Math.round(S.width * S.scale);
  c.height = Math.round(S.height * S.scale);
  c.dataset.scale = String(S.scale);
  c.dataset.width = String(S.width);
  c.dataset.height = String(S.height);
}

function overlay() {
  const w = S.width, h = S.height, alpha = Number($("opacity").value) / 100;
  const outline = $("view").value === "outline";
  const data = new ImageData(w, h);
  const active = Number($("layer").value || 0);
  const order = S.masks.map((_, i) => i).filter((i) => i !== active).concat([active]);
  for (const li of order) {
    const m = S.masks[li];
    if (!m) continue;
    const [r, g, b] = COLORS[li % COLORS.length];
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) {
        const i = y * w + x;
        if (!m[i]) continue;
        if (outline) {
          const edge = x === 0 || y === 0 || x === w - 1 || y === h - 1 || !m[i - 1] || !m[i + 1] || !m[i - w] || !m[i + w];
          if (!edge) continue;
        }
        const o = i * 4;
        data.data[o] = r; data.data[o + 1] = g; data.data[o + 2] = b;
        data.data[o + 3] = Math.round(255 * (outline ? Math.max(alpha, 0.6) : alpha));
      }
    }
  }
  const c = document.createElement("canvas");
  c.width = w; c.height = h;
  c.getContext("2d").putImageData(data, 0, 0);
  return c;
}

function render() {
  const c = $("canvas"), g = c.getContext("2d");
  g.imageSmoothingEnabled = false;
  g.clearRect(0, 0, c.width, c.height);
  if (S.image) g.drawImage(S.image, 0, 0, c.width, c.height);
  if (S.masks.length) g.drawImage(overlay(), 0, 0, c.width, c.height);
  const d = S.drag;
  if (!d) return;
  const [r, gr, b] = COLORS[Number($("layer").value || 0) % COLORS.length];
  if (d.tool === "box") {
    g.strokeStyle = "rgb(255,255,0)"; g.lineWidth = 2;
    const [x0, y0] = toCanvas(d.points[0]), [x1, y1] = toCanvas(d.points[d.points.length - 1]);
    g.strokeRect(Math.min(x0, x1), Math.min(y0, y1), Math.abs(x1 - x0), Math.abs(y1 - y0));
  } else if (d.tool === "brush" || d.tool === "eraser") {
    g.fillStyle = d.tool === "eraser" ? "rgba(0,0,0,0.6)" : `rgba(${r},${gr},${b},0.8)`;
    const rad = Number($("size").value) * S.scale;
    for (const p of d.points) {
      const [cx, cy] = toCanvas(p);
      g.beginPath(); g.arc(cx, cy, rad, 0, 2 * Math.PI); g.fill();
    }
  }
}

function toPixel(e) {
  const rect = $("canvas").getBoundingClientRect();
  return [(e.clientX - rect.left) / S.scale - 0.5, (e.clientY - rect.top) / S.scale - 0.5];
}
function toCanvas(p) { return [(p[0] + 0.5) * S.scale, (p[1] + 0.5) * S.scale]; }
function tool() { return document.querySelector("input[name=tool]:checked").value; }

async function run(promise) {
  setBusy(1);  // busy until the answer is drawn, not only received
  try {
    const st = await promise;
    if (st && st.masks) await applyState(st);
    return st;
  } catch (err) {
    message(err.message, "error");
    return null;
  } finally {
    setBusy(-1);
  }
}

function onDown(e) {
  if (!S.caseId || !S.image) return;
  e.preventDefault();
  $("canvas").setPointerCapture(e.pointerId);
  S.drag = { tool: tool(), button: e.button, shift: e.shiftKey, points: [toPixel(e)] };
  render();
}

function onMove(e) {
  if (!S.drag) return;
  const p = toPixel(e), last = S.drag.points[S.drag.points.length - 1];
  if (Math.hypot(p[0] - last[0], p[1] - last[1]) >= 1) { S.drag.points.push(p); render(); }
}

function onUp(e) {
  const d = S.drag;
  S.drag = null;
  if (!d) return;
  e.preventDefault();
  if (d.tool === "click") {
    const [x, y] = d.points[0];
    const add = d.button === 0 && !d.shift;
    message(add ? "adding..." : "removing...", "info");
    run(call("/api/click", { ...where(), x, y, add })).then((st) => { if (st && !st.note) message(""); });
  } else if (d.tool === "box") {
    const a = d.points[0], b = d.points[d.points.length - 1];
    message("segmenting the box...", "info");
    run(call("/api/box", { ...where(), box: [a[0], a[1], b[0], b[1]] })).then((st) => { if (st && !st.note) message(""); });
  } else {
    run(call("/api/stroke", { ...where(), points: d.points, radius: Number($("size").value), erase: d.tool === "eraser" }));
  }
  render();
}

async function openCase(id, plane = 0) {
  S.caseId = id;
  S.masks = [];
  message("");
  let st;
  try {
    st = await call("/api/open", { case: id, plane });
  } catch (err) {
    S.image = null;
    render();
    message(err.message, "error");
    return;
  }
  S.kind = st.kind; S.nSlices = st.n_slices; S.width = st.width; S.height = st.height; S.plane = st.plane;
  $("volume-bar").hidden = st.kind !== "volume";
  const shown = $("window").value;  // kept when this case offers it (HU presets only on HU data)
  $("window").replaceChildren(...st.windows.map((w) => new Option(w, w)));
  if (st.windows.includes(shown)) $("window").value = shown;
  $("slice").max = String(st.n_slices - 1);
  $("slice").value = String(st.plane);
  $("slice-value").textContent = String(st.plane);
  fit();
  await loadImage();
  await applyState(st);
}

async function goToPlane(k) {
  if (!S.caseId || S.kind !== "volume") return;
  S.plane = Math.max(0, Math.min(S.nSlices - 1, k));
  $("slice").value = String(S.plane);
  $("slice-value").textContent = String(S.plane);
  await loadImage();
  await run(call("/api/plane", where()));
}

function stepCase(delta) {
  const sel = $("case");
  const i = Math.max(0, Math.min(sel.options.length - 1, sel.selectedIndex + delta));
  sel.selectedIndex = i;
  openCase(sel.value);
}

async function save(overwrite = false) {
  if (!S.caseId) return;
  try {
    const r = await call("/api/save", { case: S.caseId, overwrite });
    message(`saved ${r.saved.join(", ")}` + (r.note ? ` (${r.note})` : ""), r.note ? "error" : "info");
    const opt = [...$("case").options].find((o) => o.value === S.caseId);
    if (opt && !opt.text.endsWith(" ✓")) opt.text += " ✓";
  } catch (err) {
    if (err.status === 409) {
      message(`${err.message}. Replace them?`, "error", { label: "Overwrite", id: "overwrite", run: () => save(true) });
    } else {
      message(err.message, "error");
    }
  }
}

// The server answered ?token= with a cookie that carries it from now on: drop it from the
// address bar and the history, where anyone looking over the shoulder or at the history sees it.
function forgetToken() {
  const url = new URL(window.location.href);
  if (!url.searchParams.has("token")) return;
  url.searchParams.delete("token");
  history.replaceState(history.state, "", url.pathname + url.search + url.hash);
}

async function start() {
  forgetToken();
  setBusy(1);
  try {
    const r = await fetch("/api/info");
    const info = await r.json();
    if (!r.ok) { message(info.detail || "the app did not answer", "error"); return; }
    S.info = info;
    for (const c of info.cases) $("case").add(new Option(c.id + (c.saved ? " ✓" : ""), c.id));
    info.layers.forEach((name, i) => $("layer").add(new Option(name, String(i))));
    $("draft").disabled = !info.checkpoint;
    $("text-box").hidden = !info.text;
    if (!info.prompted) for (const v of ["click", "box"]) document.querySelector(`input[value=${v}]`).disabled = true;
    if (!info.prompted) document.querySelector("input[value=brush]").checked = true;
    if (info.problems.length) message(info.problems.join(" | "), "error");
    if (info.cases.length) await openCase(info.cases[0].id);
    if (info.problems.length) message(info.problems.join(" | "), "error");
  } finally {
    setBusy(-1);
  }
}

function bind() {
  const c = $("canvas");
  c.addEventListener("pointerdown", onDown);
  c.addEventListener("pointermove", onMove);
  c.addEventListener("pointerup", onUp);
  c.addEventListener("contextmenu", (e) => e.preventDefault());
  $("case").onchange = () => openCase($("case").value);
  $("prev").onclick = () => stepCase(-1);
  $("next").onclick = () => stepCase(1);
  $("layer").onchange = render;
  $("view").onchange = render;
  $("opacity").oninput = () => { $("opacity-value").textContent = $("opacity").value; render(); };
  $("size").oninput = () => { $("size-value").textContent = $("size").value; };
  $("slice").oninput = () => goToPlane(Number($("slice").value));
  $("window").onchange = () => loadImage();
  $("undo").onclick = () => run(call("/api/undo", where()));
  $("redo").onclick = () => run(call("/api/redo", where()));
  $("save").onclick = () => save(false);
  $("labelled").onchange = () => run(call("/api/mark", { ...where(), labelled: $("labelled").checked }));
  $("mark-all").onclick = () => run(call("/api/mark", { ...where(), labelled: true, all_slices: true }));
  $("draft").onclick = () => { message("drafting...", "info"); run(call("/api/draft", where())).then((st) => { if (st) message(""); }); };
  $("ask").onclick = () => {
    const phrase = $("phrase").value.trim();
    if (!phrase) { message("type what to segment, e.g. heart", "error"); return; }
    message("asking the model...", "info");
    run(call("/api/text", { ...where(), phrase }));  // the answer's note says which structure it was taken as
  };
  $("phrase").addEventListener("keydown", (e) => { if (e.key === "Enter") $("ask").click(); });
  window.addEventListener("resize", () => { if (S.caseId) { fit(); render(); } });
  document.addEventListener("keydown", (e) => {
    if (e.target.tagName === "SELECT" || e.target.tagName === "INPUT" && !["radio", "range", "checkbox"].includes(e.target.type)) return;
    const key = e.key.toLowerCase();
    if ((e.ctrlKey || e.metaKey) && key === "z") { e.preventDefault(); $(e.shiftKey ? "redo" : "undo").click(); }
    else if ((e.ctrlKey || e.metaKey) && key === "y") { e.preventDefault(); $("redo").click(); }
    else if ((e.ctrlKey || e.metaKey) && key === "s") { e.preventDefault(); save(false); }
    else if (e.key === "ArrowUp" || e.key === "PageUp") { e.preventDefault(); goToPlane(S.plane + 1); }
    else if (e.key === "ArrowDown" || e.key === "PageDown") { e.preventDefault(); goToPlane(S.plane - 1); }
    else if (key === "l" && S.kind === "volume") $("labelled").click();
    else if (e.key === ",") stepCase(-1);
    else if (e.key === ".") stepCase(1);
    else if (e.key === "[" || e.key === "]") {
      const s = $("size");
      s.value = String(Number(s.value) + (e.key === "]" ? 1 : -1));
      s.oninput();
    } else {
      const t = { c: "click", x: "box", b: "brush", e: "eraser" }[key];
      const input = t && document.querySelector(`input[value=${t}]`);
      if (input && !input.disabled) input.checked = true;
    }
  });
}

bind();
start();

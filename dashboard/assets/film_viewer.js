// Film viewer (a Streamlit v2 component): the original film and its heatmap overlay in panels that
// zoom and pan together on both axes; window/level on the film's full bit depth, invert, full
// screen. The data is one byte string (dashboard/viewer.py, viewer_payload): a little-endian
// uint32 header length, the JSON header, the display pixels (uint8 or uint16, row-major), then the
// heatmap grid (uint8, 0..255 for 0..1) when there is one.
//
// Mouse: wheel zooms around the pointer, drag pans, right-drag (or Alt+drag) sets the window
// (left/right: width, up/down: level), double-click resets. Keys (viewer focused): i invert,
// r reset, f full screen, + / - zoom. State is kept per film (header.id) across Python reruns.

const STATES = new WeakMap();
const FULL_ICON =
  '<svg width="14" height="14" viewBox="0 0 14 14" fill="none" stroke="currentColor" stroke-width="2"' +
  ' aria-hidden="true"><path d="M1 5V1h4M9 1h4v4M13 9v4H9M5 13H1V9"/></svg>';
const VIEWS = new Map(); // film id -> {zoom, cx, cy, level, width}: survives heatmap redraws
const ZOOM_STEP = 1.2;
const MAX_ZOOM = 40;
const INFERNO = [
  [0, 0, 4], [22, 11, 57], [66, 10, 104], [106, 23, 110], [147, 38, 103], [188, 55, 84],
  [221, 81, 58], [243, 120, 25], [252, 165, 10], [246, 215, 70], [252, 255, 164],
];

function parse(bytes) {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const length = view.getUint32(0, true);
  const header = JSON.parse(new TextDecoder().decode(bytes.subarray(4, 4 + length)));
  const count = header.width * header.height;
  const size = count * (header.bits / 8);
  let at = 4 + length;
  const raw = bytes.slice(at, at + size); // a copy: aligned for Uint16Array
  at += size;
  const pixels = header.bits === 16 ? new Uint16Array(raw.buffer, 0, count) : raw;
  const heat = header.heat ? bytes.slice(at, at + header.heat.width * header.heat.height) : null;
  return { header, pixels, heat };
}

function el(tag, attrs = {}, children = []) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "text") node.textContent = v;
    else node.setAttribute(k, v);
  }
  for (const child of children) node.appendChild(child);
  return node;
}

function button(label, text, title) {
  return el("button", { type: "button", "aria-label": label, title: title || label, text });
}

function build(parent) {
  const presets = el("select", { "aria-label": "Window preset", class: "preset" });
  const level = el("input", { type: "number", "aria-label": "Level", class: "num" });
  const width = el("input", { type: "number", "aria-label": "Width", class: "num" });
  const panels = el("select", { "aria-label": "Panels", class: "panels-pick" }, [
    el("option", { value: "both", text: "Film + map" }),
    el("option", { value: "film", text: "Film" }),
    el("option", { value: "overlay", text: "Overlay" }),
  ]);
  const invert = button("Invert", "◐", "Invert (i)");
  invert.setAttribute("aria-pressed", "false");
  const zoomOut = button("Zoom out", "−", "Zoom out (-)");
  const zoomIn = button("Zoom in", "+", "Zoom in (+)");
  const reset = button("Reset", "⟲", "Reset zoom, pan and window (r)");
  const full = button("Full screen", "", "Full screen (f)");
  full.innerHTML = FULL_ICON;
  const toolbar = el("div", { class: "toolbar" }, [
    presets,
    el("label", { class: "field", title: "Level: the window's centre" }, [el("span", { text: "L" }), level]),
    el("label", { class: "field", title: "Width of the window" }, [el("span", { text: "W" }), width]),
    invert,
    panels,
    zoomOut,
    zoomIn,
    reset,
    full,
  ]);
  const stage = el("div", { class: "stage" });
  const readout = el("div", { class: "readout", "aria-live": "off" });
  const root = el("div", { class: "cxr-viewer", tabindex: "0" }, [toolbar, stage, readout]);
  parent.appendChild(root);
  return { root, toolbar, stage, readout, presets, level, width, invert, panels, reset, zoomIn, zoomOut, full };
}

function makePanel(title) {
  const canvas = el("canvas");
  const label = el("div", { class: "title" });
  label.textContent = title;
  const panel = el("div", { class: "panel" }, [canvas, label]);
  return { panel, canvas, label };
}

function lut(st) {
  const { header } = st.film;
  const levels = header.bits === 16 ? 65536 : 256;
  const scale = header.max_value / (levels - 1);
  const low = st.view.level - st.view.width / 2;
  const width = Math.max(st.view.width, 1e-6);
  const table = new Uint32Array(levels);
  for (let q = 0; q < levels; q++) {
    let v = Math.round(Math.min(Math.max((q * scale - low) / width, 0), 1) * 255);
    if (st.invert) v = 255 - v;
    table[q] = 0xff000000 | (v << 16) | (v << 8) | v;
  }
  return table;
}

function renderFilm(st) {
  const { header, pixels } = st.film;
  if (!st.filmCanvas) {
    st.filmCanvas = document.createElement("canvas");
    st.filmCanvas.width = header.width;
    st.filmCanvas.height = header.height;
    st.filmImage = st.filmCanvas.getContext("2d").createImageData(header.width, header.height);
  }
  const table = lut(st);
  const out = new Uint32Array(st.filmImage.data.buffer);
  for (let i = 0; i < pixels.length; i++) out[i] = table[pixels[i]];
  st.filmCanvas.getContext("2d").putImageData(st.filmImage, 0, 0);
}

function inferno(t) {
  const x = Math.min(Math.max(t, 0), 1) * (INFERNO.length - 1);
  const i = Math.min(Math.floor(x), INFERNO.length - 2);
  const f = x - i;
  return INFERNO[i].map((c, k) => Math.round(c + (INFERNO[i + 1][k] - c) * f));
}

function renderHeat(st) {
  const { header, heat } = st.film;
  st.heatCanvas = null;
  st.contour = null;
  if (!heat) return;
  const { width: gw, height: gh, mode, level, floor } = header.heat;
  if (mode === "heat") {
    const canvas = document.createElement("canvas");
    canvas.width = gw;
    canvas.height = gh;
    const ctx = canvas.getContext("2d");
    const image = ctx.createImageData(gw, gh);
    for (let i = 0; i < heat.length; i++) {
      const t = heat[i] / 255;
      const [r, g, b] = inferno(t);
      image.data.set([r, g, b, t >= floor ? 255 : 0], 4 * i);
    }
    ctx.putImageData(image, 0, 0);
    st.heatCanvas = canvas;
  } else {
    st.contour = contourSegments(heat, gw, gh, level, header.width / gw, header.height / gh);
  }
}

// Marching squares: the line where the map crosses `level`, as segments in film pixels (grid
// cell k centred on (k + 0.5) * scale).
function contourSegments(z, gw, gh, level, sx, sy) {
  const out = [];
  const v = (x, y) => z[y * gw + x] / 255;
  const cross = (a, b) => (a === b ? 0.5 : (level - a) / (b - a));
  for (let y = 0; y < gh - 1; y++) {
    for (let x = 0; x < gw - 1; x++) {
      const a = v(x, y), b = v(x + 1, y), c = v(x + 1, y + 1), d = v(x, y + 1);
      const code = (a >= level ? 8 : 0) | (b >= level ? 4 : 0) | (c >= level ? 2 : 0) | (d >= level ? 1 : 0);
      if (code === 0 || code === 15) continue;
      const top = [x + cross(a, b), y], right = [x + 1, y + cross(b, c)];
      const bottom = [x + cross(d, c), y + 1], left = [x, y + cross(a, d)];
      const pairs = {
        1: [[left, bottom]], 2: [[bottom, right]], 3: [[left, right]], 4: [[top, right]],
        5: [[left, top], [bottom, right]], 6: [[top, bottom]], 7: [[left, top]], 8: [[left, top]],
        9: [[top, bottom]], 10: [[top, right], [left, bottom]], 11: [[top, right]], 12: [[left, right]],
        13: [[bottom, right]], 14: [[left, bottom]],
      }[code];
      for (const [p, q] of pairs) {
        out.push((p[0] + 0.5) * sx, (p[1] + 0.5) * sy, (q[0] + 0.5) * sx, (q[1] + 0.5) * sy);
      }
    }
  }
  return new Float32Array(out);
}

function fitScale(st, panel) {
  const { header } = st.film;
  return Math.min(panel.clientWidth / header.width, panel.clientHeight / header.height);
}

function drawPanel(st, p, withHeat) {
  const { header } = st.film;
  const dpr = window.devicePixelRatio || 1;
  const w = p.panel.clientWidth, h = p.panel.clientHeight;
  if (p.canvas.width !== Math.round(w * dpr) || p.canvas.height !== Math.round(h * dpr)) {
    p.canvas.width = Math.round(w * dpr);
    p.canvas.height = Math.round(h * dpr);
  }
  const ctx = p.canvas.getContext("2d");
  ctx.setTransform(1, 0, 0, 1, 0, 0);
  ctx.fillStyle = "#000";
  ctx.fillRect(0, 0, p.canvas.width, p.canvas.height);
  const s = fitScale(st, p.panel) * st.view.zoom;
  const ox = w / 2 - st.view.cx * s, oy = h / 2 - st.view.cy * s;
  ctx.setTransform(dpr * s, 0, 0, dpr * s, dpr * ox, dpr * oy);
  ctx.imageSmoothingEnabled = st.view.zoom * fitScale(st, p.panel) < 2;
  ctx.drawImage(st.filmCanvas, 0, 0);
  if (withHeat && st.heatCanvas) {
    ctx.globalAlpha = header.heat.opacity;
    ctx.imageSmoothingEnabled = true;
    ctx.drawImage(st.heatCanvas, 0, 0, header.width, header.height);
    ctx.globalAlpha = 1;
  }
  if (withHeat && st.contour) strokeSegments(ctx, st.contour, header.heat.colour, 3 / s);
  for (const line of header.lungs || []) strokeLine(ctx, line, header.lung_colour, 2 / s);
  // What this panel shows, in film pixels: the browser test checks the panels agree.
  p.panel.dataset.view = [-ox / s, -oy / s, (w - ox) / s, (h - oy) / s].map((t) => t.toFixed(1)).join(",");
}

function strokeSegments(ctx, seg, colour, width) {
  ctx.beginPath();
  for (let i = 0; i < seg.length; i += 4) {
    ctx.moveTo(seg[i], seg[i + 1]);
    ctx.lineTo(seg[i + 2], seg[i + 3]);
  }
  ctx.strokeStyle = colour;
  ctx.lineWidth = width;
  ctx.stroke();
}

function strokeLine(ctx, points, colour, width) {
  ctx.beginPath();
  for (let i = 0; i < points.length; i += 2) {
    if (i === 0) ctx.moveTo(points[i], points[i + 1]);
    else ctx.lineTo(points[i], points[i + 1]);
  }
  ctx.closePath();
  ctx.strokeStyle = colour;
  ctx.lineWidth = width;
  ctx.stroke();
}

function shownPanels(st) {
  const heat = Boolean(st.film.heat);
  const mode = heat ? st.ui.panels.value : "film";
  if (mode === "overlay") return [[st.panelA, true]];
  if (mode === "film" || !heat) return [[st.panelA, false]];
  return [[st.panelA, false], [st.panelB, true]];
}

const NARROW_PX = 520; // below this, one panel (the overlay) unless the reader chose otherwise
const MIN_PX = 300;

function layout(st) {
  const { header } = st.film;
  if (!st.panelsChosen) st.ui.panels.value = st.ui.stage.clientWidth < NARROW_PX ? "overlay" : "both";
  const shown = shownPanels(st);
  st.panelB.panel.style.display = shown.length > 1 ? "" : "none";
  st.panelA.label.textContent = shown[0][1] ? header.titles[1] || "" : header.titles[0];
  const full = isFull(st);
  const gap = 6;
  const width = (st.ui.stage.clientWidth - gap * (shown.length - 1)) / shown.length;
  const tools = st.ui.toolbar.offsetHeight + st.ui.readout.offsetHeight + 12;
  const fitted = (width * header.height) / header.width;
  // Outside full screen the film ends above the bottom of the window where it can (never below MIN_PX).
  const top = st.ui.stage.getBoundingClientRect().top + window.scrollY;
  const room = Math.max(MIN_PX, window.innerHeight - top - st.ui.readout.offsetHeight - 16);
  const height = full ? window.innerHeight - tools : Math.min(fitted, header.max_height, room);
  st.ui.stage.style.height = `${Math.max(120, Math.round(height))}px`;
  draw(st);
}

function draw(st) {
  if (st.frame) return;
  st.frame = requestAnimationFrame(() => {
    st.frame = 0;
    if (st.dirtyFilm) {
      renderFilm(st);
      st.dirtyFilm = false;
    }
    const shown = shownPanels(st);
    for (const [p, heat] of shown) drawPanel(st, p, heat);
    syncControls(st);
    // For tests and the benchmark: which film, with or without its heatmap, is on screen.
    st.ui.root.dataset.drawn = `${st.film.header.id}:${shown.some(([, heat]) => heat) ? "heat" : "film"}`;
  });
}

function rounded(value) {
  return Math.round(value * 10) / 10;
}

function syncControls(st) {
  const { ui, view } = st;
  const focused = ui.root.getRootNode().activeElement; // the document only sees the shadow host
  if (focused !== ui.level) ui.level.value = rounded(view.level);
  if (focused !== ui.width) ui.width.value = rounded(view.width);
  ui.invert.setAttribute("aria-pressed", String(st.invert));
  const d = ui.root.dataset;
  d.film = st.film.header.id;
  d.zoom = view.zoom.toFixed(3);
  d.level = view.level.toFixed(1);
  d.width = view.width.toFixed(1);
  d.invert = String(st.invert);
  d.fullscreen = String(isFull(st));
}

function defaultView(header) {
  return {
    zoom: 1,
    cx: header.width / 2,
    cy: header.height / 2,
    level: header.window[0],
    width: header.window[1],
  };
}

function setFilm(st, data) {
  const film = parse(data);
  const sameFilm = st.film && st.film.header.id === film.header.id;
  const sameSize = st.film && st.film.header.width === film.header.width && st.film.header.height === film.header.height;
  if (!sameSize) st.filmCanvas = null;
  st.film = film;
  st.view = VIEWS.get(film.header.id) || (sameFilm ? st.view : defaultView(film.header));
  VIEWS.set(film.header.id, st.view);
  st.ui.presets.replaceChildren(
    el("option", { value: "", text: "Window preset…" }),
    ...film.header.presets.map(([name], i) => el("option", { value: String(i), text: name })),
  );
  st.ui.level.step = st.ui.width.step = String(film.header.max_value > 255 ? 1 : 0.5);
  st.ui.level.title = st.ui.width.title = `Window in ${film.header.unit} (0–${film.header.max_value})`;
  st.panelA.label.textContent = film.header.titles[0];
  st.panelB.label.textContent = film.header.titles[1] || "";
  st.ui.panels.disabled = !film.heat;
  st.dirtyFilm = true;
  renderHeat(st);
  layout(st);
}

function pointer(st, event) {
  const target = event.currentTarget;
  const rect = target.getBoundingClientRect();
  const s = fitScale(st, target) * st.view.zoom;
  const mx = event.clientX - rect.left, my = event.clientY - rect.top;
  return { mx, my, s, x: (mx - rect.width / 2) / s + st.view.cx, y: (my - rect.height / 2) / s + st.view.cy, rect };
}

function zoomAt(st, factor, event) {
  const view = st.view;
  const zoom = Math.min(Math.max(view.zoom * factor, 1), MAX_ZOOM);
  if (event) {
    const p = pointer(st, event);
    const s2 = (p.s / view.zoom) * zoom;
    view.cx = p.x - (p.mx - p.rect.width / 2) / s2;
    view.cy = p.y - (p.my - p.rect.height / 2) / s2;
  }
  view.zoom = zoom;
  if (zoom === 1) Object.assign(view, { cx: st.film.header.width / 2, cy: st.film.header.height / 2 });
  draw(st);
}

function readout(st, event) {
  const { header, pixels } = st.film;
  const p = pointer(st, event);
  const x = Math.floor(p.x), y = Math.floor(p.y);
  const inside = x >= 0 && y >= 0 && x < header.width && y < header.height;
  const levels = header.bits === 16 ? 65535 : 255;
  const value = inside ? (pixels[y * header.width + x] * header.max_value) / levels : null;
  const sx = header.source[0] / header.width, sy = header.source[1] / header.height;
  st.ui.readout.textContent =
    (inside ? `x ${Math.floor(x * sx)}, y ${Math.floor(y * sy)} · value ${value.toFixed(header.max_value > 255 ? 0 : 1)} · ` : "") +
    `zoom ${Math.round(st.view.zoom * 100)}% · ${st.help}`;
}

function attachPanel(st, p) {
  const c = p.panel;
  c.addEventListener("wheel", (e) => {
    e.preventDefault();
    zoomAt(st, e.deltaY < 0 ? ZOOM_STEP : 1 / ZOOM_STEP, e);
  }, { passive: false });
  c.addEventListener("contextmenu", (e) => e.preventDefault());
  c.addEventListener("dblclick", () => resetView(st));
  c.addEventListener("pointerdown", (e) => {
    const windowing = e.button === 2 || e.altKey;
    const start = { x: e.clientX, y: e.clientY, view: { ...st.view } };
    const s = fitScale(st, c) * st.view.zoom;
    c.setPointerCapture(e.pointerId);
    const move = (m) => {
      const dx = m.clientX - start.x, dy = m.clientY - start.y;
      if (windowing) {
        const k = st.film.header.max_value / 600;
        st.view.width = Math.max(k, start.view.width + dx * k);
        st.view.level = start.view.level + dy * k;
        st.dirtyFilm = true;
      } else {
        st.view.cx = start.view.cx - dx / s;
        st.view.cy = start.view.cy - dy / s;
      }
      draw(st);
    };
    const up = () => {
      c.removeEventListener("pointermove", move);
      c.removeEventListener("pointerup", up);
      c.removeEventListener("pointercancel", up);
    };
    c.addEventListener("pointermove", move);
    c.addEventListener("pointerup", up);
    c.addEventListener("pointercancel", up);
  });
  c.addEventListener("pointermove", (e) => readout(st, e));
}

function resetView(st) {
  const fresh = defaultView(st.film.header);
  Object.assign(st.view, { zoom: 1, cx: fresh.cx, cy: fresh.cy });
  draw(st);
}

function resetAll(st) {
  Object.assign(st.view, defaultView(st.film.header));
  st.dirtyFilm = true;
  draw(st);
}

// Inside the component's shadow root the document reports its host as the full-screen element.
function isFull(st) {
  return st.ui.root.getRootNode().fullscreenElement === st.ui.root;
}

function toggleFull(st) {
  if (isFull(st)) document.exitFullscreen();
  else st.ui.root.requestFullscreen().catch(() => {});
}

function attach(st) {
  const { ui } = st;
  attachPanel(st, st.panelA);
  attachPanel(st, st.panelB);
  ui.presets.addEventListener("change", () => {
    const preset = st.film.header.presets[Number(ui.presets.value)];
    if (preset) {
      st.view.level = preset[1];
      st.view.width = preset[2];
      st.dirtyFilm = true;
      draw(st);
    }
    ui.presets.value = "";
  });
  const typed = () => {
    const level = Number(ui.level.value), width = Number(ui.width.value);
    if (Number.isFinite(level) && Number.isFinite(width) && width > 0) {
      st.view.level = level;
      st.view.width = width;
      st.dirtyFilm = true;
      draw(st);
    }
  };
  ui.level.addEventListener("change", typed);
  ui.width.addEventListener("change", typed);
  ui.invert.addEventListener("click", () => {
    st.invert = !st.invert;
    st.dirtyFilm = true;
    draw(st);
  });
  ui.panels.addEventListener("change", () => {
    st.panelsChosen = true;
    layout(st);
  });
  ui.reset.addEventListener("click", () => resetAll(st));
  ui.zoomIn.addEventListener("click", () => zoomAt(st, ZOOM_STEP));
  ui.zoomOut.addEventListener("click", () => zoomAt(st, 1 / ZOOM_STEP));
  ui.full.addEventListener("click", () => toggleFull(st));
  ui.root.addEventListener("keydown", (e) => {
    if (e.target instanceof HTMLInputElement || e.target instanceof HTMLSelectElement) return;
    const action = { i: () => ui.invert.click(), r: () => resetAll(st), f: () => toggleFull(st), "+": () => zoomAt(st, ZOOM_STEP), "=": () => zoomAt(st, ZOOM_STEP), "-": () => zoomAt(st, 1 / ZOOM_STEP) }[e.key];
    if (action) {
      e.preventDefault();
      action();
    }
  });
  const onFull = () => {
    const label = isFull(st) ? "Exit full screen" : "Full screen";
    ui.full.setAttribute("aria-label", label);
    ui.full.title = `${label} (f)`;
    layout(st);
  };
  document.addEventListener("fullscreenchange", onFull);
  const observer = new ResizeObserver(() => layout(st));
  observer.observe(ui.stage);
  return () => {
    document.removeEventListener("fullscreenchange", onFull);
    observer.disconnect();
  };
}

export default function ({ data, parentElement }) {
  if (!data) return undefined;
  let st = STATES.get(parentElement);
  if (!st) {
    const ui = build(parentElement);
    st = { ui, panelA: makePanel(""), panelB: makePanel(""), invert: false, frame: 0 };
    ui.stage.append(st.panelA.panel, st.panelB.panel);
    st.help = "wheel: zoom · drag: pan · right-drag: window · double-click: reset · keys i r f + −";
    st.cleanup = attach(st);
    STATES.set(parentElement, st);
  }
  setFilm(st, data);
  const cleanup = st.cleanup;
  return () => {
    cleanup();
    STATES.delete(parentElement);
  };
}

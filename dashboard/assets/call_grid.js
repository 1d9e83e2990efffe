// The Review page's call grid (dashboard/call_grid.py): one compact row per finding (present /
// absent / unsure, where), the focused finding's confidence, reason and note, the film's actions,
// and the reading keys with their help overlay. A Streamlit components-v2 module: Streamlit calls
// the default export on every render with new data; this module is evaluated once per page, so the
// one key listener below serves whichever grid is mounted now.
//
// What the reader changes is sent at once as the "edits" state (every change since the film was
// shown, so a lost or merged rerun loses nothing: the page keeps it as a draft); actions (save,
// move, mark where) are triggers that carry the same edits. The "viewport" state (a probe mount)
// reports the window size and the film's place.

const TEXT_INPUTS = new Set(["text", "search", "email", "number", "password", "tel", "url", ""]);
const CALLS = [
  ["present", "P"],
  ["absent", "A"],
  ["unsure", "U"],
];
let grid = null; // the mounted grid: {component, data, els}
const local = { token: null, edits: {}, focus: 0, seq: 0, help: false };
let noteTimer = null;

function typing(target) {
  if (!target || target.nodeType !== 1) return false;
  if (target.isContentEditable) return true;
  if (target.tagName === "INPUT") return TEXT_INPUTS.has((target.getAttribute("type") || "").toLowerCase());
  return target.tagName === "TEXTAREA" || target.tagName === "SELECT";
}

function value(row, field) {
  const edit = local.edits[row.name];
  return edit && field in edit ? edit[field] : row[field];
}

function snapshot() {
  return { token: local.token, seq: local.seq, edits: local.edits };
}

function edit(row, field, newValue) {
  if (!grid || row.frozen || grid.data.readonly) return;
  local.edits[row.name] = { ...(local.edits[row.name] || {}), [field]: newValue };
  local.seq += 1;
  grid.component.setStateValue("edits", snapshot());
  paint();
}

function act(name, extra) {
  if (!grid) return;
  const enabled = grid.data.actions[name];
  if (enabled === false) return;
  grid.component.setTriggerValue("action", { name, ...snapshot(), ...(extra || {}) });
}

function moveFocus(index) {
  if (!grid) return;
  local.focus = Math.max(0, Math.min(grid.data.rows.length - 1, index));
  paint();
}

function closeOrStop() {
  if (local.help) toggleHelp(false);
  else if (grid.data.armed) act("disarm");
}

function call(index, finding, advance) {
  const row = grid.data.rows[index];
  if (!row) return;
  edit(row, "finding", finding);
  moveFocus(advance ? index + 1 : index);
}

function restAbsent() {
  if (!grid || grid.data.readonly) return; // like edit(): a read-only grid takes no calls
  for (const row of grid.data.rows) {
    if (!row.frozen && !value(row, "finding")) {
      local.edits[row.name] = { ...(local.edits[row.name] || {}), finding: "absent" };
    }
  }
  local.seq += 1;
  grid.component.setStateValue("edits", snapshot());
  paint();
}

const ACTIONS = {
  present: () => call(local.focus, "present", true),
  absent: () => call(local.focus, "absent", true),
  unsure: () => call(local.focus, "unsure", true),
  rest_absent: () => restAbsent(),
  down: () => moveFocus(local.focus + 1),
  up: () => moveFocus(local.focus - 1),
  confidence: (key) => edit(grid.data.rows[local.focus], "confidence", key === "0" ? null : Number(key)),
  note: () => grid.els.details.note.focus(),
  clear_mark: () => act("clear_mark", { finding: grid.data.rows[local.focus].name }),
  mark: () => act(grid.data.armed === grid.data.rows[local.focus].name ? "disarm" : "arm", {
    finding: grid.data.rows[local.focus].name,
  }),
  close: () => closeOrStop(),
  save: () => act("save"),
  save_next: () => act("save_next"),
  next: () => act("next"),
  prev: () => act("prev"),
  next_open: () => act("next_open"),
  help: () => toggleHelp(!local.help),
};

function onKey(event) {
  if (!grid || !grid.els.root.isConnected) return;
  if (event.ctrlKey || event.metaKey || event.altKey) return;
  const target = event.composedPath()[0];
  if (event.key === "Escape" && typing(target)) {
    if (!event.composedPath().includes(grid.els.root)) return;
    target.blur(); // leave the note or the reason: the reading keys work again
    event.preventDefault();
    event.stopPropagation();
    return;
  }
  if (typing(target)) return; // a note, a reason, a search box: the reader is typing
  const inside = event.composedPath().includes(grid.els.root);
  if ((event.key === "Enter" || event.key === " ") && !inside && target.closest?.("button, a, [role]")) {
    return; // Enter on another control of the page belongs to it
  }
  const key = event.key.length === 1 ? event.key.toLowerCase() : event.key;
  const bound = grid.data.keys.find((k) => k.keys.includes(key) || k.keys.includes(event.key));
  if (!bound || (local.help && !["help", "close"].includes(bound.action))) return;
  event.preventDefault();
  event.stopPropagation();
  ACTIONS[bound.action](event.key);
}

if (!window.__cxrCallGridKeys) {
  window.__cxrCallGridKeys = true;
  window.addEventListener("keydown", (event) => onKey(event), true);
}

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const child of children) node.append(child);
  return node;
}

function toggleHelp(open) {
  local.help = open;
  grid.els.help.hidden = !open;
  if (open) grid.els.help.querySelector("button").focus();
}

function buildHelp(data) {
  const names = { ArrowDown: "↓", ArrowUp: "↑", ArrowLeft: "←", ArrowRight: "→", Enter: "Enter", Escape: "Esc" };
  const list = el("dl", { class: "keys" });
  for (const k of data.keys) {
    const shown = k.keys.map((key) => el("kbd", {}, names[key] || key.toUpperCase()));
    list.append(el("dt", {}, ...shown.flatMap((node, i) => (i ? [" ", node] : [node]))), el("dd", {}, k.text));
  }
  const close = el("button", { type: "button", class: "close", onclick: () => toggleHelp(false) }, "Close (Esc)");
  return el(
    "div",
    { class: "help", role: "dialog", "aria-label": "Reading keys", hidden: "" },
    el("div", { class: "sheet" }, el("h3", {}, "Reading keys"), list, el("p", {}, data.help_note), close),
  );
}

function buildRows(data) {
  const rows = data.rows.map((row, i) => {
    const buttons = CALLS.map(([finding, letter]) =>
      el(
        "button",
        {
          type: "button",
          class: `call ${finding}`,
          "aria-label": `${row.name} ${finding}`,
          title: `${finding[0].toUpperCase()}${finding.slice(1)} (key ${letter})`,
          onclick: () => call(i, finding, false),
        },
        letter,
      ),
    );
    const where = el(
      "button",
      {
        type: "button",
        class: "where",
        "aria-label": `${row.name} where`,
        title: "Mark where: then click the film, or drag a box (key W; X clears, Esc stops)",
        onclick: () => {
          moveFocus(i);
          act("arm", { finding: row.name });
        },
      },
      "",
    );
    const cells = [el("span", { class: "name", onclick: () => moveFocus(i) }, row.name), ...buttons, where];
    if (data.show_model) cells.push(el("span", { class: "model", title: row.model_title }, row.model));
    if (data.show_label) cells.push(el("span", { class: "label" }, row.label));
    if (data.show_model && data.show_label) cells.push(el("span", { class: "outcome" }, row.outcome));
    return el("div", { class: "row", role: "row", "data-name": row.name }, ...cells);
  });
  const head = ["Finding", "P", "A", "U", "Where"];
  if (data.show_model) head.push("Model");
  if (data.show_label) head.push("Label");
  if (data.show_model && data.show_label) head.push("");
  const columns = `cols-${head.length}`;
  return el(
    "div",
    { class: `grid ${columns}`, role: "grid", "aria-label": "Your calls on this film" },
    el("div", { class: "row head", role: "row" }, ...head.map((h) => el("span", {}, h))),
    ...rows,
  );
}

function buildDetails(data) {
  const confidence = el("span", { class: "confidence", role: "group", "aria-label": "Confidence" });
  for (const c of [null, 1, 2, 3, 4, 5]) {
    confidence.append(
      el(
        "button",
        {
          type: "button",
          "data-c": String(c),
          title: c === null ? "No confidence given (key 0)" : `Confidence ${c} of 5 (key ${c})`,
          onclick: () => edit(grid.data.rows[local.focus], "confidence", c),
        },
        c === null ? "–" : String(c),
      ),
    );
  }
  const reason = el("select", { "aria-label": "Reason" });
  for (const [code, text] of data.reasons) reason.append(el("option", { value: code }, text));
  reason.addEventListener("change", () => {
    edit(grid.data.rows[local.focus], "reason", reason.value);
    reason.blur(); // a reason is picked, not typed: the reading keys work again at once
  });
  const note = el("input", { type: "text", "aria-label": "Note", placeholder: "note (key E)" });
  const sendNote = () => {
    clearTimeout(noteTimer);
    const row = grid.data.rows[local.focus];
    if ((value(row, "note") || "") !== note.value) edit(row, "note", note.value);
  };
  note.addEventListener("input", () => {
    clearTimeout(noteTimer);
    noteTimer = setTimeout(sendNote, 600);
  });
  note.addEventListener("change", sendNote);
  note.addEventListener("keydown", (event) => {
    if (event.key === "Enter") {
      sendNote();
      note.blur();
    }
  });
  const title = el("b", { class: "focused" });
  const where = el("span", { class: "where-text" });
  const saved = el("span", { class: "saved-text" });
  return {
    node: el(
      "div",
      { class: "details" },
      el("div", { class: "line" }, title, " confidence ", confidence, reason, note),
      el("div", { class: "line small" }, where, saved),
    ),
    title,
    confidence,
    reason,
    note,
    where,
    saved,
  };
}

function buildActions(data) {
  const buttons = {};
  const bars = [el("div", { class: "actions" }), el("div", { class: "actions" })];
  for (const a of data.action_buttons) {
    buttons[a.name] = el(
      "button",
      { type: "button", class: a.primary ? "primary" : "", title: a.title, onclick: () => act(a.name) },
      a.text,
    );
    bars[a.row].append(buttons[a.name]);
  }
  const help = el("button", { type: "button", class: "help-button", title: "Reading keys (?)", onclick: () => toggleHelp(true) }, "?");
  bars[1].append(help);
  return { bars, buttons };
}

function build(component) {
  const { data, parentElement } = component;
  const root = el("div", { class: "call-grid" });
  const status = el("div", { class: "status" });
  const message = el("div", { class: "message", role: "status" });
  const rows = buildRows(data);
  const details = buildDetails(data);
  const actions = buildActions(data);
  const help = buildHelp(data);
  root.append(status, rows, details.node, message, ...actions.bars, help);
  parentElement.querySelector(".call-grid")?.remove();
  parentElement.append(root);
  return { root, status, message, rows, details, actions, help };
}

const SVG = "http://www.w3.org/2000/svg";
const SHAPES = {
  none: [["circle", { cx: 8, cy: 8, r: 5 }], ["path", { d: "M8 1v4M8 11v4M1 8h4M11 8h4" }]],
  point: [["circle", { cx: 8, cy: 8, r: 5 }], ["circle", { cx: 8, cy: 8, r: 2.2, class: "dot" }]],
  box: [["rect", { x: 2, y: 3.5, width: 12, height: 9, rx: 1 }]],
};

function icon(mark) {
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", "0 0 16 16");
  svg.setAttribute("aria-hidden", "true");
  for (const [tag, attrs] of SHAPES[mark || "none"]) {
    const shape = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs)) shape.setAttribute(k, String(v));
    svg.append(shape);
  }
  return svg;
}

function paintRows() {
  const { data, els } = grid;
  els.rows.querySelectorAll(".row:not(.head)").forEach((node, i) => {
    const row = data.rows[i];
    const finding = value(row, "finding");
    node.classList.toggle("focus", i === local.focus);
    node.classList.toggle("unsaved", Boolean(row.unsaved) || pending(row));
    node.classList.toggle("frozen", Boolean(row.frozen));
    node.querySelectorAll("button.call").forEach((button, c) => {
      const on = finding === CALLS[c][0];
      button.classList.toggle("on", on);
      button.setAttribute("aria-pressed", String(on));
      button.disabled = Boolean(row.frozen || data.readonly);
    });
    const where = node.querySelector("button.where");
    where.replaceChildren(icon(row.mark));
    where.classList.toggle("marked", Boolean(row.mark));
    where.classList.toggle("unsaved-mark", Boolean(row.mark_unsaved));
    where.classList.toggle("armed", data.armed === row.name);
    where.setAttribute("aria-pressed", String(data.armed === row.name));
    where.disabled = Boolean(data.readonly); // a reader who may not call may not mark either
  });
}

function paintDetails() {
  const { data, els } = grid;
  const row = data.rows[local.focus];
  const d = els.details;
  d.title.textContent = row.name;
  const confidence = value(row, "confidence");
  d.confidence.querySelectorAll("button").forEach((button) => {
    const on = String(confidence ?? null) === button.dataset.c;
    button.classList.toggle("on", on);
    button.disabled = Boolean(row.frozen || data.readonly);
  });
  d.reason.value = value(row, "reason") || "";
  d.reason.disabled = Boolean(row.frozen || data.readonly);
  if (d.note.getRootNode().activeElement !== d.note) d.note.value = value(row, "note") || "";
  d.note.disabled = Boolean(row.frozen || data.readonly);
  d.where.textContent = row.where;
  d.saved.textContent = row.saved_text;
}

function pending(row) {
  const changes = local.edits[row.name];
  return Boolean(changes) && Object.keys(changes).some((k) => (changes[k] ?? null) !== (row[k] ?? null));
}

function paint() {
  if (!grid) return;
  const { data, els } = grid;
  const unsaved = data.rows.some((row) => row.unsaved || pending(row));
  els.root.dataset.film = data.film;
  els.status.replaceChildren(
    el("span", { class: "progress" }, data.progress),
    el("span", { class: `pill ${unsaved ? "draft" : data.state}` }, unsaved ? data.draft_text : data.state_text),
  );
  els.message.textContent = data.message || "";
  els.message.hidden = !data.message;
  for (const [name, button] of Object.entries(els.actions.buttons)) button.disabled = data.actions[name] === false;
  paintRows();
  paintDetails();
}

let probeMount = null;

function report() {
  if (!probeMount) return;
  const host = probeMount.parentElement.host || probeMount.parentElement;
  if (!host.isConnected) return;
  const box = host.getBoundingClientRect();
  const seen = {
    width: window.innerWidth,
    height: window.innerHeight,
    top: Math.round(box.top + window.scrollY),
    column: Math.round(box.width),
  };
  const last = probeMount.data.viewport || {};
  if (["width", "height", "top", "column"].some((k) => Math.abs((last[k] || 0) - seen[k]) > 8)) {
    delete host.dataset.viewport;
    probeMount.data = { ...probeMount.data, viewport: seen };
    probeMount.setStateValue("viewport", seen);
  } else {
    host.dataset.viewport = "ready"; // the page is laid out for this window
  }
}

let resizeTimer = null;
window.addEventListener("resize", () => {
  clearTimeout(resizeTimer);
  resizeTimer = setTimeout(report, 250);
});

function probe(component) {
  probeMount = component;
  requestAnimationFrame(report);
  return () => {
    if (probeMount === component) probeMount = null;
  };
}

export default function (component) {
  if (component.data.probe) return probe(component);
  const data = component.data;
  if (local.token !== data.token) {
    local.token = data.token;
    local.edits = {};
    local.seq = 0;
    const first = data.rows.findIndex((row) => !row.finding && !row.frozen);
    local.focus = data.rows.findIndex((row) => row.name === data.focus);
    if (local.focus < 0) local.focus = first < 0 ? 0 : first;
  }
  const structure = JSON.stringify([data.rows.map((r) => r.name), data.show_model, data.show_label, data.keys]);
  if (!grid || grid.structure !== structure || !grid.els.root.isConnected || grid.parent !== component.parentElement) {
    grid = { component, data, structure, parent: component.parentElement };
    grid.els = build(component);
  }
  grid.component = component;
  grid.data = data;
  paint();
  return () => {
    if (grid && grid.component === component) grid = null;
  };
}

// The order's history: a timeline of its versions, newest first, from GET /order/{id}/history.
// Every value is rendered as text (text nodes / textContent), never as HTML.
//
// The API gives each page oldest first, its first version whole and each later one as an RFC 6902
// JSON Patch from the one before. The viewer replays the patches to know every version, so a
// change shows its old and new value. The first version of a page has no patch: once the older
// page is loaded, its changes are found by comparing it with the version before it.

import { el } from "./dom.js";

const PAGE_SIZE = 20;
const LONG_VALUE = 160; // characters of an object or array value shown before "…"

const dateTime = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "long" });

// How the viewer names the order's fields elsewhere on the page.
const LABELS = {
  delivery: "Delivery", payment: "Payment", items: "Item", order_uid: "Order uid",
  track_number: "Track number", entry: "Entry", locale: "Locale", internal_signature: "Internal signature",
  customer_id: "Customer", delivery_service: "Delivery service", shardkey: "Shard key", sm_id: "SM id",
  date_created: "Created", oof_shard: "OOF shard", name: "Name", phone: "Phone", zip: "Zip", city: "City",
  address: "Address", region: "Region", email: "Email", transaction: "Transaction", request_id: "Request id",
  currency: "Currency", provider: "Provider", amount: "Amount", payment_dt: "Payment time", bank: "Bank",
  delivery_cost: "Delivery cost", goods_total: "Goods total", custom_fee: "Custom fee", chrt_id: "chrt_id",
  price: "Price", rid: "rid", sale: "Sale", size: "Size", total_price: "Total price", nm_id: "nm_id",
  brand: "Brand", status: "Status",
};
const TIMESTAMP_TYPES = {
  CreateTime: "sent at (the producer's time)",
  LogAppendTime: "logged at (the broker's time)",
};

function timeNode(text) {
  const date = new Date(typeof text === "string" ? text : NaN);
  if (Number.isNaN(date.getTime())) return el("span", { class: "empty" }, "unknown");
  return el("time", { datetime: date.toISOString(), title: text }, dateTime.format(date));
}

/** "/items/0/status" → "Item 1 › Status"; JSON Pointer escapes (~1, ~0) undone. */
export function fieldName(pointer) {
  const parts = String(pointer).split("/").slice(1).map((part) => part.replace(/~1/g, "/").replace(/~0/g, "~"));
  const words = [];
  for (const part of parts) {
    if (/^(0|[1-9][0-9]*)$/.test(part) && words.length) words[words.length - 1] += ` ${Number(part) + 1}`;
    else words.push(LABELS[part] ?? part);
  }
  return words.length ? words.join(" › ") : "The whole order";
}

function shown(value) {
  if (value === undefined) return el("span", { class: "empty" }, "nothing");
  if (value === "") return el("span", { class: "empty" }, "empty");
  const text = typeof value === "string" ? value : JSON.stringify(value);
  return text.length > LONG_VALUE ? `${text.slice(0, LONG_VALUE)}…` : text;
}

// ---------- JSON Patch, as far as the viewer needs it ----------

const clone = (value) => (value === undefined ? undefined : JSON.parse(JSON.stringify(value)));

function tokens(pointer) {
  return String(pointer).split("/").slice(1).map((part) => part.replace(/~1/g, "/").replace(/~0/g, "~"));
}

function valueAt(document, pointer) {
  let node = document;
  for (const token of tokens(pointer)) {
    if (node === null || typeof node !== "object" || !Object.hasOwn(node, token)) return undefined;
    node = node[token];
  }
  return node;
}

function put(document, pointer, value, insert) {
  const path = tokens(pointer);
  if (!path.length) return clone(value);
  const last = path.pop();
  let parent = document;
  for (const token of path) parent = parent[token];
  if (Array.isArray(parent)) {
    const index = last === "-" ? parent.length : Number(last);
    if (insert) parent.splice(index, 0, clone(value));
    else parent[index] = clone(value);
  } else parent[last] = clone(value);
  return document;
}

function drop(document, pointer) {
  const path = tokens(pointer);
  const last = path.pop();
  let parent = document;
  for (const token of path) parent = parent[token];
  if (Array.isArray(parent)) parent.splice(Number(last), 1);
  else delete parent[last];
  return document;
}

/** RFC 6902 applied to a copy of `document`. */
function applyPatch(document, patch) {
  let result = clone(document);
  for (const op of patch) {
    if (op.op === "add") result = put(result, op.path, op.value, true);
    else if (op.op === "replace") result = put(result, op.path, op.value, false);
    else if (op.op === "remove") result = drop(result, op.path);
    else if (op.op === "move") {
      const value = valueAt(result, op.from);
      result = put(drop(result, op.from), op.path, value, true);
    } else if (op.op === "copy") result = put(result, op.path, valueAt(result, op.from), true);
  }
  return result;
}

/** The changes from `before` to `after` as patch operations (only for a page's first version). */
function difference(before, after, pointer = "") {
  const isObject = (value) => value !== null && typeof value === "object";
  if (!isObject(before) || !isObject(after) || Array.isArray(before) !== Array.isArray(after)) {
    return JSON.stringify(before) === JSON.stringify(after) ? [] : [{ op: "replace", path: pointer, value: after }];
  }
  const ops = [];
  const escape = (key) => String(key).replace(/~/g, "~0").replace(/\//g, "~1");
  if (Array.isArray(before)) {
    const common = Math.min(before.length, after.length);
    for (let i = 0; i < common; i += 1) ops.push(...difference(before[i], after[i], `${pointer}/${i}`));
    for (let i = common; i < after.length; i += 1) ops.push({ op: "add", path: `${pointer}/${i}`, value: after[i] });
    for (let i = before.length - 1; i >= common; i -= 1) ops.push({ op: "remove", path: `${pointer}/${i}` });
    return ops;
  }
  for (const key of Object.keys(before)) {
    if (!Object.hasOwn(after, key)) ops.push({ op: "remove", path: `${pointer}/${escape(key)}` });
    else ops.push(...difference(before[key], after[key], `${pointer}/${escape(key)}`));
  }
  for (const key of Object.keys(after)) {
    if (!Object.hasOwn(before, key)) ops.push({ op: "add", path: `${pointer}/${escape(key)}`, value: after[key] });
  }
  return ops;
}

// ---------- the timeline ----------

function changeItem(op, before) {
  const name = el("span", { class: "change-field" }, fieldName(op.path));
  if (op.op === "replace") {
    return el("li", { class: "change", "data-op": "replace" }, name, " ",
      el("del", {}, shown(valueAt(before, op.path))), el("span", { "aria-hidden": "true" }, " → "),
      el("span", { class: "visually-hidden" }, " changed to "), el("ins", {}, shown(op.value)));
  }
  if (op.op === "add") return el("li", { class: "change", "data-op": "add" }, name, " added: ", el("ins", {}, shown(op.value)));
  if (op.op === "remove") {
    return el("li", { class: "change", "data-op": "remove" }, name, " removed (was ",
      el("del", {}, shown(valueAt(before, op.path))), ")");
  }
  if (op.op === "move" || op.op === "copy") {
    return el("li", { class: "change", "data-op": op.op }, name, ` ${op.op === "move" ? "moved" : "copied"} from `,
      el("span", { class: "change-field" }, fieldName(op.from)));
  }
  return el("li", { class: "change" }, name, " checked");
}

function sourceText(source) {
  if (!source || typeof source !== "object") return "from an unknown place in the topic";
  return `from partition ${source.partition}, offset ${source.offset}`;
}

function entryNode(version) {
  const heading = el("h4", { class: "version-heading" }, `Version ${version.version}`,
    version.current ? [" ", el("span", { class: "badge" }, "current")] : null);
  const when = version.record_time
    ? [TIMESTAMP_TYPES[version.timestamp_type] ?? "record time", " ", timeNode(version.record_time)]
    : [el("span", { class: "empty" }, "no record time")];
  const meta = el("p", { class: "version-meta" }, ...when, " · ", sourceText(version.source),
    " · applied ", timeNode(version.applied_at));
  const changes = el("div", { class: "version-changes" });
  const node = el("li", { class: "version", "data-version": String(version.version) }, heading, meta, changes);
  node.showChanges = (ops, before) => {
    if (ops === null) {
      changes.replaceChildren(el("p", { class: "note" },
        version.version === 1 ? "The first version kept: the order as it was received."
          : "What changed shows once the older versions are loaded."));
    } else if (!ops.length) {
      changes.replaceChildren(el("p", { class: "note" }, "Nothing changed (the same order sent again)."));
    } else {
      const label = `${ops.length} ${ops.length === 1 ? "change" : "changes"}`;
      changes.replaceChildren(el("ul", { class: "changes", "aria-label": `Changes in version ${version.version}` },
        ops.map((op) => changeItem(op, before))), el("span", { class: "visually-hidden" }, label));
    }
  };
  return node;
}

/**
 * The history section of the order `id`. It loads itself; `signal` aborts its requests when
 * another order is shown.
 */
export function historySection(id, signal) {
  const list = el("ol", { class: "timeline" });
  const status = el("p", { class: "history-status", role: "status" }, "Loading the history…");
  const more = el("button", { type: "button", class: "secondary", hidden: "" }, "Show older versions");
  const section = el("section", { class: "card history", "aria-labelledby": "history-heading" },
    el("h3", { id: "history-heading" }, "History"),
    el("p", { class: "note history-intro" }, "Every version of this order, newest first, with what changed."),
    list, status, more);

  let cursor = null;
  let boundary = null; // the oldest version shown so far: { node, order }, whose changes need the one before

  async function load() {
    more.disabled = true;
    status.textContent = "Loading the history…";
    const params = new URLSearchParams({ limit: String(PAGE_SIZE) });
    if (cursor) params.set("before", cursor);
    let page;
    try {
      const response = await fetch(`/order/${encodeURIComponent(id)}/history?${params}`,
        { headers: { Accept: "application/json" }, cache: "no-cache", signal });
      if (response.status === 404) {
        status.textContent = "This order has no history any more (it was erased).";
        more.hidden = true;
        return;
      }
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      page = await response.json();
      if (!page || !Array.isArray(page.versions)) throw new Error("not a history");
    } catch (error) {
      if (signal.aborted) return;
      status.textContent = `Could not load the history (${error.message}).`;
      more.textContent = "Try again";
      more.hidden = false;
      more.disabled = false;
      return;
    }
    let previous = null;
    const entries = [];
    for (const version of page.versions) {
      const order = previous === null ? version.order : applyPatch(previous, version.patch ?? []);
      const node = entryNode(version);
      if (previous === null) node.showChanges(null);
      else node.showChanges(version.patch ?? [], previous);
      entries.push({ node, order });
      previous = order;
    }
    if (boundary && entries.length) { // the version before the oldest one shown is here now
      const before = entries[entries.length - 1].order;
      boundary.node.showChanges(difference(before, boundary.order), before);
    }
    if (entries.length) boundary = entries[0];
    list.append(...entries.reverse().map((entry) => entry.node));
    cursor = page.next_before ?? null;
    const count = list.children.length;
    status.textContent = cursor ? `${count} of ${page.total_versions} versions shown.`
      : `${page.total_versions} ${page.total_versions === 1 ? "version" : "versions"}.`;
    more.textContent = "Show older versions";
    more.hidden = !cursor;
    more.disabled = false;
  }

  more.addEventListener("click", () => load());
  load();
  return section;
}

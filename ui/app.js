// orderview viewer: look an order up by id and lay it out for reading.
// Every value from the API is rendered as text (text nodes / textContent), never as HTML.
//
// Units: money fields (amount, goods_total, delivery_cost, custom_fee, price,
// total_price) are integers in minor units of payment.currency, as the order's schema
// says: 1817 with USD is "USD 18.17", with JPY (no minor unit) "JPY 1,817".
// payment_dt is Unix epoch seconds; date_created is an RFC 3339 string.

import { el } from "./dom.js";
import { historySection } from "./history.js";

const ORDER_UID = /^[A-Za-z0-9_-]{1,64}$/;
const RECENT_PAGE_SIZE = 20;

const form = document.getElementById("lookup");
const input = document.getElementById("order-id");
const statusBox = document.getElementById("status");
const servedBox = document.getElementById("served");
const alertBox = document.getElementById("alert");
const orderView = document.getElementById("order");
const recentList = document.getElementById("recent-list");
const recentStatus = document.getElementById("recent-status");
const recentMore = document.getElementById("recent-more");

const dateTime = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "long" });
const dateOnly = new Intl.DateTimeFormat(undefined, { dateStyle: "medium" });
const plainNumber = new Intl.NumberFormat();

let inFlight = null;      // AbortController of the order request being awaited
let shownId = null;       // order id the view currently shows (or tried to)
let recentCursor = null;  // next_before of the last recent-orders page
let historyRequests = null; // AbortController of the shown order's history requests

// ---------- small DOM and formatting helpers ----------

/** A value as text; empty strings and missing values show a muted "none". */
function textValue(value) {
  if (value === "" || value === null || value === undefined) return el("span", { class: "empty" }, "none");
  return document.createTextNode(String(value));
}

/** Minor units as an amount of the currency: Intl knows each currency's decimals (USD 2, JPY 0). */
function formatMoney(minorUnits, currency) {
  if (typeof minorUnits !== "number" || !Number.isFinite(minorUnits)) return String(minorUnits ?? "");
  let format;
  try {
    format = new Intl.NumberFormat(undefined, { style: "currency", currency, currencyDisplay: "code" });
  } catch { // not an ISO 4217 code: the number as recorded, saying what it is
    return `${plainNumber.format(minorUnits)} minor units ${currency ?? ""}`.trim();
  }
  const decimals = format.resolvedOptions().maximumFractionDigits;
  return format.format(minorUnits / 10 ** decimals);
}

/** A <time> element for a Date, or the raw value as text when it is not a valid date. */
function timeNode(date, raw, format = dateTime) {
  if (Number.isNaN(date.getTime())) return textValue(raw);
  return el("time", { datetime: date.toISOString(), title: String(raw) }, format.format(date));
}

const fromEpochSeconds = (seconds) => new Date(typeof seconds === "number" ? seconds * 1000 : NaN);
const fromRfc3339 = (text) => new Date(typeof text === "string" ? text : NaN);

/** A <dl> of [label, value, fieldClass?] rows; a value may be a Node or anything printable. */
function fieldList(rows, className = "fields") {
  return el("dl", { class: className }, rows.map(([label, value, fieldClass = ""]) =>
    el("div", { class: `field ${fieldClass}`.trim() },
      el("dt", {}, label), el("dd", {}, value instanceof Node ? value : textValue(value)))));
}

function section(id, title, ...content) {
  return el("section", { class: "card", "aria-labelledby": id }, el("h3", { id }, title), ...content);
}

// ---------- the order ----------

function summarySection(order) {
  return section("summary-heading", "Summary",
    fieldList([
      ["Order uid", el("span", { class: "mono" }, order.order_uid), "wide"],
      ["Track number", el("span", { class: "mono" }, textValue(order.track_number)), "wide"],
      ["Entry", order.entry],
      ["Customer", order.customer_id],
      ["Locale", order.locale],
      ["Delivery service", order.delivery_service],
      ["Created", timeNode(fromRfc3339(order.date_created), order.date_created), "wide"],
    ], "fields tiles"),
    fieldList([
      ["Shard key", order.shardkey],
      ["OOF shard", order.oof_shard],
      ["SM id", order.sm_id],
      ["Internal signature", order.internal_signature],
    ], "fields tiles technical"));
}

function deliverySection(delivery) {
  return section("delivery-heading", "Delivery", fieldList([
    ["Name", delivery.name],
    ["Phone", delivery.phone],
    ["Email", delivery.email],
    ["Address", delivery.address],
    ["City", delivery.city],
    ["Region", delivery.region],
    ["Zip", delivery.zip],
  ]));
}

function paymentSection(payment) {
  const money = (value) => formatMoney(value, payment.currency);
  return section("payment-heading", "Payment",
    el("p", { class: "amount" }, el("span", { class: "amount-label" }, "Amount"), " ",
      el("span", { class: "amount-value" }, money(payment.amount))),
    fieldList([
      ["Goods total", money(payment.goods_total)],
      ["Delivery cost", money(payment.delivery_cost)],
      ["Custom fee", money(payment.custom_fee)],
      ["Provider", payment.provider],
      ["Bank", payment.bank],
      ["Transaction", el("span", { class: "mono" }, textValue(payment.transaction))],
      ["Request id", payment.request_id],
      ["Payment time", timeNode(fromEpochSeconds(payment.payment_dt), payment.payment_dt)],
    ]),
    el("p", { class: "note" }, "Amounts are recorded in minor units (cents) and shown in the currency’s own units."));
}

function itemRow(item, currency) {
  const money = (value) => formatMoney(value, currency);
  return el("tr", {},
    el("th", { scope: "row" }, textValue(item.name)),
    el("td", {}, textValue(item.brand)),
    el("td", {}, textValue(item.size)),
    el("td", { class: "num" }, money(item.price)),
    el("td", { class: "num" }, typeof item.sale === "number" ? `${item.sale}%` : textValue(item.sale)),
    el("td", { class: "num" }, money(item.total_price)),
    el("td", {}, textValue(item.status)),
    el("td", { class: "ids" },
      el("span", {}, "chrt_id ", textValue(item.chrt_id)),
      el("span", {}, "nm_id ", textValue(item.nm_id)),
      el("span", {}, "rid ", textValue(item.rid))));
}

function itemsSection(items, payment) {
  const currency = payment.currency;
  const sum = items.reduce((total, item) => total + (Number(item.total_price) || 0), 0);
  const count = `${items.length} ${items.length === 1 ? "item" : "items"}`;
  const table = el("table", { class: "items" },
    el("caption", { id: "items-caption" }, `Items in this order (${count})`),
    el("thead", {}, el("tr", {}, ["Name", "Brand", "Size", "Price", "Sale", "Total price", "Status", "Ids"]
      .map((label) => el("th", { scope: "col", class: ["Price", "Sale", "Total price"].includes(label) ? "num" : "" }, label)))),
    el("tbody", {}, items.map((item) => itemRow(item, currency))),
    el("tfoot", {}, el("tr", {},
      el("th", { scope: "row", colspan: "5" }, `Total (${count})`),
      el("td", { class: "num" }, formatMoney(sum, currency)),
      el("td", { colspan: "2" }))));
  const mismatch = typeof payment.goods_total === "number" && payment.goods_total !== sum
    ? el("p", { class: "note warning" }, `The item totals add up to ${formatMoney(sum, currency)}, `
      + `but the payment's goods total is ${formatMoney(payment.goods_total, currency)}.`)
    : null;
  return section("items-heading", "Items",
    el("div", { class: "table-scroll", role: "region", "aria-labelledby": "items-caption", tabindex: "0" }, table),
    mismatch);
}

function renderOrder(order) {
  const payment = order.payment ?? {};
  const heading = el("h2", { id: "order-heading", tabindex: "-1" },
    "Order ", el("span", { class: "mono" }, order.order_uid));
  historyRequests = new AbortController();
  orderView.replaceChildren(heading, summarySection(order),
    el("div", { class: "sections" }, deliverySection(order.delivery ?? {}), paymentSection(payment)),
    itemsSection(Array.isArray(order.items) ? order.items : [], payment),
    historySection(String(order.order_uid), historyRequests.signal));
  heading.focus();
}

// ---------- states ----------

function clearMessages() {
  statusBox.replaceChildren();
  servedBox.replaceChildren();
  alertBox.replaceChildren();
  alertBox.removeAttribute("data-kind");
  input.removeAttribute("aria-invalid");
}

function showLoading(id) {
  clearMessages();
  orderView.replaceChildren();
  orderView.setAttribute("aria-busy", "true");
  statusBox.append(el("span", { class: "spinner", "aria-hidden": "true" }), `Loading order “${id}”…`);
}

/** Show a problem in the alert region; `retry` adds a "Try again" button. */
function showProblem(kind, title, detail, retry = false) {
  clearMessages();
  orderView.replaceChildren();
  orderView.removeAttribute("aria-busy");
  alertBox.dataset.kind = kind;
  alertBox.append(el("strong", {}, title), " ", detail);
  if (retry) {
    const button = el("button", { type: "button", class: "secondary" }, "Try again");
    button.addEventListener("click", () => showOrder(shownId));
    alertBox.append(" ", button);
  }
}

function showMalformedId(id) {
  inFlight?.abort(); // a slower earlier request must not replace this message
  inFlight = null;
  input.value = id;
  if (id === "") showProblem("malformed", "No order id.", "Type an order id, then press “Show order”.");
  else showProblem("malformed", "Malformed order id.",
    `“${id}” is not a valid order id: use 1–64 characters from A–Z, a–z, 0–9, “_” and “-”.`);
  input.setAttribute("aria-invalid", "true");
  input.focus();
}

/**
 * Where the server took the order from and how long it took, from its Server-Timing header
 * (`cache;desc="cache hit";dur=0.004`, dur in ms): { source, micros }, or null without one.
 */
function servedFrom(header) {
  const match = /^\s*(cache|db)\b[^,]*?;\s*dur=([0-9.]+)/.exec(header ?? "");
  if (!match) return null;
  return { source: match[1] === "cache" ? "the cache" : "the database", micros: Number(match[2]) * 1000 };
}

function showServed(served) {
  if (!served) return;
  const time = served.micros < 1000 ? `${Math.max(1, Math.round(served.micros))} µs`
    : `${(served.micros / 1000).toFixed(1)} ms`;
  servedBox.append("Served from ", el("strong", {}, served.source), ` in ${time} of server time.`);
}

/** Fetch one order; resolves to an outcome { kind, ... } instead of throwing (except on abort). */
async function fetchOrder(id, signal) {
  let response;
  try {
    response = await fetch(`/order/${encodeURIComponent(id)}`, { headers: { Accept: "application/json" }, cache: "no-cache", signal });
  } catch (error) {
    if (signal.aborted) throw error;
    return { kind: "unreachable" };
  }
  if (response.status === 404) return { kind: "not-found" };
  if (response.status === 400) return { kind: "malformed" };
  if (response.status >= 500) return { kind: "server-error", status: response.status };
  if (!response.ok) return { kind: "unexpected", status: response.status };
  try {
    const order = await response.json();
    if (order && typeof order === "object" && !Array.isArray(order)) {
      return { kind: "ok", order, served: servedFrom(response.headers.get("Server-Timing")) };
    }
  } catch (error) {
    if (signal.aborted) throw error;
  }
  return { kind: "unexpected", status: response.status };
}

/** Show the order with this id (no history change). */
async function showOrder(id) {
  inFlight?.abort();
  inFlight = null;
  historyRequests?.abort();
  shownId = id;
  input.value = id;
  markCurrentRecent();
  if (!ORDER_UID.test(id)) return showMalformedId(id);

  const controller = new AbortController();
  inFlight = controller;
  showLoading(id);
  let outcome;
  try {
    outcome = await fetchOrder(id, controller.signal);
  } catch {
    return; // superseded by a newer request
  }
  if (controller.signal.aborted) return;
  inFlight = null;
  orderView.removeAttribute("aria-busy");

  switch (outcome.kind) {
    case "ok":
      clearMessages();
      showServed(outcome.served);
      return renderOrder(outcome.order);
    case "not-found":
      return showProblem("not-found", "Order not found.", `There is no order with id “${id}”.`);
    case "malformed":
      return showMalformedId(id);
    case "unreachable":
      return showProblem("unreachable", "Server unreachable.",
        "Could not connect to the orderview API. Check your connection or that the API is running, then try again.", true);
    case "server-error":
      return showProblem("server-error", "Server error.",
        `The API failed with HTTP ${outcome.status}. Try again in a moment.`, true);
    default:
      return showProblem("unexpected", "Unexpected response.",
        `The API answered HTTP ${outcome.status} with something that is not an order.`, true);
  }
}

function showStartState() {
  inFlight?.abort();
  shownId = null;
  input.value = "";
  clearMessages();
  orderView.removeAttribute("aria-busy");
  orderView.replaceChildren(el("p", { class: "placeholder" },
    "Type an order id above, or pick one from Recent orders."));
  markCurrentRecent();
}

// ---------- URL and history ----------

const idFromUrl = () => new URLSearchParams(location.search).get("id");

/** Put the id in the URL (a new history entry unless it is already there) and show it. */
function navigateTo(id) {
  if (idFromUrl() !== id) history.pushState({ id }, "", `?id=${encodeURIComponent(id)}`);
  showOrder(id);
}

function showOrderFromUrl() {
  const id = idFromUrl();
  if (id === shownId) return; // e.g. only the #fragment changed
  if (id === null) showStartState();
  else showOrder(id);
}

// ---------- recent orders ----------

function recentOrderItem(summary) {
  const uid = String(summary.order_uid ?? "");
  const who = [summary.name, summary.city].filter((part) => part !== "" && part != null).join(" · ");
  const created = fromRfc3339(summary.date_created);
  return el("li", {}, el("a", { href: `?id=${encodeURIComponent(uid)}`, "data-id": uid, class: "recent-link" },
    el("span", { class: "recent-uid mono" }, uid),
    who ? el("span", { class: "recent-meta" }, who) : null,
    el("span", { class: "recent-meta" }, formatMoney(summary.amount, summary.currency),
      Number.isNaN(created.getTime()) ? "" : ` · ${dateOnly.format(created)}`)));
}

function markCurrentRecent() {
  for (const link of recentList.querySelectorAll("a[data-id]")) {
    if (link.dataset.id === shownId) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
}

/** Load one page of recent orders (the first when `before` is null) and append it. */
async function loadRecentOrders(before, { focusNew = false } = {}) {
  const params = new URLSearchParams({ limit: String(RECENT_PAGE_SIZE) });
  if (before) params.set("before", before);
  recentMore.disabled = true;
  recentList.setAttribute("aria-busy", "true");
  recentStatus.textContent = "Loading recent orders…";
  let failed = false;
  try {
    const response = await fetch(`/orders?${params}`, { headers: { Accept: "application/json" }, cache: "no-cache" });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    const page = await response.json();
    const items = (Array.isArray(page.orders) ? page.orders : []).map(recentOrderItem);
    recentList.append(...items);
    recentCursor = page.next_before ?? null;
    recentStatus.textContent = recentList.children.length ? "" : "No orders yet.";
    if (focusNew && items.length) items[0].querySelector("a").focus();
  } catch {
    failed = true;
    recentStatus.textContent = "Could not load recent orders.";
  } finally {
    recentList.removeAttribute("aria-busy");
    recentMore.disabled = false;
    recentMore.textContent = failed ? "Try again" : "More";
    recentMore.hidden = !(failed || recentCursor);
    markCurrentRecent();
  }
}

// ---------- wiring ----------

form.addEventListener("submit", (event) => {
  event.preventDefault();
  const id = input.value.trim();
  if (ORDER_UID.test(id)) navigateTo(id);
  else showMalformedId(id);
});

recentList.addEventListener("click", (event) => {
  const link = event.target.closest("a[data-id]");
  if (!link || event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
  event.preventDefault();
  navigateTo(link.dataset.id);
});

recentMore.addEventListener("click", () => loadRecentOrders(recentCursor, { focusNew: true }));
window.addEventListener("popstate", showOrderFromUrl);

showOrderFromUrl();
loadRecentOrders(null);

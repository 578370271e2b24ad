// The API explorer: reads /openapi.json and lets a person call each GET operation.
// Every value is rendered as text (textContent), never as HTML.

import { el } from "./dom.js";

function buildUrl(path, values) {
  let url = path.replace(/\{([^}]+)\}/g, (_, name) => encodeURIComponent(values.path[name] ?? ""));
  const query = new URLSearchParams(Object.entries(values.query).filter(([, v]) => v !== ""));
  if ([...query].length) url += "?" + query;
  return url;
}

async function send(path, form, output) {
  const values = { path: {}, query: {}, header: {} };
  for (const input of form.querySelectorAll("input")) values[input.dataset.in][input.name] = input.value;
  const headers = Object.fromEntries(Object.entries(values.header).filter(([, v]) => v !== ""));
  const url = buildUrl(path, values);
  output.replaceChildren(el("p", {}, `GET ${url} …`));
  try {
    const response = await fetch(url, { cache: "no-store", headers });
    const text = await response.text();
    let shown = text;
    try { shown = JSON.stringify(JSON.parse(text), null, 2); } catch { /* not JSON: show as is */ }
    output.replaceChildren(
      el("p", { class: "status-line" },
        `${response.status} ${response.statusText} · ${response.headers.get("content-type") ?? ""}`),
      el("pre", {}, shown),
    );
  } catch (error) {
    output.replaceChildren(el("p", {}, `The server could not be reached: ${error.message}`));
  }
}

function operationCard(path, operation, index) {
  const form = el("form", { "aria-label": `Call GET ${path}` });
  for (const parameter of operation.parameters ?? []) {
    const id = `op${index}-${parameter.name}`;
    const input = el("input", { id, name: parameter.name, "data-in": parameter.in, autocomplete: "off" });
    if (parameter.required) input.required = true;
    if (parameter.name === "order_uid") input.value = "b563feb7b2b84b6test";
    form.append(el("label", { for: id }, `${parameter.name} (${parameter.in})`, input));
  }
  form.append(el("button", { type: "submit" }, "Send"));
  const output = el("div", { class: "response", "aria-live": "polite" });
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    send(path, form, output);
  });
  return el(
    "section", { class: "operation card" },
    el("h2", {}, el("span", { class: "method" }, "GET"), path),
    el("p", { class: "summary" }, operation.summary ?? operation.description ?? ""),
    form, output,
  );
}

async function main() {
  const status = document.getElementById("api-status");
  try {
    const response = await fetch("/openapi.json");
    const doc = await response.json();
    const cards = Object.entries(doc.paths)
      .filter(([, item]) => item.get)
      .map(([path, item], index) => operationCard(path, item.get, index));
    document.getElementById("operations").replaceChildren(...cards);
    status.textContent = `${doc.info.title} ${doc.info.version}: ${cards.length} operations.`;
  } catch (error) {
    status.textContent = `The API document could not be loaded: ${error.message}`;
  }
}

main();

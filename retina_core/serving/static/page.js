// The page's only script: plain DOM, no framework, no network beyond this service.
"use strict";

const $ = (id) => document.getElementById(id);
const pct = (p) => (p === null || p === undefined ? "n/a" : (100 * p).toFixed(1) + "%");
const whole = (p) => (p === null || p === undefined ? "n/a" : Math.round(100 * p) + "%");
const num = (v) => (v === null || v === undefined ? "n/a" : v.toFixed(3));

function authHeaders() {
  const token = $("token").value.trim();
  return token ? { Authorization: "Bearer " + token } : {};
}

async function problem(response) {
  try {
    const body = await response.json();
    return `${response.status} ${body.code || ""}: ${body.message || body.detail || ""}`;
  } catch (_) {
    return `${response.status} ${response.statusText}`;
  }
}

function cell(row, text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  row.appendChild(td);
  return td;
}

function addRow(tbody, model, finding, probability) {
  const tr = document.createElement("tr");
  cell(tr, model);
  cell(tr, finding);
  cell(tr, probability, "num");
  tbody.appendChild(tr);
}

async function overlayImage(url, alt, id) {
  const img = document.createElement("img");
  img.alt = alt;
  img.id = id;
  const response = await fetch(url, { headers: authHeaders() });
  if (response.ok) img.src = URL.createObjectURL(await response.blob());
  return img;
}

async function figure(title, file, overlayUrl, key) {
  const fig = document.createElement("figure");
  fig.id = key + "-figure";
  const pair = document.createElement("div");
  pair.className = "pair";
  const original = document.createElement("img");
  original.alt = title + " as uploaded";
  original.src = URL.createObjectURL(file);
  pair.appendChild(original);
  if (overlayUrl) pair.appendChild(await overlayImage(overlayUrl, "Grad-CAM overlay of the " + title, key + "-overlay"));
  fig.appendChild(pair);
  const caption = document.createElement("figcaption");
  caption.textContent = overlayUrl ? title + ": uploaded (left) and where the model looked (right)" : title;
  fig.appendChild(caption);
  return fig;
}

function modalityRows(tbody, part, label) {
  const name = `${part.model} v${part.version}`;
  if (part.status === "withheld") {
    addRow(tbody, label, "not graded: " + part.quality.join(", "), "withheld");
    return;
  }
  for (const [cls, p] of Object.entries(part.calibrated_probabilities)) addRow(tbody, name, cls, pct(p));
  addRow(tbody, name, part.referral_kind, pct(part.referral_probability));
}

async function render(answer, files) {
  const referral = $("referral");
  referral.textContent = answer.referral.advice;
  referral.className = "referral " + (answer.referral.decision === "no prediction" ? "none" : answer.referral.decision);
  $("versions").textContent =
    "Answered by " + Object.entries(answer.models).map(([n, v]) => `${n} v${v}`).join(", ") + ` · prediction ${answer.id}`;
  const tbody = $("prob-table").querySelector("tbody");
  tbody.replaceChildren();
  if (answer.fundus) modalityRows(tbody, answer.fundus, "fundus");
  if (answer.oct) modalityRows(tbody, answer.oct, "oct");
  if (answer.fusion) {
    const f = answer.fusion;
    const threshold = f.operating_threshold === null ? "" : ` (operating threshold ${pct(f.operating_threshold)})`;
    addRow(tbody, `${f.model} v${f.version}`, `disease, fusion: ${f.fusion}${threshold}`, pct(f.calibrated_disease_probability));
    if (f.modality_share) {
      const share = document.createElement("small");
      share.id = "fusion-share";
      share.className = "share";
      share.textContent = `fundus ${whole(f.modality_share.fundus)} · OCT ${whole(f.modality_share.oct)} of the fused decision`;
      tbody.lastElementChild.children[1].append(document.createElement("br"), share);
    }
  }
  if (answer.multitask) {
    const m = answer.multitask;
    const name = `${m.model} v${m.version}`;
    addRow(tbody, name, `DR grade (${m.inputs}): ${m.grade}`, pct(m.grade_probabilities[m.grade]));
    addRow(tbody, name, `OCT class (${m.inputs}): ${m.oct_class}`, pct(m.oct_probabilities[m.oct_class]));
    addRow(tbody, name, `disease (${m.inputs})`, pct(m.disease_probability));
  }
  const images = $("images");
  images.replaceChildren();
  if (files.fundus) images.appendChild(await figure("fundus photograph", files.fundus, answer.fundus && answer.fundus.gradcam, "fundus"));
  if (files.oct) images.appendChild(await figure("OCT B-scan", files.oct, answer.oct && answer.oct.gradcam, "oct"));
  $("results").hidden = false;
}

async function submit(event) {
  event.preventDefault();
  const files = { fundus: $("fundus").files[0], oct: $("oct").files[0] };
  if (!files.fundus && !files.oct) {
    $("status").textContent = "Choose a fundus photograph, an OCT scan, or both.";
    return;
  }
  const form = new FormData();
  if (files.fundus) form.append("fundus", files.fundus);
  if (files.oct) form.append("oct", files.oct);
  $("submit").disabled = true;
  $("status").textContent = "Predicting…";
  try {
    const response = await fetch("/v1/predict?gradcam=" + ($("gradcam").checked ? "true" : "false"), { method: "POST", body: form, headers: authHeaders() });
    if (!response.ok) {
      $("status").innerHTML = "";
      const err = document.createElement("span");
      err.className = "error";
      err.textContent = "Refused: " + (await problem(response));
      $("status").appendChild(err);
      return;
    }
    await render(await response.json(), files);
    $("status").textContent = "Done.";
    if (!$("models-body").dataset.loaded) loadModels();
  } finally {
    $("submit").disabled = false;
  }
}

async function showCard(url, button) {
  const response = await fetch(url, { headers: authHeaders() });
  const pre = $("card");
  pre.textContent = response.ok ? await response.text() : await problem(response);
  pre.hidden = false;
  pre.focus();
  button.setAttribute("aria-expanded", "true");
}

function modelTable(model) {
  const section = document.createElement("div");
  section.className = "model";
  const h = document.createElement("h3");
  h.textContent = `${model.name} v${model.version} (${model.status})`;
  section.appendChild(h);
  const table = document.createElement("table");
  table.innerHTML = "<thead><tr><th scope='col'>Metric</th><th scope='col'>Level</th><th scope='col'>Estimate [95% CI]</th></tr></thead>";
  const tbody = document.createElement("tbody");
  const shown = model.metrics.filter((m) => m.level !== "patient");
  for (const m of shown) {
    const tr = document.createElement("tr");
    cell(tr, m.label);
    cell(tr, m.level);
    cell(tr, `${num(m.value)} [${num(m.low)}, ${num(m.high)}]`, "num");
    tbody.appendChild(tr);
  }
  if (!shown.length) {
    const tr = document.createElement("tr");
    cell(tr, "no test metrics recorded").colSpan = 3;
    tbody.appendChild(tr);
  }
  table.appendChild(tbody);
  section.appendChild(table);
  const facts = document.createElement("p");
  facts.className = "hint";
  facts.textContent = `Temperature ${model.temperature === null ? "not fitted" : num(model.temperature)}` +
    (model.operating_threshold === null ? "" : ` · operating threshold ${num(model.operating_threshold)}`);
  section.appendChild(facts);
  if (model.card_url) {
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = `Model card: ${model.name} v${model.version}`;
    button.className = "card-link";
    button.setAttribute("aria-controls", "card");
    button.addEventListener("click", () => showCard(model.card_url, button));
    section.appendChild(button);
  }
  return section;
}

async function loadModels() {
  const body = $("models-body");
  const response = await fetch("/v1/models", { headers: authHeaders() });
  if (!response.ok) {
    body.textContent = "Models unavailable: " + (await problem(response));
    return;
  }
  const answer = await response.json();
  body.replaceChildren(...answer.models.map(modelTable));
  body.dataset.loaded = "1";
}

document.addEventListener("DOMContentLoaded", () => {
  $("predict-form").addEventListener("submit", submit);
  $("token").addEventListener("change", loadModels);
  loadModels();
});

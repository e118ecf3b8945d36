// dibs dashboard: fetch figures (JSON built by dashboards/figures.py) and draw them with plotly.js.
// No inline scripts (the page's Content-Security-Policy forbids them): pages pass ids in data-* attributes.
"use strict";

const PLOT_CONFIG = { responsive: true, displaylogo: false };

// Draw the figure at `url` into element `id`; data-drawn counts redraws and data-src names the last
// figure, so that tests (and people) can tell a redraw happened.
async function draw(id, url) {
  const div = document.getElementById(id);
  const response = await fetch(url);
  if (!response.ok) {
    div.textContent = `could not load ${url}: ${response.status}`;
    return;
  }
  const fig = await response.json();
  await Plotly.react(div, fig.data, fig.layout, PLOT_CONFIG);
  div.dataset.src = url;
  div.dataset.drawn = String(Number(div.dataset.drawn || 0) + 1);
}

function query(params) {
  const q = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    for (const v of [].concat(value)) q.append(key, v);
  }
  return q.toString();
}

function cell(row, value) {
  const td = document.createElement("td");
  td.textContent = value; // text, never markup: run names and labels come from users
  row.appendChild(td);
}

async function fillTargets(runs, metric) {
  const body = document.querySelector("#targets tbody");
  const target = document.getElementById("target").value;
  body.replaceChildren();
  if (target === "") return;
  const response = await fetch(`/api/targets?${query({ run: runs, metric, target })}`);
  if (!response.ok) return;
  for (const r of await response.json()) {
    const row = document.createElement("tr");
    [r.group, r.runs, r.reached, r.rollouts, r.steps].forEach((v) => cell(row, v));
    body.appendChild(row);
  }
}

function comparePage() {
  const runs = JSON.parse(document.getElementById("curves").dataset.runs);
  const metric = document.getElementById("metric");
  const x = document.getElementById("x");
  const target = document.getElementById("target");
  const refresh = () => {
    const state = { run: runs, metric: metric.value, x: x.value };
    if (target.value !== "") state.target = target.value;
    history.replaceState(null, "", `/compare?${query(state)}`);
    draw("curves", `/api/compare?${query({ run: runs, metric: metric.value, x: x.value })}`);
    fillTargets(runs, metric.value);
  };
  // Where the budget went depends on the runs alone, so it is drawn once.
  draw("spread", `/api/compare/budget?${query({ run: runs })}`);
  metric.addEventListener("change", refresh);
  x.addEventListener("change", refresh);
  document.getElementById("target-form").addEventListener("submit", (event) => {
    event.preventDefault();
    refresh();
  });
  refresh();
}

function runPage() {
  const run = encodeURIComponent(document.getElementById("run").dataset.run);
  const step = document.getElementById("budget-step");
  if (!step) return;
  const budget = () => draw("budget", `/api/run/${run}/budget?step=${encodeURIComponent(step.value)}`);
  step.addEventListener("change", budget);
  budget();
  draw("allocation", `/api/run/${run}/allocation`);
}

function sweepPage() {
  const sweep = encodeURIComponent(document.getElementById("sweep").dataset.sweep);
  draw("parcoords", `/api/sweep/${sweep}/parcoords`);
  draw("importance", `/api/sweep/${sweep}/importance`);
}

const PAGES = { compare: comparePage, run: runPage, sweep: sweepPage };
document.addEventListener("DOMContentLoaded", () => {
  const page = PAGES[document.body.dataset.page];
  if (page) page();
});

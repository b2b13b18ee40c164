"use strict";
const D = JSON.parse(document.getElementById("data").textContent);
const S = D.subnetworks;
const app = document.getElementById("app");
const esc = s => String(s).replace(/[&<>"']/g, c => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));
function fmt(v, digits = 3) {
  if (v === null || v === undefined) return "–";
  if (v === 0) return "0";
  const a = Math.abs(v);
  return (a >= 1e4 || a < 1e-3) ? v.toExponential(2) : v.toPrecision(digits);
}
const tick = v => (v !== 0 && Math.abs(v) < 1e-3) ? v.toExponential(0) : String(+v.toPrecision(4));
const pct = v => (100 * v).toFixed(v >= 0.1 ? 0 : 1) + "%";
const outName = j => D.output_names[String(j)];
const subLink = k => `<a href="#s/${k}">#${k}</a>`;
const itemName = i => D.kind === "texts" ? "text " + i : D.kind === "images" ? "image " + i : "sample " + i;
const PALETTE = ["#2458a6", "#d9480f", "#2b8a3e", "#862e9c", "#c92a2a", "#1098ad", "#e67700", "#5c940d", "#a61e4d", "#364fc7", "#495057", "#0b7285"];

// --- charts (inline SVG) ---------------------------------------------------------------------------
function ticks(lo, hi, n = 4, integer = false) {
  if (!(hi > lo)) return [lo];
  const step0 = (hi - lo) / n, mag = Math.pow(10, Math.floor(Math.log10(step0)));
  const step = Math.max(integer ? 1 : 0, [1, 2, 2.5, 5, 10].map(m => m * mag).find(s => s >= step0));
  const out = [];
  for (let t = Math.ceil(lo / step - 1e-9) * step; t <= hi + 1e-9 * step; t += step) out.push(+t.toPrecision(12));
  return out;
}
function frame(w, h, m, xs, ys, xlabel, ylabel, yticks = null, yfmt = tick, xint = false) {
  const [x0, x1] = xs, [y0, y1] = ys;
  const X = v => m.l + (x1 > x0 ? (v - x0) / (x1 - x0) : 0.5) * (w - m.l - m.r);
  const Y = v => h - m.b - (y1 > y0 ? (v - y0) / (y1 - y0) : 0.5) * (h - m.t - m.b);
  let g = "";
  for (const t of yticks || ticks(y0, y1)) g += `<line class="grid" x1="${m.l}" x2="${w - m.r}" y1="${Y(t)}" y2="${Y(t)}"/><text x="${m.l - 4}" y="${Y(t) + 3}" text-anchor="end">${yfmt(t)}</text>`;
  for (const t of ticks(x0, x1, 5, xint)) g += `<line class="axis" x1="${X(t)}" x2="${X(t)}" y1="${h - m.b}" y2="${h - m.b + 3}"/><text x="${X(t)}" y="${h - m.b + 13}" text-anchor="middle">${tick(t)}</text>`;
  g += `<line class="axis" x1="${m.l}" x2="${w - m.r}" y1="${h - m.b}" y2="${h - m.b}"/><line class="axis" x1="${m.l}" x2="${m.l}" y1="${m.t}" y2="${h - m.b}"/>`;
  g += `<text x="${(m.l + w - m.r) / 2}" y="${h - 3}" text-anchor="middle">${esc(xlabel)}</text>`;
  g += `<text transform="translate(10 ${(m.t + h - m.b) / 2}) rotate(-90)" text-anchor="middle">${esc(ylabel)}</text>`;
  return {X, Y, g};
}
function lineChart(xs, series, xlabel, ylabel, opts = {}) {
  const w = opts.w || 290, h = opts.h || 170, m = {l: 50, r: 8, t: 8, b: 30};
  const all = series.flatMap(s => s.ys).filter(v => v !== null);
  let lo = Math.min(...all, opts.zero ? 0 : Infinity), hi = Math.max(...all, opts.zero ? 0 : -Infinity);
  if (!(hi > lo)) hi = lo + 1;
  const pad = 0.04 * (hi - lo);
  const {X, Y, g} = frame(w, h, m, [Math.min(...xs), Math.max(...xs)], [lo - pad, hi + pad], xlabel, ylabel, opts.yint ? ticks(lo - pad, hi + pad, 4, true) : null, tick, opts.integer);
  let body = g;
  if (opts.zero) body += `<line class="axis" stroke-dasharray="2 2" x1="${m.l}" x2="${w - m.r}" y1="${Y(0)}" y2="${Y(0)}"/>`;
  for (const s of series) {
    const pts = s.ys.map((v, i) => v === null ? null : `${X(xs[i]).toFixed(1)},${Y(v).toFixed(1)}`).filter(p => p);
    body += `<polyline fill="none" stroke="${s.color}" stroke-width="${s.width || 1.6}" points="${pts.join(" ")}"><title>${esc(s.name)}</title></polyline>`;
    if (xs.length <= 40) body += pts.map(p => `<circle cx="${p.split(",")[0]}" cy="${p.split(",")[1]}" r="1.8" fill="${s.color}"/>`).join("");
  }
  const legend = series.length > 1 ? `<div class="legend">${series.map(s => `<span><i style="background:${s.color}"></i>${esc(s.name)}</span>`).join("")}</div>` : "";
  return `<svg viewBox="0 0 ${w} ${h}" width="100%" role="img">${body}</svg>${legend}`;
}
function histogram(counts, lo, hi, xlabel, ylabel, opts = {}) {
  const w = opts.w || 290, h = opts.h || 150, m = {l: 42, r: 8, t: 8, b: 30};
  // y: log10(1 + count), ticks at 0, 1, 10, 100, ...
  const ymax = Math.max(...counts.map(c => Math.log10(1 + c)), Math.log10(2));
  const yt = ymax < 1.5 ? [0] : []; for (let c = 1; Math.log10(1 + c) <= ymax + 1e-9; c *= 10) yt.push(Math.log10(1 + c));
  const {X, Y, g} = frame(w, h, m, [lo, hi], [0, ymax], xlabel, ylabel, yt, t => String(Math.round(Math.pow(10, t) - 1)));
  const step = (hi - lo) / counts.length;
  let body = g;
  counts.forEach((c, i) => {
    if (!c) return;
    const x = X(lo + i * step), x2 = X(lo + (i + 1) * step), y = Y(Math.log10(1 + c));
    body += `<rect x="${x.toFixed(1)}" y="${y.toFixed(1)}" width="${Math.max(x2 - x - 0.5, 0.5).toFixed(1)}" height="${(h - m.b - y).toFixed(1)}" fill="${opts.color || "#5b7fbd"}"><title>${fmt(lo + i * step)}–${fmt(lo + (i + 1) * step)}: ${c}</title></rect>`;
  });
  if (opts.marker !== undefined) body += `<line x1="${X(opts.marker)}" x2="${X(opts.marker)}" y1="${m.t}" y2="${h - m.b}" stroke="#d9480f" stroke-dasharray="3 2"><title>${esc(opts.markerLabel || "")}</title></line>`;
  return `<svg viewBox="0 0 ${w} ${h}" width="100%" role="img">${body}</svg>`;
}
function bins(values, n, lo, hi) {
  const counts = new Array(n).fill(0);
  for (const v of values) counts[Math.min(n - 1, Math.max(0, Math.floor((v - lo) / ((hi - lo) || 1) * n)))]++;
  return counts;
}

// --- the index ---------------------------------------------------------------------------------
const columns = [
  {key: "k", label: "#", num: true, get: k => k, cell: k => subLink(k), title: "subnetwork"},
  {key: "p_act", label: "P_act", num: true, get: k => S[k].p_act, bar: "p_act",
   title: D.p_act_from === "training" ? "fraction of samples selecting the subnetwork in the last training epoch" : "fraction of the shown samples on which it is active"},
  {key: "mean_impact", label: "mean impact", num: true, get: k => S[k].mean_impact, bar: "mean_impact", title: "mean over the samples of I(x, v_k)"},
  {key: "max_impact", label: "max impact", num: true, get: k => S[k].max_impact, title: "largest impact on one sample"},
  {key: "status", label: "status", num: false, get: k => S[k].dead ? "dead" : "live", cell: k => S[k].dead ? '<span class="badge dead">dead</span>' : '<span class="badge live">live</span>'},
];
const labelOf = k => S[k].label >= 0 ? D.label_names[S[k].label] : "–";
if (D.label_names) columns.push({key: "label_purity", label: "top label", num: true, left: true, get: k => S[k].label_purity,
  cell: k => `${esc(labelOf(k))} <span class="muted">${pct(S[k].label_purity)}</span>`, title: "most common label of the top samples, and its share (sorts by the share)"});
if (D.circuit_names) columns.push({key: "circuit", label: "best circuit |cos|", num: true, get: k => Math.max(...S[k].circuits),
  cell: k => { const c = S[k].circuits, b = c.indexOf(Math.max(...c)); return `${fmt(c[b])} <span class="muted">${esc(D.circuit_names[b])}</span>`; }});
columns.push({key: "summary", label: "summary", num: false, get: k => S[k].summary, cell: k => esc(S[k].summary), cls: "summary",
  title: D.kind === "texts" ? "most common target tokens of the top samples · outputs raised most" : "what the top samples share · outputs raised most"});
const maxOf = {p_act: Math.max(...S.map(s => s.p_act)) || 1, mean_impact: Math.max(...S.map(s => s.mean_impact)) || 1};
const sort = {key: "k", dir: 1};

function indexRows() {
  const q = (document.getElementById("filter") || {}).value || "";
  const hideDead = (document.getElementById("hidedead") || {}).checked;
  const col = columns.find(c => c.key === sort.key);
  const text = k => (S[k].summary + (D.label_names ? " " + labelOf(k) : "")).toLowerCase();
  let ks = S.map((_, k) => k).filter(k => !(hideDead && S[k].dead) && (!q || text(k).includes(q.toLowerCase()) || String(k) === q));
  ks.sort((a, b) => { const x = col.get(a), y = col.get(b); return (x < y ? -1 : x > y ? 1 : 0) * sort.dir || a - b; });
  document.getElementById("rows").innerHTML = ks.map(k => `<tr data-k="${k}">` + columns.map(c => {
    let inner = c.cell ? c.cell(k) : fmt(c.get(k));
    if (c.bar) inner = `<div class="bar"><i style="width:${(100 * c.get(k) / maxOf[c.bar]).toFixed(1)}%"></i><span>${inner}</span></div>`;
    return `<td class="${c.num && !c.left ? "num" : ""} ${c.cls || ""}">${inner}</td>`;
  }).join("") + "</tr>").join("");
  document.getElementById("shown").textContent = `${ks.length} of ${S.length} subnetworks`;
  for (const th of document.querySelectorAll("table.index th")) th.setAttribute("aria-sort", th.dataset.key === sort.key ? (sort.dir > 0 ? "ascending" : "descending") : "none");
}
function historyCards() {
  const H = D.history, cards = [];
  if (H && H.reconstruction_error.length) {
    const xs = H.reconstruction_error.map((_, i) => i + 1);
    cards.push(`<div class="card"><h3>Reconstruction error per epoch</h3>${lineChart(xs, [{name: "reconstruction error", ys: H.reconstruction_error, color: PALETTE[0]}], "epoch", "error", {integer: true})}<div class="note">last epoch ${fmt(H.reconstruction_error.at(-1))}, lowest ${fmt(Math.min(...H.reconstruction_error))}</div></div>`);
    cards.push(`<div class="card"><h3>Dead subnetworks per epoch</h3>${lineChart(xs, [{name: "dead", ys: H.dead, color: PALETTE[4]}], "epoch", "dead subnetworks", {zero: true, integer: true, yint: true})}<div class="note">P_act = 0 in the epoch; last epoch ${H.dead.at(-1)} of ${S.length}</div></div>`);
  }
  const p = S.map(s => s.p_act), hi = Math.max(...p) || 1;
  cards.push(`<div class="card"><h3>P_act of the subnetworks</h3>${histogram(bins(p, 30, 0, hi), 0, hi, "P_act", "subnetworks")}<div class="note">${D.p_act_from === "training" ? "last training epoch" : "on the shown samples"}; y: log scale</div></div>`);
  return cards.join("");
}
function tensorList() {
  // the decomposed tensors with their shapes (hover: Tucker ranks), a prefix they share written once
  const names = Object.keys(D.tensors);
  let prefix = names.length > 1 ? names.reduce((a, b) => { let i = 0; while (i < a.length && a[i] === b[i]) i++; return a.slice(0, i); }) : "";
  prefix = prefix.slice(0, prefix.lastIndexOf(".") + 1);
  const list = names.map(n => `<span title="Tucker rank ${D.ranks[n].join("×")}">${esc(n.slice(prefix.length))} ${D.tensors[n].join("×")}</span>`).join(", ");
  return `tensors ${esc(prefix)}${prefix ? "{" : ""}${list}${prefix ? "}" : ""}`;
}
function legend() {
  // the notations of the index's summary column (compute._summary and the input kinds' summaries)
  const parts = [D.kind === "texts" ? "→ the tokens its top samples predict (×count)"
                 : D.kind === "vectors" ? "inputs: the largest inputs of its top samples" : ""];
  if (D.circuit_names) parts.push("<circuit> |cos|: the ground-truth circuit nearest its direction");
  parts.push("↑ the outputs its direction raises most (∂f/∂δ at δ = 0)");
  return "Summary: " + parts.filter(p => p).map(esc).join(" · ");
}

function indexPage() {
  const dead = S.filter(s => s.dead).length, H = D.history;
  app.innerHTML = `<h1>${esc(D.title)}</h1>
  <div class="meta"><b>${S.length}</b> subnetworks · <b>${S.length - dead}</b> live, <b>${dead}</b> dead ·
  ${H && H.reconstruction_error.length ? `reconstruction error <b>${fmt(H.reconstruction_error.at(-1))}</b> · ` : ""}
  top_k ${D.top_k} · impacts on <b>${D.n_samples}</b> held-out samples${D.kind === "texts" ? ` (${D.n_items} texts × ${D.length} positions)` : ""} ·
  ${D.divergence.toUpperCase()} divergence · ${tensorList()}</div>
  <div class="cards">${historyCards()}</div>
  <div class="controls"><input type="search" id="filter" placeholder="filter summaries and labels (e.g. a token or class)">
  <label><input type="checkbox" id="hidedead"> hide dead</label><span class="muted" id="shown"></span>
  <span class="muted">click a column header to sort</span></div>
  <p class="muted legend">${legend()}</p>
  <table class="index"><thead><tr>${columns.map(c => `<th data-key="${c.key}" title="${esc(c.title || "")}" class="${c.num && !c.left ? "num" : ""}">${esc(c.label)}</th>`).join("")}</tr></thead><tbody id="rows"></tbody></table>`;
  for (const th of document.querySelectorAll("table.index th")) th.addEventListener("click", () => {
    const col = columns.find(c => c.key === th.dataset.key);
    sort.dir = sort.key === col.key ? -sort.dir : (col.num ? -1 : 1);
    sort.key = col.key;
    indexRows();
  });
  document.getElementById("filter").addEventListener("input", indexRows);
  document.getElementById("hidedead").addEventListener("change", indexRows);
  indexRows();
}

// --- samples -----------------------------------------------------------------------------------
function tokenSpans(item, alphas, target, tips) {
  // alphas[p], tips[p]: shade (0..1) and hover text of predicting token p + 1 (the sample at position p)
  const e = D.items[item];
  return e.ids.map((id, i) => {
    const a = i > 0 ? alphas[i - 1] : 0;
    const style = a > 0 ? `background:rgba(var(--imp),${Math.min(1, a).toFixed(3)})` : "";
    const label = i > 0 && e.labels ? ` · ${D.label_names[e.labels[i - 1]]}` : "";
    const tip = i === 0 ? "first token (never predicted)" : `predicted at position ${i - 1}: ${tips[i - 1]}${label}`;
    const [, lead, word, trail] = D.vocabulary[String(id)].replace(/\n/g, "↵").match(/^(\s*)(.*?)(\s*)$/s);
    const [before, core, after] = word ? [lead, word, trail] : ["", lead + trail, ""];
    return `${esc(before)}<span class="tok${i === target ? " target" : ""}${i === 0 ? " first" : ""}" style="${style}" title="${esc(tip)}">${esc(core)}</span>${esc(after)}`;
  }).join("");
}
function textSamples(k) {
  const s = S[k], scale = s.top_impact[0] || 1;
  return s.top.map((sample, r) => {
    const item = Math.floor(sample / D.length), pos = sample % D.length, values = s.token_impact[r];
    const e = D.items[item], tag = e.labels ? `<span class="tag">${esc(D.label_names[e.labels[pos]])}</span>` : "";
    return `<div class="sample"><span class="rank">${r + 1}</span><span class="val num">${fmt(s.top_impact[r])}</span>
      <a class="id" href="#x/${item}" title="the whole text and the subnetworks acting on each token">${itemName(item)} · pos ${pos}</a>
      <span class="tokens">${tokenSpans(item, values.map(v => v / scale), pos + 1, values.map(v => "impact " + fmt(v)))}</span>${tag}</div>`;
  }).join("");
}
function imageSamples(k) {
  const s = S[k];
  return `<div class="images">${s.top.map((item, r) => {
    const label = D.items[item].labels ? `<b>${esc(D.label_names[D.items[item].labels[0]])}</b> · ` : "";
    return `<figure><a href="#x/${item}" title="${itemName(item)}"><img alt="${itemName(item)}" src="${D.images[item]}"></a><figcaption>${label}${fmt(s.top_impact[r])}<br><a href="#x/${item}">${itemName(item)}</a></figcaption></figure>`;
  }).join("")}</div>`;
}
function vectorCells(x) {
  const m = Math.max(...x.map(Math.abs)) || 1;
  return x.map(v => `<td class="cell" style="background:rgba(var(${v >= 0 ? "--pos" : "--neg"}),${(0.75 * Math.abs(v) / m).toFixed(3)})">${v ? fmt(v, 2) : ""}</td>`).join("");
}
function featureHeader() {
  const n = D.items[Object.keys(D.items)[0]].x.length;
  return (D.feature_names || [...Array(n).keys()].map(i => "x" + i)).map(f => `<th class="num">${esc(f)}</th>`).join("");
}
function vectorSamples(k) {
  const s = S[k];
  return `<table class="vec"><thead><tr><th class="num">rank</th><th class="num">impact</th><th>sample</th>${D.label_names ? "<th>label</th>" : ""}${featureHeader()}</tr></thead><tbody>${s.top.map((item, r) => {
    const e = D.items[item];
    return `<tr><td class="num">${r + 1}</td><td class="num">${fmt(s.top_impact[r])}</td><td><a href="#x/${item}">${itemName(item)}</a></td>${e.labels ? `<td>${esc(D.label_names[e.labels[0]])}</td>` : ""}${vectorCells(e.x)}</tr>`;
  }).join("")}</tbody></table>`;
}

// --- a subnetwork ------------------------------------------------------------------------------
function outputTable(rows, sign) {
  if (!rows.length) return `<div class="muted">none ${sign > 0 ? "raised" : "lowered"}</div>`;
  const m = Math.max(...rows.map(r => Math.abs(r[1])));
  return `<table class="outputs">${rows.map(([j, v]) => `<tr><td class="name">${esc(outName(j))}</td><td class="num">${v > 0 ? "+" : ""}${fmt(v)}</td>
    <td style="width:45%"><div style="height:8px;width:${(100 * Math.abs(v) / m).toFixed(1)}%;background:rgba(var(${sign > 0 ? "--pos" : "--neg"}),.7)"></div></td></tr>`).join("")}</table>`;
}
function subnetworkPage(k) {
  const s = S[k];
  const prev = k > 0 ? `<a href="#s/${k - 1}">‹ #${k - 1}</a>` : "", next = k < S.length - 1 ? `<a href="#s/${k + 1}">#${k + 1} ›</a>` : "";
  const threshold = s.top_impact.at(-1);
  const cards = [];
  cards.push(`<div class="card"><h3>Impact on the ${D.n_samples} samples</h3>${histogram(s.histogram.counts, 0, s.histogram.max, "impact I(x, v_" + k + ")", "samples", {marker: threshold, markerLabel: "smallest top-sample impact"})}
    <div class="note">dashed: the ${D.n_top}th largest impact (top samples to its right); y: log scale</div></div>`);
  cards.push(`<div class="card"><h3>Outputs it moves: ∂f/∂δ at δ = 0</h3><div class="muted">raised most</div>${outputTable(s.raised, 1)}
    <div class="muted" style="margin-top:4px">lowered most</div>${outputTable(s.lowered, -1)}<div class="note">f(x; W0 + δ d_${k}), mean over the top samples${D.kind === "texts" ? " at their positions" : ""}</div></div>`);
  const sw = s.sweep, xs = D.deltas;
  const series = sw.outputs.map((j, i) => ({name: outName(j), ys: sw.change.map(row => row[i]), color: PALETTE[i % PALETTE.length]}));
  cards.push(`<div class="card"><h3>Intervention sweep: f(x; W0 + δ d_${k}) − f(x; W0)</h3>${lineChart(xs, series, "δ", "mean output change", {zero: true})}
    ${lineChart(xs, [{name: "divergence", ys: sw.divergence, color: "#111"}], "δ", D.divergence === "kl" ? "KL(f(W0) ‖ f)" : "squared error", {h: 110})}
    <div class="note">mean over the top samples; d_${k} has unit norm</div></div>`);
  cards.push(`<div class="card"><h3>Most often active with</h3>${s.coactive.length ? `<table class="coactive"><thead><tr><th style="width:3.2em"></th><th class="num" style="width:6em" title="P(active | #${k} active)">P(·|#${k})</th><th class="num" style="width:3.6em">lift</th><th>its summary</th></tr></thead><tbody>${s.coactive.map(([l, p, lift]) => `<tr title="${esc(S[l].summary)}"><td>${subLink(l)}</td><td class="num">${pct(p)}</td><td class="num">${fmt(lift, 2)}×</td><td class="summary muted">${esc(S[l].summary)}</td></tr>`).join("")}</tbody></table>` : '<div class="muted">never active together with another subnetwork</div>'}
    <div class="note">active: BatchTopK (top_k ${D.top_k}) over the impacts of all samples; lift = P(active | #${k}) / P(active)</div></div>`);
  if (D.circuit_names) {
    const m = Math.max(...s.circuits);
    cards.push(`<div class="card"><h3>|cos| of d_${k} with the ground-truth circuits</h3><table class="outputs">${s.circuits.map((c, i) => `<tr><td class="name">${esc(D.circuit_names[i])}</td><td class="num">${fmt(c)}</td><td style="width:55%"><div style="height:8px;width:${(100 * c).toFixed(1)}%;background:${c === m ? "#2b8a3e" : "#adb5bd"}"></div></td></tr>`).join("")}</table></div>`);
  }
  const samples = D.kind === "texts" ? textSamples(k) : D.kind === "images" ? imageSamples(k) : vectorSamples(k);
  const note = D.kind === "texts" ? "each token is shaded by the subnetwork's impact on predicting it (relative to the top sample); outlined: the sample's target token; hover a token for its value" : "";
  app.innerHTML = `<nav><a href="#">← all subnetworks</a>${prev}${next}</nav>
  <h1>Subnetwork ${k} <span class="badge ${s.dead ? "dead" : "live"}">${s.dead ? "dead" : "live"}</span></h1>
  <div class="stats"><span>P_act <b>${fmt(s.p_act)}</b></span><span>active on shown samples <b>${fmt(s.active_here)}</b></span><span>mean impact <b>${fmt(s.mean_impact)}</b></span>
  <span>max impact <b>${fmt(s.max_impact)}</b></span>${D.label_names ? `<span>top label <b>${esc(labelOf(k))}</b> (${pct(s.label_purity)} of top samples)</span>` : ""}<span class="muted">${esc(s.summary)}</span></div>
  <div class="cards">${cards.join("")}</div>
  <h2>Top ${s.top.length} samples by impact</h2><div class="muted" style="margin-bottom:4px">${note}</div><div id="samples">${samples}</div>`;
}

// --- a sample (text, image or vector) ----------------------------------------------------------
function itemPage(item) {
  const e = D.items[item];
  if (!e) { app.innerHTML = `<nav><a href="#">← all subnetworks</a></nav><p>${itemName(item)} is not among any subnetwork's top samples.</p>`; return; }
  const subs = list => list.map(([k, v]) => `<a href="#s/${k}" title="impact ${fmt(v)}">#${k} <span class="muted">${fmt(v)}</span></a>`).join("");
  let body = "";
  if (D.kind === "texts") {
    const rows = e.ids.slice(1).map((id, p) => `<tr><td class="num">${p}</td><td class="tokens">${esc(D.vocabulary[String(e.ids[p])].trim())} → <b>${esc(D.vocabulary[String(id)].trim())}</b></td>${e.labels ? `<td>${esc(D.label_names[e.labels[p]])}</td>` : ""}<td class="subs">${subs(e.top[p])}</td></tr>`);
    const best = e.top.map(t => t[0][1]), m = Math.max(...best) || 1;
    body = `<div class="tokens" style="margin:8px 0">${tokenSpans(item, best.map(v => v / m), -1, e.top.map(t => `largest impact: #${t[0][0]} ${fmt(t[0][1])}`))}</div>
      <div class="muted">tokens shaded by the largest impact of any subnetwork on predicting them</div>
      <table style="margin-top:8px; width:auto"><thead><tr><th class="num">position</th><th>input → target</th>${e.labels ? "<th>label</th>" : ""}<th>subnetworks with the largest impact</th></tr></thead><tbody>${rows.join("")}</tbody></table>`;
  } else {
    const label = e.labels ? `<p>label <b>${esc(D.label_names[e.labels[0]])}</b></p>` : "";
    const shown = D.kind === "images" ? `<div class="big"><img alt="${itemName(item)}" src="${D.images[item]}"></div>` : `<table class="vec"><thead><tr>${featureHeader()}</tr></thead><tbody><tr>${vectorCells(e.x)}</tr></tbody></table>`;
    body = `${shown}${label}<h2>Subnetworks with the largest impact</h2><div class="subs">${subs(e.top[0])}</div>`;
  }
  const tops = S.map((s, k) => [k, s.top.findIndex(t => Math.floor(t / D.length) === Number(item))]).filter(([, r]) => r >= 0);
  app.innerHTML = `<nav><a href="#">← all subnetworks</a></nav><h1>${itemName(item)}</h1>${body}
    <h2>Top sample of</h2><div class="subs">${tops.map(([k, r]) => `<a href="#s/${k}">#${k} <span class="muted">rank ${r + 1}</span></a>`).join("")}</div>`;
}

function route() {
  const m = location.hash.match(/^#(s|x)\/(\d+)$/);
  if (m && m[1] === "s" && +m[2] < S.length) subnetworkPage(+m[2]);
  else if (m && m[1] === "x") itemPage(m[2]);
  else indexPage();
  window.scrollTo(0, 0);
}
window.addEventListener("hashchange", route);
route();

// The page `vitengine serve` shows at /: drop cell images, see each prediction, a
// probability bar chart, the attention-rollout overlay and the class notes; with
// several images, the differential. Self-contained: no external scripts, fonts or
// styles. Server data is put in the page with textContent only, never as HTML.
#include <string>

#include "engine/serve/server.h"

namespace vit {

const std::string& index_html() {
  static const std::string page = R"HTML(<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>vitengine: white-blood-cell classifier</title>
<style>
body{font-family:system-ui,sans-serif;margin:0;background:#f6f7f9;color:#1d2330}
header{background:#243b6b;color:#fff;padding:14px 24px}header h1{margin:0;font-size:20px}
header p{margin:4px 0 0;font-size:13px;opacity:.85}main{max-width:1100px;margin:0 auto;padding:16px}
#drop{border:2px dashed #7a8aa8;border-radius:10px;padding:28px;text-align:center;background:#fff;cursor:pointer}
#drop.over{background:#e6eefc}#status{margin:10px 0;min-height:1.2em;font-size:14px}
.card{background:#fff;border-radius:10px;box-shadow:0 1px 3px #0002;padding:14px;margin:14px 0;display:grid;
grid-template-columns:180px 180px 1fr;gap:16px}.card img{width:180px;height:180px;object-fit:contain;background:#eee;border-radius:6px}
.card h2{margin:0 0 4px;font-size:18px}.pred-class{color:#243b6b}.review{display:inline-block;background:#ffe1a8;
color:#6b4500;border-radius:4px;padding:1px 6px;font-size:12px;margin-left:6px}.notes{font-size:13px;line-height:1.35}
.notes b{display:block;margin-top:6px}.cap{font-size:11px;color:#667;text-align:center}
table{border-collapse:collapse;background:#fff}td,th{border:1px solid #ccd;padding:4px 8px;font-size:13px}
tr.raised td{background:#fde2e1;font-weight:600}.disclaimer{background:#fff4d6;border-left:4px solid #e0a800;padding:8px;font-size:13px}
.err{color:#b00020}
</style></head><body>
<header><h1>vitengine &middot; white-blood-cell classifier</h1>
<p>Research tool, not a diagnosis. Images are sent only to this server. <span id="model"></span></p></header>
<main>
<div id="drop" tabindex="0">Drop cell images here or click to choose (JPEG, PNG, BMP)
<input type="file" id="file" accept="image/jpeg,image/png,image/bmp" multiple hidden></div>
<div id="status" role="status"></div>
<section id="results"></section>
<section id="differential"></section>
</main>
<script>
'use strict';
const $ = (s) => document.querySelector(s);
function el(tag, attrs, text) {
  const e = document.createElement(tag);
  for (const k in (attrs || {})) e.setAttribute(k, attrs[k]);
  if (text !== undefined) e.textContent = text;
  return e;
}
function status(msg, err) { const s = $('#status'); s.textContent = msg; s.className = err ? 'err' : ''; }
const pct = (p) => (100 * p).toFixed(1) + '%';

fetch('/healthz').then(r => r.json()).then(j => { $('#model').textContent = 'Model: ' + j.model; }).catch(() => {});

function chart(probs) {
  // Horizontal bars for every class, largest first.
  const NS = 'http://www.w3.org/2000/svg';
  const rows = Object.entries(probs).sort((a, b) => b[1] - a[1]);
  const rowH = 18, labelW = 170, barW = 200, W = labelW + barW + 60;
  const svg = document.createElementNS(NS, 'svg');
  svg.setAttribute('class', 'chart'); svg.setAttribute('width', W); svg.setAttribute('height', rows.length * rowH + 4);
  svg.setAttribute('role', 'img'); svg.setAttribute('aria-label', 'class probabilities');
  rows.forEach(([name, p], i) => {
    const y = i * rowH + 2;
    const t = document.createElementNS(NS, 'text');
    t.setAttribute('x', labelW - 6); t.setAttribute('y', y + 13); t.setAttribute('text-anchor', 'end');
    t.setAttribute('font-size', '12'); t.textContent = name; svg.appendChild(t);
    const r = document.createElementNS(NS, 'rect');
    r.setAttribute('class', 'bar'); r.setAttribute('data-class', name);
    r.setAttribute('x', labelW); r.setAttribute('y', y + 2); r.setAttribute('height', rowH - 5);
    r.setAttribute('width', Math.max(1, barW * p)); r.setAttribute('fill', i === 0 ? '#243b6b' : '#8fa3c7');
    svg.appendChild(r);
    const v = document.createElementNS(NS, 'text');
    v.setAttribute('x', labelW + Math.max(1, barW * p) + 4); v.setAttribute('y', y + 13);
    v.setAttribute('font-size', '11'); v.textContent = pct(p); svg.appendChild(v);
  });
  return svg;
}

function card(file, res) {
  const c = el('div', {class: 'card'});
  const left = el('div');
  const img = el('img', {alt: 'uploaded cell'}); img.src = URL.createObjectURL(file);
  left.append(img, el('div', {class: 'cap'}, res.name));
  const mid = el('div');
  const ov = el('img', {class: 'overlay', alt: 'attention overlay (loading)'});
  mid.append(ov, el('div', {class: 'cap'}, 'attention rollout'));
  const right = el('div');
  const h = el('h2'); h.append(el('span', {class: 'pred-class'}, res.prediction), document.createTextNode(' ' + pct(res.confidence)));
  if (res.review) h.append(el('span', {class: 'review'}, 'low confidence: review'));
  right.append(h, chart(res.probabilities));
  const n = el('div', {class: 'notes'});
  if (res.notes && res.notes.description) {
    n.append(el('b', {}, 'What it is'), el('span', {}, res.notes.description),
             el('b', {}, 'When it is abnormal'), el('span', {}, res.notes.abnormal),
             el('b', {}, 'Did you know'), el('span', {}, res.notes.fact));
  }
  right.append(n);
  c.append(left, mid, right);
  return [c, ov];
}

function differential(d) {
  const s = $('#differential'); s.textContent = '';
  if (!d) return;
  s.append(el('h2', {}, 'Differential of ' + d.cells_total + ' cells'), el('p', {class: 'disclaimer'}, d.disclaimer));
  const t = el('table', {id: 'diff-table'});
  t.append(Object.assign(el('tr'), {}));
  t.lastChild.append(el('th', {}, 'Part'), el('th', {}, 'Count'), el('th', {}, '% of WBC'));
  for (const p of d.five_part.concat(d.outside_five_part)) {
    const r = el('tr'); r.append(el('td', {}, p.name), el('td', {}, p.count), el('td', {}, p.pct_of_wbc.toFixed(1)));
    t.append(r);
  }
  s.append(t);
  const f = el('table', {id: 'flags'});
  const hr = el('tr'); hr.append(el('th', {}, 'Flag'), el('th', {}, 'Raised'), el('th', {}, 'Rule'), el('th', {}, 'Value')); f.append(hr);
  for (const x of d.flags) {
    const r = el('tr', x.raised ? {class: 'raised'} : {});
    r.append(el('td', {}, x.flag), el('td', {}, x.raised ? 'YES' : 'no'), el('td', {}, x.rule), el('td', {}, x.value));
    f.append(r);
  }
  s.append(el('h3', {}, 'Flags'), f);
}

async function explain(file, ov) {
  const fd = new FormData(); fd.append('image', file, file.name);
  try {
    const r = await fetch('/v1/explain', {method: 'POST', body: fd});
    const j = await r.json();
    if (!r.ok) { ov.alt = 'no overlay: ' + j.error.message; return; }
    ov.src = 'data:image/png;base64,' + j.overlay_png_base64; ov.alt = 'attention overlay';
  } catch (e) { ov.alt = 'no overlay: ' + e; }
}

async function handle(files) {
  files = Array.from(files);
  if (!files.length) return;
  const fd = new FormData();
  for (const f of files) fd.append('image', f, f.name);
  status('Classifying ' + files.length + ' image(s)...');
  $('#results').textContent = ''; $('#differential').textContent = '';
  let j;
  try {
    const r = await fetch('/v1/predict?top_k=3', {method: 'POST', body: fd});
    j = await r.json();
    if (!r.ok) { status('Error: ' + j.error.message, true); return; }
  } catch (e) { status('Error: ' + e, true); return; }
  const overlays = [];
  j.results.forEach((res, i) => { const [c, ov] = card(files[i], res); $('#results').append(c); overlays.push(ov); });
  differential(j.differential);
  status('Done: ' + j.results.length + ' image(s), model ' + j.model + '.');
  for (let i = 0; i < files.length; ++i) await explain(files[i], overlays[i]);
  document.body.setAttribute('data-state', 'done');
}

const drop = $('#drop'), input = $('#file');
drop.addEventListener('click', () => input.click());
drop.addEventListener('keydown', (e) => { if (e.key === 'Enter' || e.key === ' ') input.click(); });
input.addEventListener('change', () => handle(input.files));
drop.addEventListener('dragover', (e) => { e.preventDefault(); drop.classList.add('over'); });
drop.addEventListener('dragleave', () => drop.classList.remove('over'));
drop.addEventListener('drop', (e) => { e.preventDefault(); drop.classList.remove('over'); handle(e.dataTransfer.files); });
</script></body></html>
)HTML";
  return page;
}

}  // namespace vit

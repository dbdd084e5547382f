// isoflop serve: the dashboard's page. It fetches the JSON API (docs/serve.md) and draws it
// with Chart.js; it computes no law, frontier or answer itself. Live: the open source is polled
// every few seconds, and charts are redrawn only when the server's revision token changes.
'use strict';

const POLL_MS = 3000;
const POWER_LAW_CI = { n_opt_a: 'a', d_opt_b: 'b', n_opt_k: 'k_n', d_opt_k: 'k_d' };
const state = {
  kind: null, name: null, revision: null, cells: [], sort: { key: 'budget', dir: 1 },
  charts: {}, refreshes: 0, timer: null,
  optimalSeq: 0, optimalAuto: false,  // the optimal box: latest question; filled in by the page
};
window.isoflop = state;  // for the browser test and for curious users in the console

// ---- formatting -------------------------------------------------------------------------
// "1.5 GiB" from 1 GiB up, else "233 MiB" (as the command line writes sizes).
const fmtBytes = b => (b === null || b === undefined) ? '–'
  : b >= 2 ** 30 ? `${(b / 2 ** 30).toFixed(1)} GiB` : `${Math.round(b / 2 ** 20)} MiB`;
const fmt = (v, p = 4) => (v === null || v === undefined || !isFinite(v)) ? '–' : Number(v).toPrecision(p);
const fmtInt = v => (v === null || v === undefined) ? '–' : Number(v).toLocaleString('en-US');
function fmtEta(s) {
  if (s === null || s === undefined || !isFinite(s)) return '–';
  if (s < 90) return `${Math.round(s)} s`;
  if (s < 5400) return `${Math.round(s / 60)} min`;
  return `${(s / 3600).toFixed(1)} h`;
}
const el = id => document.getElementById(id);

async function getJson(url) {
  const res = await fetch(url, { cache: 'no-store' });
  const body = await res.json();
  if (!res.ok) throw new Error(body.error || `HTTP ${res.status}`);
  return body;
}

// ---- colours: N on a log scale (blue small .. red large); budgets by dash pattern ----------
function colourForN(n, nMin, nMax) {
  const t = nMax > nMin ? (Math.log(n) - Math.log(nMin)) / (Math.log(nMax) - Math.log(nMin)) : 0.5;
  return `hsl(${Math.round(230 - 230 * t)}, 70%, 45%)`;
}
const DASHES = [[], [6, 3], [2, 2], [10, 3, 2, 3], [1, 4]];
const MARKERS = ['circle', 'triangle', 'rect', 'rectRot', 'star', 'crossRot'];

// ---- charts -------------------------------------------------------------------------------
// Log-axis ticks as 1e9, 3e9 (not 1,000,000,000); linear ones as Chart.js writes them.
function tickLabel(v) {
  const a = Math.abs(v);
  if (a === 0 || (a >= 1e-2 && a < 1e5)) return Number(v.toPrecision(3)).toString();
  // Two significant digits, so that 1e9 and 1.2e9 on a narrow range are not both "1e9".
  return Number(v.toPrecision(2)).toExponential().replace('e+', 'e');
}
function logAxis(title, type = 'logarithmic') {
  const ticks = { maxTicksLimit: 8 };
  if (type === 'logarithmic') {
    // Chart.js picks which log ticks get a label (1, 2, 5 x 10^k); this only writes them shorter.
    ticks.callback = function (v, i, all) {
      return Chart.Ticks.formatters.logarithmic.call(this, v, i, all) === '' ? '' : tickLabel(v);
    };
  }
  return { type, title: { display: true, text: title }, ticks };
}

// Creates the chart on `id` once, then only swaps its datasets (no flicker while live).
function draw(id, datasets, xTitle, yTitle, opts = {}) {
  let chart = state.charts[id];
  if (!chart) {
    chart = new Chart(el(id), {
      type: 'scatter',
      data: { datasets: [] },
      options: {
        animation: false, responsive: true, maintainAspectRatio: false, parsing: false,
        interaction: { mode: 'nearest', intersect: false },
        scales: { x: logAxis(xTitle, opts.xType), y: logAxis(yTitle, opts.yType) },
        plugins: {
          legend: { display: opts.legend !== false, labels: { boxWidth: 12, filter: i => !i.text.startsWith('_') } },
          tooltip: {
            callbacks: {
              label: ctx => `${ctx.dataset.label.replace(/^_/, '')}: (${fmt(ctx.parsed.x, 3)}, ${fmt(ctx.parsed.y, 4)})`,
            },
          },
        },
      },
    });
    state.charts[id] = chart;
  }
  chart.data.datasets = datasets;
  chart.update('none');
  return chart;
}

const xy = (xs, ys) => xs.map((x, i) => ({ x, y: ys[i] })).filter(p => p.x > 0 && p.y !== null && isFinite(p.y));

function drawRuns(series) {
  const runs = series.runs;
  const ns = runs.map(r => r.n_total).filter(n => n > 0);
  const nMin = Math.min(...ns), nMax = Math.max(...ns);
  const budgets = [...new Set(runs.map(r => r.budget))].sort((a, b) => a - b);
  for (const [id, xKey, xTitle] of [['chart-tokens', 'tokens', 'tokens D'], ['chart-flops', 'flops', 'FLOPs C']]) {
    const datasets = runs.map(r => {
      const b = budgets.indexOf(r.budget);
      const colour = colourForN(r.n_total, nMin, nMax);
      return {
        label: `${r.shape} N=${fmt(r.n_total, 3)} C=${fmt(r.budget, 3)} (${r.status})`,
        data: xy(r[xKey], r.train_loss), showLine: true, pointRadius: 0, borderWidth: 1.5,
        borderColor: colour, backgroundColor: colour, borderDash: DASHES[b % DASHES.length],
        runId: r.run_id,
      };
    });
    draw(id, datasets, xTitle, 'training loss', { legend: false });
  }
}

function drawFits(fits) {
  const c = fits.curves || {};
  const points = c.points || [];
  const budgets = [...new Set(points.map(p => p.budget))].sort((a, b) => a - b);
  const palette = i => `hsl(${Math.round(230 - 230 * (budgets.length > 1 ? i / (budgets.length - 1) : 0.5))}, 70%, 45%)`;
  // isoFLOP profiles: the observations per budget, and the isoFLOP fit's parabolas.
  const profile = budgets.map((b, i) => ({
    label: `C=${fmt(b, 3)}`, data: points.filter(p => p.budget === b).map(p => ({ x: p.n, y: p.loss })),
    pointStyle: MARKERS[i % MARKERS.length], pointRadius: 4, borderColor: palette(i), backgroundColor: palette(i),
  }));
  const iso = c.isoflop && !c.isoflop.error ? c.isoflop : null;
  for (const pb of (iso && iso.parabolas) || []) {
    if (!pb.n || !pb.usable) continue;  // an unusable profile's parabola says nothing
    const i = budgets.findIndex(b => Math.abs(b / pb.c - 1) < 1e-6);
    const colour = palette(i < 0 ? 0 : i);
    profile.push({ label: `_parabola C=${fmt(pb.c, 3)}`, data: xy(pb.n, pb.loss_n), showLine: true,
      pointRadius: 0, borderWidth: 1.5, borderColor: colour, backgroundColor: colour });
  }
  const manyBudgets = budgets.length > 10;  // a legend of 85 budgets hides the chart
  draw('chart-profiles', profile, 'parameters N', 'final loss', { legend: !manyBudgets });

  // The frontier with its band, and each budget's isoFLOP optimum as points.
  const par = c.parametric && !c.parametric.error ? c.parametric.parametric : null;
  for (const [id, key, title] of [['chart-nopt', 'n', 'N_opt'], ['chart-dopt', 'd', 'D_opt']]) {
    const ds = [];
    if (par) {
      const f = par.frontier;
      if (par.band) {
        ds.push({ label: '_band lo', data: xy(f.c, par.band[`${key}_lo`]), showLine: true, pointRadius: 0,
          borderWidth: 0, borderColor: 'rgba(47,91,211,0.2)', backgroundColor: 'rgba(47,91,211,0.2)' });
        ds.push({ label: `${Math.round(100 * par.band.level)}% band`, data: xy(f.c, par.band[`${key}_hi`]),
          showLine: true, pointRadius: 0, borderWidth: 0, fill: '-1',
          borderColor: 'rgba(47,91,211,0.2)', backgroundColor: 'rgba(47,91,211,0.2)' });
      }
      ds.push({ label: `parametric ${c.parametric.form} (fit ${c.parametric.fit_id})`, data: xy(f.c, f[`${key}_opt`]),
        showLine: true, pointRadius: 0, borderWidth: 2, borderColor: '#2f5bd3', backgroundColor: '#2f5bd3' });
    }
    if (iso) {
      const opt = (iso.parabolas || []).filter(p => p.usable && p[`${key}_opt`]).map(p => ({ x: p.c, y: p[`${key}_opt`] }));
      ds.push({ label: 'isoFLOP minima', data: opt, pointRadius: 5, pointStyle: 'rectRot',
        borderColor: '#d95f02', backgroundColor: '#d95f02' });
      const pl = iso[`${key}_opt`];
      // The exponent's bootstrap interval, from the stored fit the curves evaluate.
      const stored = (fits.fits || []).find(f => f.id === iso.fit_id);
      const aci = stored && stored.ci && stored.ci[key === 'n' ? 'a' : 'b'];
      const band = aci && isFinite(aci.lo) ? ` [${fmt(aci.lo, 3)}, ${fmt(aci.hi, 3)}]` : '';
      if (pl) ds.push({ label: `isoFLOP power law C^${fmt(pl.a, 3)}${band}`, data: xy(pl.c, pl.value), showLine: true,
        pointRadius: 0, borderDash: [6, 3], borderColor: '#d95f02', backgroundColor: '#d95f02' });
    }
    draw(id, ds, 'compute C (FLOPs)', title);
  }

  // Residuals of the parametric fit at each observation.
  const res = par ? budgets.map((b, i) => ({
    label: `C=${fmt(b, 3)}`, pointStyle: MARKERS[i % MARKERS.length], pointRadius: 4,
    borderColor: palette(i), backgroundColor: palette(i),
    data: par.points.filter(p => p.budget === b && p.log_residual !== null).map(p => ({ x: p.c, y: p.log_residual })),
  })) : [];
  draw('chart-residuals', res, 'compute C (FLOPs)', 'log residual', { yType: 'linear', legend: !manyBudgets });

  // The table of stored fits, parameters with intervals.
  const tbody = el('fits').querySelector('tbody');
  tbody.replaceChildren(...fits.fits.map(f => {
    const tr = document.createElement('tr');
    const params = Object.entries(f.params || {}).filter(([, v]) => typeof v === 'number').map(([k, v]) => {
      // An isoFLOP or envelope fit names its intervals after the power laws' quantities.
      const ci = f.ci && (f.ci[k] || f.ci[POWER_LAW_CI[k]]);
      // A held parameter (--fix, or E at the data's entropy) is the same in every draw.
      const held = ci && ci.lo === v && ci.hi === v;
      if (held) return `${k}=${fmt(v, 4)} (held)`;
      return `${k}=${fmt(v, 4)}` + (ci && isFinite(ci.lo) ? ` [${fmt(ci.lo, 3)}, ${fmt(ci.hi, 3)}]` : '');
    }).join('  ');
    for (const v of [f.id, f.method, f.form || '', f.n_points, params || f.error || '', f.created_at || '']) {
      const td = document.createElement('td');
      td.textContent = v;
      tr.append(td);
    }
    return tr;
  }));
  el('fits-block').hidden = fits.fits.length === 0;
}

// ---- the cell table -------------------------------------------------------------------------
function sortValue(c, key) {
  if (key === 'loss') return c.final_val_loss ?? c.latest_loss ?? Infinity;
  const v = c[key];
  return v === null || v === undefined ? -Infinity : v;
}

function renderCells() {
  const { key, dir } = state.sort;
  const cells = [...state.cells].sort((a, b) => {
    const x = sortValue(a, key), y = sortValue(b, key);
    return (x < y ? -1 : x > y ? 1 : 0) * dir || a.budget - b.budget || a.n_total - b.n_total;
  });
  for (const th of el('cells').querySelectorAll('th')) {
    th.classList.toggle('sorted-asc', th.dataset.key === key && dir > 0);
    th.classList.toggle('sorted-desc', th.dataset.key === key && dir < 0);
  }
  const rows = cells.map(c => {
    const tr = document.createElement('tr');
    tr.className = `state-${c.status}`;
    tr.dataset.cell = c.cell;
    tr.dataset.runId = c.run_id;
    const add = (text, cls, title) => {
      const td = document.createElement('td');
      td.textContent = text;
      if (cls) td.className = cls;
      if (title) td.title = title;
      tr.append(td);
      return td;
    };
    add(fmt(c.budget, 3), 'num');
    add(c.shape, '', c.cell);
    add(fmtInt(c.n_total), 'num');
    add(fmtInt(c.tokens_target), 'num');
    add(c.status, 'state');
    const td = add('', 'num progress');
    const bar = document.createElement('div');
    bar.className = 'bar';
    bar.title = `${fmtInt(c.tokens_done)} of ${fmtInt(c.tokens_target)} tokens`;
    const fill = document.createElement('span');
    fill.style.width = `${(100 * c.progress).toFixed(1)}%`;
    bar.append(fill);
    td.append(bar, ` ${Math.round(100 * c.progress)}%`);
    add(c.tokens_per_s ? fmt(c.tokens_per_s, 3) : '–', 'num');
    add(c.status === 'running' ? fmtEta(c.eta_s) : '–', 'num');
    add(fmtBytes(c.peak_memory), 'num memory',
      `estimate ${fmtBytes(c.memory_estimate)}` + (c.peak_memory_of ? `; peak: ${c.peak_memory_of}` : ''));
    add(fmt(c.final_val_loss ?? c.latest_loss, 4), 'num');
    add(c.reason || '', 'reason');
    return tr;
  });
  el('cells').querySelector('tbody').replaceChildren(...rows);
}

for (const th of document.querySelectorAll('#cells th[data-key]')) {
  th.addEventListener('click', () => {
    const k = th.dataset.key;
    state.sort = { key: k, dir: state.sort.key === k ? -state.sort.dir : 1 };
    renderCells();
  });
}

// ---- views and polling ------------------------------------------------------------------
async function refreshList() {
  const data = await getJson('/api/sweeps');
  const link = (href, text, count) => {
    const li = document.createElement('li');
    const a = document.createElement('a');
    a.href = href;
    a.textContent = text;
    const span = document.createElement('span');
    span.className = 'count';
    span.textContent = count;
    a.append(span);
    li.append(a);
    return li;
  };
  el('sweep-list').replaceChildren(...data.sweeps.map(s =>
    link(`#/sweep/${encodeURIComponent(s.name)}`, s.name, `${s.by_status.finished || 0}/${s.cells}`)));
  el('obs-list').replaceChildren(...data.observation_sets.map(o =>
    link(`#/observations/${encodeURIComponent(o.name)}`, o.name, o.points)));
  for (const a of document.querySelectorAll('nav a')) a.classList.toggle('active', a.getAttribute('href') === location.hash);
  return data;
}

function base() {
  return `/api/${state.kind === 'sweep' ? 'sweeps' : 'observations'}/${encodeURIComponent(state.name)}`;
}

async function refreshSource() {
  const kind = state.kind, name = state.name;
  let revision = null;
  if (kind === 'sweep') {
    const s = await getJson(base());
    if (state.kind !== kind || state.name !== name) return;
    state.cells = s.cells;
    renderCells();
    const sum = s.sweep;
    const pct = sum.tokens_total ? sum.tokens_done / sum.tokens_total : 0;
    el('sweep-progress').firstElementChild.style.width = `${(100 * pct).toFixed(1)}%`;
    const counts = Object.entries(sum.by_status).map(([k, v]) => `${v} ${k}`).join(', ');
    el('source-meta').textContent = `${sum.status} · ${sum.cells} cells: ${counts} · ${Math.round(100 * pct)}% of tokens · ${sum.file}`;
    revision = s.revision;
  } else {
    revision = 'static';
  }
  if (revision !== state.revision) {
    const [series, fits] = await Promise.all([
      kind === 'sweep' ? getJson(`${base()}/series`) : null,
      getJson(`${base()}/fits`),
    ]);
    if (state.kind !== kind || state.name !== name) return;
    if (series) drawRuns(series);
    drawFits(fits);
    // New fits may change the answer: ask again (for the page's default, or what was typed).
    const c = state.optimalAuto || !el('optimal-c').value.trim() ? defaultBudget(fits) : null;
    if (c) {
      el('optimal-c').value = c.toExponential().replace('e+', 'e');
      state.optimalAuto = true;
    }
    if (el('optimal-c').value.trim()) answerOptimal();
    if (kind !== 'sweep') el('source-meta').textContent = `observation set · ${fits.curves.points.length} points`;
    state.revision = revision;
  }
  state.refreshes++;
  document.body.dataset.refreshes = state.refreshes;
}

async function tick() {
  clearTimeout(state.timer);
  try {
    await refreshList();
    if (state.kind) await refreshSource();
    el('live').className = 'live on';
  } catch (e) {
    el('live').className = 'live stale';
    el('live').title = String(e.message || e);
  }
  state.timer = setTimeout(tick, POLL_MS);
}

function route() {
  const m = location.hash.match(/^#\/(sweep|observations)\/(.+)$/);
  for (const c of Object.values(state.charts)) c.destroy();
  state.charts = {};
  state.revision = null;
  state.cells = [];
  if (!m) {
    state.kind = state.name = null;
    el('home').hidden = false;
    el('source').hidden = true;
    el('title').textContent = '';
  } else {
    state.kind = m[1];
    state.name = decodeURIComponent(m[2]);
    el('home').hidden = true;
    el('source').hidden = false;
    el('source-name').textContent = state.name;
    el('title').textContent = `${state.kind === 'sweep' ? 'sweep' : 'observation set'} ${state.name}`;
    el('source-meta').textContent = '';
    for (const id of ['cells-block', 'fig-tokens', 'fig-flops', 'sweep-progress']) el(id).hidden = state.kind !== 'sweep';
    for (const id of ['optimal-n', 'optimal-d', 'optimal-tpp', 'optimal-loss']) el(id).textContent = '–';
    for (const id of ['optimal-n-ci', 'optimal-d-ci', 'optimal-loss-ci', 'optimal-note']) el(id).textContent = '';
  }
  state.optimalSeq++;  // an answer still on its way was for the source left behind
  if (state.optimalAuto) el('optimal-c').value = '';  // the next source gets its own default
  tick();
}

// The optimal box: the server answers from the newest parametric fit (as `isoflop optimal`).
// Only the latest question's answer is shown, however the replies arrive.
async function answerOptimal() {
  const seq = ++state.optimalSeq;
  const c = el('optimal-c').value.trim();
  const note = el('optimal-note');
  note.textContent = '';
  try {
    const a = await getJson(`${base()}/optimal?c=${encodeURIComponent(c)}`);
    if (seq !== state.optimalSeq) return;
    const ci = k => a.ci && a.ci[k] ? `[${fmt(a.ci[k].lo)}, ${fmt(a.ci[k].hi)}]` : '';
    el('optimal-n').textContent = fmt(a.n);
    el('optimal-d').textContent = fmt(a.d);
    el('optimal-tpp').textContent = fmt(a.tokens_per_param, 3);
    el('optimal-loss').textContent = fmt(a.loss);
    el('optimal-n-ci').textContent = ci('n');
    el('optimal-d-ci').textContent = ci('d');
    el('optimal-loss-ci').textContent = ci('loss');
    note.textContent = `fit ${a.fit_id} (${a.form})` + (a.ci_draws_used ? `, ${a.ci_draws_used} bootstrap draws` : '') +
      (a.warning ? `; ${a.warning}` : '');
  } catch (e) {
    if (seq !== state.optimalSeq) return;
    for (const id of ['optimal-n', 'optimal-d', 'optimal-tpp', 'optimal-loss']) el(id).textContent = '–';
    note.textContent = e.message;
  }
  document.body.dataset.optimal = c;
}
el('optimal').addEventListener('submit', ev => { ev.preventDefault(); answerOptimal(); });
el('optimal-c').addEventListener('input', () => { state.optimalAuto = false; });

// The budget the box answers for when a source opens: the largest budget the newest parametric
// fit gives N_opt at (a sweep's report budgets, the next budget up; 1e19..1e23 for imported
// data), so the page leads with the answer `sweep run` printed. Null without such a fit.
function defaultBudget(fits) {
  const f = (fits.fits || []).find(x => x.method === 'parametric' && x.result && x.result.derived);
  if (!f) return null;
  const cs = Object.keys(f.result.derived).filter(k => k.startsWith('N_opt@')).map(k => Number(k.slice(6)))
    .filter(c => isFinite(c) && c > 0);
  return cs.length ? Math.max(...cs) : null;
}

window.addEventListener('hashchange', route);
route();

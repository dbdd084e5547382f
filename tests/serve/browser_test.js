// The dashboard in a real headless Chromium (Debian's, driven by playwright-core): a store made
// by the real binaries (a finished `sweep run` of tests/sweep/testdata/tiny.yaml refitted with a
// bootstrap, the Chinchilla points imported and fitted), the real `isoflop serve`, and the page.
// Asserts the cell table lists every cell, the curves chart has one series per run, and the
// optimal box shows the N and D that `isoflop optimal --format json` prints, to the page's
// digits; saves a screenshot as a test artifact.
//
//   node browser_test.js --isoflop BIN --source DIR --artifacts DIR [--chromium /usr/bin/chromium]
'use strict';

const { execFileSync, spawn } = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');

function args() {
  const a = { chromium: '/usr/bin/chromium' };
  for (let i = 2; i < process.argv.length; i += 2) a[process.argv[i].replace(/^--/, '')] = process.argv[i + 1];
  for (const k of ['isoflop', 'source', 'artifacts']) {
    if (!a[k]) throw new Error(`usage: node browser_test.js --isoflop BIN --source DIR --artifacts DIR (missing --${k})`);
  }
  for (const k of ['isoflop', 'source', 'artifacts']) a[k] = path.resolve(a[k]);
  return a;
}

let failures = 0;
function check(ok, what) {
  console.log(`${ok ? 'ok  ' : 'FAIL'} ${what}`);
  if (!ok) failures++;
}

function isoflop(bin, db, argv, cwd) {
  return execFileSync(bin, ['--db', db, ...argv], { cwd, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], maxBuffer: 1 << 26 });
}

async function main() {
  const a = args();
  const { startServer, launchChromium } = require(path.join(a.source, 'scripts', 'lib', 'serve-page.js'));
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'isoflop_browser_'));
  const db = path.join(dir, 's.db');
  const tiny = path.join(a.source, 'tests', 'sweep', 'testdata', 'tiny.yaml');
  const chin = path.join(a.source, 'data', 'chinchilla', 'svg_extracted_data.csv');
  let server = null, browser = null, manager = null;
  try {
    isoflop(a.isoflop, db, ['sweep', 'run', tiny, '--no-plot'], dir);
    // A parametric fit with a bootstrap, so the frontier has its band (tiny.yaml fits without).
    isoflop(a.isoflop, db, ['fit', '--sweep', 'tiny', '--bootstrap', '40'], dir);
    isoflop(a.isoflop, db, ['import', chin, '--name', 'chinchilla'], dir);
    // A fit with E held (stored first: the newest parametric fit, which answers, is the next).
    isoflop(a.isoflop, db, ['fit', '--observations', 'chinchilla', '--exclude-top-loss', '5', '--fix', 'E=1.82',
      '--bootstrap', '20'], dir);
    isoflop(a.isoflop, db, ['fit', '--observations', 'chinchilla', '--exclude-top-loss', '5', '--bootstrap', '40', '--method', 'all'], dir);
    const cells = JSON.parse(isoflop(a.isoflop, db, ['sweep', 'status', 'tiny', '--format', 'json'], dir));

    server = await startServer(a.isoflop, db, dir);
    browser = await launchChromium(a.source, a.chromium);
    const page = browser.pages()[0] || await browser.newPage();
    const errors = [];
    page.on('pageerror', e => errors.push(String(e)));
    // A 4xx answer the page expects (the bad budget below; the live sweep before its manager
    // has stored it) logs a load error; any other console error counts.
    page.on('console', m => {
      if (m.type() === 'error' && !/Failed to load resource: the server responded with a status of 4\d\d/.test(m.text())) errors.push(m.text());
    });
    // Nothing but the server may be asked for anything: the page works offline.
    const foreign = [];
    await page.route('**/*', route => {
      const u = route.request().url();
      if (u.startsWith(server.url)) return route.continue();
      foreign.push(u);
      return route.abort();
    });

    const t0 = Date.now();
    await page.goto(`${server.url}#/sweep/tiny`);
    await page.waitForFunction(n => document.querySelectorAll('#cells tbody tr').length === n &&
      window.isoflop.charts['chart-tokens'] && window.isoflop.charts['chart-nopt'], cells.length, { timeout: 30000 });
    console.log(`page loaded and drawn in ${Date.now() - t0} ms`);

    // On arrival the optimal box answers at the newest fit's largest report budget (tiny.yaml's
    // 8e9: `isoflop fit --sweep` gives its intervals there), as `isoflop optimal`.
    const wantDefault = JSON.parse(isoflop(a.isoflop, db, ['optimal', '--sweep', 'tiny', '--compute', '8e9',
      '--format', 'json'], dir))[0];
    await page.waitForFunction(() => document.body.dataset.optimal === '8e9' &&
      document.getElementById('optimal-n').textContent !== '–', null, { timeout: 10000 });
    const gotDefault = await page.evaluate(() => ({
      c: document.getElementById('optimal-c').value,
      n: document.getElementById('optimal-n').textContent,
      ci: document.getElementById('optimal-n-ci').textContent,
    }));
    check(gotDefault.c === '8e9' && gotDefault.n === Number(wantDefault.n_opt).toPrecision(4) && gotDefault.ci.startsWith('['),
      `optimal box answers at the report budget on arrival: C ${gotDefault.c}, N ${gotDefault.n} ${gotDefault.ci} = isoflop optimal ${wantDefault.n_opt}`);

    // The cell table lists every cell of `isoflop sweep status`, in its state colour.
    const rows = await page.$$eval('#cells tbody tr', trs => trs.map(tr => ({ cell: tr.dataset.cell, cls: tr.className })));
    check(rows.length === cells.length, `cell table has ${rows.length} rows, sweep status has ${cells.length} cells`);
    const keys = new Set(cells.map(c => c.cell));
    check(rows.every(r => keys.has(r.cell)) && new Set(rows.map(r => r.cell)).size === keys.size, 'every cell listed once');
    check(rows.every(r => r.cls === 'state-finished'), 'every row has the finished state class');
    // Each cell's measured peak memory, as `isoflop sweep status` has it, its estimate on hover.
    const memory = await page.$$eval('#cells tbody tr', trs => trs.map(tr => ({
      cell: tr.dataset.cell, text: tr.querySelector('td.memory').textContent, title: tr.querySelector('td.memory').title })));
    const peakOf = new Map(cells.map(c => [c.cell, c.peak_memory]));
    check(memory.every(m => peakOf.get(m.cell) > 0 && m.text === `${Math.round(peakOf.get(m.cell) / 2 ** 20)} MiB` &&
      /^estimate \d+ MiB; peak: host_rss$/.test(m.title)),
      `memory column: ${memory.map(m => `${m.text} (${m.title})`).join(', ')}`);

    // The curves charts have one series per run, each with points.
    for (const id of ['chart-tokens', 'chart-flops']) {
      const n = await page.evaluate(id => window.isoflop.charts[id].data.datasets.map(d => d.data.length), id);
      check(n.length === cells.length && n.every(k => k > 1), `${id}: ${n.length} series (want ${cells.length}), points ${n.join(',')}`);
    }
    const band = await page.evaluate(() => window.isoflop.charts['chart-nopt'].data.datasets.some(d => /band/.test(d.label)));
    check(band, 'N_opt chart draws the bootstrap band');
    const points = await page.evaluate(() => window.isoflop.charts['chart-profiles'].data.datasets.reduce((k, d) => k + d.data.length, 0));
    check(points === cells.length, `isoFLOP profiles: ${points} final losses (want ${cells.length})`);

    // No axis labels two of its ticks alike (1e9 and 1.2e9 both read "1e9" before).
    const dupes = await page.evaluate(() => Object.entries(window.isoflop.charts).flatMap(([id, c]) =>
      Object.entries(c.scales).map(([axis, sc]) => {
        const labels = sc.ticks.map(t => String(t.label)).filter(l => l !== '');
        return new Set(labels).size === labels.length ? null : `${id}.${axis}: ${labels.join(' ')}`;
      })).filter(Boolean));
    check(dupes.length === 0, `tick labels are distinct on every axis: ${dupes.join(' | ') || 'yes'}`);

    // Sorting: by N descending after two clicks.
    await page.click('#cells th[data-key="n_total"]');
    await page.click('#cells th[data-key="n_total"]');
    const ns = await page.$$eval('#cells tbody tr td:nth-child(3)', tds => tds.map(td => Number(td.textContent.replace(/,/g, ''))));
    check(ns.every((v, i) => i === 0 || ns[i - 1] >= v), `sorted by N descending: ${ns.join(' ')}`);
    await page.click('#cells th[data-key="budget"]');

    // The optimal box shows `isoflop optimal`'s N and D (the page prints 4 significant digits).
    const want = JSON.parse(isoflop(a.isoflop, db, ['optimal', '--sweep', 'tiny', '--compute', '3e9',
      '--format', 'json'], dir))[0];
    await page.fill('#optimal-c', '3e9');
    await page.click('#optimal-go');
    await page.waitForFunction(() => document.body.dataset.optimal === '3e9' &&
      document.getElementById('optimal-n').textContent !== '–', null, { timeout: 10000 });
    const got = await page.evaluate(() => ({ n: document.getElementById('optimal-n').textContent, d: document.getElementById('optimal-d').textContent }));
    check(got.n === Number(want.n_opt).toPrecision(4), `optimal N ${got.n} = isoflop optimal ${want.n_opt}`);
    check(got.d === Number(want.d_opt).toPrecision(4), `optimal D ${got.d} = isoflop optimal ${want.d_opt}`);
    await page.waitForTimeout(300);
    fs.mkdirSync(a.artifacts, { recursive: true });
    const shot = path.join(a.artifacts, 'serve.png');
    await page.screenshot({ path: shot, fullPage: true });
    check(fs.statSync(shot).size > 20000, `screenshot saved: ${shot}`);

    // A budget far beyond the fitted compute (tiny.yaml's runs reach about 8e9 FLOPs) is
    // answered with `isoflop optimal`'s warning beside it.
    await page.fill('#optimal-c', '1e15');
    await page.click('#optimal-go');
    await page.waitForFunction(() => document.body.dataset.optimal === '1e15' &&
      document.getElementById('optimal-n').textContent !== '–', null, { timeout: 10000 });
    const farNote = await page.textContent('#optimal-note');
    check(/above the largest C of the fit's observations .*nothing has checked the law/.test(farNote),
      `a far budget is answered with the warning: ${farNote}`);

    // A bad budget is the server's error, shown in the box.
    await page.fill('#optimal-c', 'lots');
    await page.click('#optimal-go');
    await page.waitForFunction(() => document.body.dataset.optimal === 'lots', null, { timeout: 10000 });
    const note = await page.textContent('#optimal-note');
    check(/not a positive number/.test(note), `bad budget shows the error: ${note}`);

    // Live: a second sweep runs into the same store while the page shows it; its progress
    // moves and every cell finishes in the table without a reload. Its manager is held
    // (SIGSTOP) the moment it has stored the sweep, before a run can finish (each starts
    // LibTorch first, about a second): whatever the machine's speed, the page must show that
    // unfinished state, then, let go (SIGCONT), every cell finished.
    const liveDir = path.join(dir, 'live');
    fs.mkdirSync(liveDir);
    manager = spawn(a.isoflop, ['--db', db, 'sweep', 'run', tiny, '--set', 'name=live', '--set', 'budgets=[4e9]',
      '--no-fit', '--no-plot'], { cwd: liveDir, stdio: 'ignore' });
    const managerExit = new Promise(r => manager.on('exit', code => r(code)));
    await page.goto(`${server.url}#/sweep/live`);
    await page.evaluate(() => { window.notReloaded = true; });
    const classesOf = cells => cells.map(c => `state-${c.status}`).sort().join(' ');
    let held = null;
    const liveCells = async () => {
      const r = await fetch(`${server.url}api/sweeps/live`);
      return r.ok ? (await r.json()).cells : [];
    };
    for (const t0 = Date.now(); !held && Date.now() - t0 < 60000;) {
      if ((await liveCells()).length === 3) {
        manager.kill('SIGSTOP');
        held = classesOf(await liveCells());
      } else {
        await new Promise(r => setTimeout(r, 10));
      }
    }
    check(held && held.split(' ').length === 3 && !held.split(' ').every(c => c === 'state-finished'),
      `the live sweep held before any run finished: ${held}`);
    const pageClasses = () => page.$$eval('#cells tbody tr', trs => trs.map(tr => tr.className).sort().join(' '));
    const shown = await page.waitForFunction(want => [...document.querySelectorAll('#cells tbody tr')]
      .map(tr => tr.className).sort().join(' ') === want, held, { timeout: 15000 }).then(() => true, () => false);
    check(shown, `the page shows the held sweep (${held}): ${await pageClasses()}`);
    manager.kill('SIGCONT');
    const finished = await page.waitForFunction(() => {
      const rows = [...document.querySelectorAll('#cells tbody tr')];
      return rows.length === 3 && rows.every(tr => tr.className === 'state-finished');
    }, null, { timeout: 300000, polling: 250 }).then(() => true, () => false);
    const managerCode = await managerExit;
    check(managerCode === 0, `the live sweep run exited ${managerCode}`);
    check(finished, `every live cell shows finished without a reload (${await pageClasses()})`);
    check(await page.evaluate(() => window.notReloaded === true), 'the page was not reloaded');
    // The chart's series arrive after the table's last poll: wait until all three carry their
    // points (a timeout leaves the check below to say what was drawn).
    await page.waitForFunction(() => {
      const c = window.isoflop.charts['chart-tokens'];
      return c && c.data.datasets.length === 3 && c.data.datasets.every(d => d.data.length > 1);
    }, null, { timeout: 15000 }).catch(() => {});
    const livePoints = await page.evaluate(() => window.isoflop.charts['chart-tokens'].data.datasets.map(d => d.data.length));
    check(livePoints.every(k => k > 1), `live curves drawn: points ${livePoints.join(',')}`);

    // The observation set's fit view.
    await page.goto(`${server.url}#/observations/chinchilla`);
    await page.waitForFunction(() => window.isoflop.charts['chart-residuals'] &&
      window.isoflop.charts['chart-residuals'].data.datasets.length > 0, null, { timeout: 30000 });
    // One parabola per budget whose isoFLOP profile is usable, as the API evaluated them.
    const api = await (await fetch(`${server.url}api/observations/chinchilla/fits`)).json();
    const wantParabolas = api.curves.isoflop.parabolas.filter(p => p.n && p.usable).length;
    const parabolas = await page.evaluate(() => window.isoflop.charts['chart-profiles'].data.datasets.filter(d => d.label.startsWith('_parabola')).length);
    check(wantParabolas > 3 && parabolas === wantParabolas, `isoFLOP profiles: ${parabolas} parabolas (API: ${wantParabolas})`);
    const wantObs = JSON.parse(isoflop(a.isoflop, db, ['optimal', '--observations', 'chinchilla', '--compute', '1e24', '--format', 'json'], dir))[0];
    await page.fill('#optimal-c', '1e24');
    await page.click('#optimal-go');
    await page.waitForFunction(() => document.body.dataset.optimal === '1e24' && document.getElementById('optimal-n').textContent !== '–', null, { timeout: 10000 });
    const gotObs = await page.evaluate(() => ({ n: document.getElementById('optimal-n').textContent, d: document.getElementById('optimal-d').textContent }));
    check(gotObs.n === Number(wantObs.n_opt).toPrecision(4) && gotObs.d === Number(wantObs.d_opt).toPrecision(4),
      `observations: optimal N ${gotObs.n}, D ${gotObs.d} = isoflop optimal ${wantObs.n_opt}, ${wantObs.d_opt}`);
    // The fits table: a held parameter says so instead of an interval of one value.
    const fitRows = await page.$$eval('#fits tbody tr', trs => trs.map(tr => tr.textContent));
    check(fitRows.some(t => t.includes('E=1.820 (held)')) && !fitRows.some(t => /E=1\.820 \[/.test(t)),
      `fits table: the held E reads "(held)": ${fitRows.find(t => t.includes('E=1.820')) || 'no row'}`);
    // The isoFLOP fit's exponents carry their bootstrap intervals, in the table and the legend.
    const isoRow = fitRows.find(t => /isoflop/.test(t)) || 'no row';
    check(/n_opt_a=\S+ \[\S+, \S+\]/.test(isoRow), `fits table: the isoFLOP exponent's interval: ${isoRow}`);
    const legend = await page.evaluate(() => window.isoflop.charts['chart-nopt'].data.datasets
      .map(d => d.label).find(l => l.startsWith('isoFLOP power law')) || 'none');
    check(/C\^\S+ \[\S+, \S+\]$/.test(legend), `N_opt chart: ${legend}`);
    await page.screenshot({ path: path.join(a.artifacts, 'serve-observations.png'), fullPage: true });

    check(foreign.length === 0, `no request left the server: ${foreign.join(' ')}`);
    check(errors.length === 0, `no page errors: ${errors.join(' | ')}`);
  } finally {
    if (manager && manager.exitCode === null && manager.signalCode === null) {
      manager.kill('SIGCONT');  // never leave it held
      manager.kill('SIGTERM');
    }
    if (browser) await browser.close();
    if (server) {
      server.proc.removeAllListeners('exit');  // the start-up listener rejects; done with it
      const exited = new Promise(r => server.proc.on('exit', code => r(code)));
      server.proc.kill('SIGTERM');
      const code = await Promise.race([exited, new Promise(r => setTimeout(() => r('timeout'), 10000))]);
      check(code === 0, `serve stopped on SIGTERM with exit ${code}`);
    }
    fs.rmSync(dir, { recursive: true, force: true });
  }
  if (failures) {
    console.log(`${failures} check(s) failed`);
    process.exit(1);
  }
  console.log('all checks passed');
}

main().catch(e => { console.error(e); process.exit(1); });

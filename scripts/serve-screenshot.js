// The README's dashboard screenshot: `isoflop serve` on a store, one sweep's page in Debian's
// headless Chromium, once its charts are drawn and its optimal box has answered.
//
//   node scripts/serve-screenshot.js [--isoflop build/bin/isoflop] [--db isoflop.db]
//        [--sweep quickstart] [--out docs/img/serve.png]
//
// (After `make quickstart`, the defaults redraw docs/img/serve.png from its store.)
'use strict';

const path = require('path');
const source = path.resolve(__dirname, '..');
const {startServer, launchChromium} = require(path.join(source, 'scripts', 'lib', 'serve-page.js'));

async function main() {
  const a = {
    isoflop: 'build/bin/isoflop',
    db: 'isoflop.db',
    sweep: 'quickstart',
    out: 'docs/img/serve.png'
  };
  for (let i = 2; i < process.argv.length; i += 2) {
    const key = process.argv[i].replace(/^--/, '');
    if (!(key in a) || i + 1 >= process.argv.length) {
      throw new Error(
          `usage: node scripts/serve-screenshot.js [--isoflop BIN] [--db FILE] [--sweep NAME] [--out PNG] (bad '${
              process.argv[i]}')`);
    }
    a[key] = process.argv[i + 1];
  }
  const server = await startServer(path.resolve(a.isoflop), path.resolve(a.db), process.cwd());
  const browser = await launchChromium(source);
  try {
    const page = browser.pages()[0] || await browser.newPage();
    await page.goto(`${server.url}#/sweep/${encodeURIComponent(a.sweep)}`);
    await page.waitForFunction(
        () => window.isoflop.charts['chart-tokens'] && window.isoflop.charts['chart-nopt'] &&
            document.body.dataset.optimal &&
            document.getElementById('optimal-n').textContent !== '–',
        null, {timeout: 30000});
    await page.screenshot({path: a.out, fullPage: true});
    console.log(`${a.out}: sweep ${a.sweep} of ${a.db}, optimal box at C = ${
        await page.inputValue('#optimal-c')}`);
  } finally {
    await browser.close();
    server.proc.removeAllListeners('exit');
    server.proc.kill('SIGTERM');
  }
}

main().catch(e => {
  console.error(String(e.message || e));
  process.exit(1);
});

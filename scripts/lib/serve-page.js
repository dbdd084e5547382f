// The real `isoflop serve` and Debian's headless Chromium, for the dashboard's browser test
// (tests/serve/browser_test.js) and its README screenshot (scripts/serve-screenshot.js).
'use strict';

const {spawn} = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');

// Starts `isoflop serve --port 0` and resolves with {proc, url} once it prints its address.
function startServer(bin, db, cwd) {
  return new Promise((resolve, reject) => {
    const proc =
        spawn(bin, ['--db', db, 'serve', '--port', '0'], {cwd, stdio: ['ignore', 'pipe', 'pipe']});
    let out = '';
    const timer = setTimeout(() => reject(new Error(`serve did not start: ${out}`)), 20000);
    proc.stdout.on('data', d => {
      out += d;
      const m = out.match(/at (http:\/\/127\.0\.0\.1:\d+\/)/);
      if (m) {
        clearTimeout(timer);
        resolve({proc, url: m[1]});
      }
    });
    proc.stderr.on('data', d => {
      out += d;
    });
    proc.on('exit', code => reject(new Error(`serve exited ${code}: ${out}`)));
  });
}

// Debian's Chromium, headless as root, in a fresh profile, through playwright-core from
// serve/web's npm packages (never a downloaded browser). Resolves with the browser context.
function launchChromium(source, executablePath = '/usr/bin/chromium') {
  const {chromium} = require(path.join(source, 'serve', 'web', 'node_modules', 'playwright-core'));
  const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'isoflop_chromium_'));
  return chromium.launchPersistentContext(userDataDir, {
    executablePath,
    headless: true,
    viewport: {width: 1400, height: 1000},
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'
    ],
  });
}

module.exports = {
  startServer,
  launchChromium
};

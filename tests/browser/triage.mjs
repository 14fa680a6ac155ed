#!/usr/bin/env node
// Browser test of the triage page (crates/pages), driven by tests/triage.rs.
//
//   node tests/browser/triage.mjs --base http://127.0.0.1:PORT --user NAME --password P --expect N --out DIR
//        [--disagree-class severe] [--timeout-ms 240000] [--chromium PATH]
//
// Signs in through the form the page shows without a session (name and password), opens /triage once and
// prints "ready" on stdout. Then, without ever reloading, it samples every 100 ms the status of each
// row (tr.study[data-status]) until N rows are "done", recording the statuses each study went through
// and the final row order. Then, on the page:
//   - row 1: Disagree, class --disagree-class, a comment, Save; row 2: Agree, Save; waits until both
//     rows show the feedback given;
//   - clicks row 1's "Open in viewer" and waits for the viewer page (a new tab) to load;
//   - screenshots: triage-wide.png (1360 x 760) and triage-narrow.png (400 x 860) in DIR.
// Prints one JSON summary line on stdout: {ok, navigations, order: [{study, version, class, status, abnormal,
// other (the Other findings cell's text), caution (the result's caution mark's title, or null)}],
// seen: {study: [statuses]}, feedback_shown, viewer_url, viewer_status, console_errors, failed_requests}.
// Exit 0 when every step ran (the Rust test judges the values), 1 on a failed step, 2 on bad usage.

import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'];

function parseArgs(argv) {
  const o = { timeoutMs: 240000, chromium: '/usr/bin/chromium', disagreeClass: 'severe', expect: 3 };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const val = () => argv[++i];
    switch (a) {
      case '--base': o.base = val().replace(/\/+$/, ''); break;
      case '--user': o.user = val(); break;
      case '--password': o.password = val(); break;
      case '--expect': o.expect = Number(val()); break;
      case '--out': o.out = val(); break;
      case '--disagree-class': o.disagreeClass = val(); break;
      case '--timeout-ms': o.timeoutMs = Number(val()); break;
      case '--chromium': o.chromium = val(); break;
      default: process.stderr.write(`triage.mjs: unknown argument ${a}\n`); process.exit(2);
    }
  }
  if (!o.base || !o.user || !o.password || !o.out) { process.stderr.write('triage.mjs: --base, --user, --password and --out are required\n'); process.exit(2); }
  return o;
}

const opts = parseArgs(process.argv.slice(2));
const { chromium } = createRequire(path.join(REPO, '.viewer', 'package.json'))('playwright-core');
const summary = { ok: false, navigations: 0, order: [], seen: {}, feedback_shown: [], viewer_url: null,
  viewer_status: null, sign_in_url: null, console_errors: [], failed_requests: [], step: 'start' };
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

let browser;
try {
  browser = await chromium.launch({ executablePath: opts.chromium, headless: true, args: CHROMIUM_ARGS, timeout: 60000 });
  const context = await browser.newContext({ viewport: { width: 1360, height: 760 } });
  const page = await context.newPage();
  page.on('console', (m) => { if (m.type() === 'error') summary.console_errors.push(m.text()); });
  page.on('pageerror', (e) => summary.console_errors.push(String(e)));
  page.on('requestfailed', (r) => {
    const f = r.failure();
    // the event stream is cut when the page or browser closes
    if (f && !/ERR_ABORTED/.test(f.errorText)) summary.failed_requests.push(`${r.url()}: ${f.errorText}`);
  });
  page.on('response', (r) => { if (r.status() >= 400) summary.failed_requests.push(`${r.url()}: ${r.status()}`); });

  // sign in through the page's own form
  summary.step = 'sign-in';
  await page.goto(`${opts.base}/triage`);
  summary.sign_in_url = page.url();
  await page.fill('input[name=name]', opts.user);
  await page.fill('input[name=password]', opts.password);
  await Promise.all([page.waitForURL(`${opts.base}/triage`), page.click('button[type=submit]')]);
  page.on('framenavigated', (f) => { if (f === page.mainFrame()) summary.navigations += 1; });
  await page.fill('#reader', 'Dr Test Reader');
  await page.waitForSelector('#live.on', { timeout: 20000 });
  process.stdout.write('ready\n');

  // watch the rows until N are done, without reloading
  summary.step = 'watch';
  const deadline = Date.now() + opts.timeoutMs;
  for (;;) {
    const rows = await page.$$eval('tr.study', (trs) => trs.map((t) => ({
      study: t.dataset.study, version: Number(t.dataset.version), status: t.dataset.status, class: t.dataset.class,
      abnormal: t.dataset.abnormal === 'true', other: (t.querySelector('td.other') || {}).innerText || '',
      caution: (t.querySelector('td.result .caution') || {}).title || null })));
    for (const r of rows) {
      const seen = summary.seen[r.study] || (summary.seen[r.study] = []);
      if (seen[seen.length - 1] !== r.status) seen.push(r.status);
    }
    summary.order = rows;
    if (rows.length >= opts.expect && rows.every((r) => r.status === 'done')) break;
    if (Date.now() > deadline) throw new Error(`not ${opts.expect} rows done in time: ${JSON.stringify(rows)}`);
    await sleep(100);
  }

  // feedback on the first two rows
  summary.step = 'feedback';
  const row = (i) => page.locator('tr.study').nth(i);
  await row(0).locator('button[data-verdict=disagree]').click();
  await row(0).locator('select[name=extent_class]').selectOption(opts.disagreeClass);
  await row(0).locator('textarea[name=comment]').fill('dense posterior consolidation under-read');
  await row(0).locator('form button[type=submit]').click();
  await row(0).locator('.given').waitFor({ timeout: 10000 });
  await row(1).locator('button[data-verdict=agree]').click();
  await row(1).locator('form button[type=submit]').click();
  await row(1).locator('.given').waitFor({ timeout: 10000 });
  summary.feedback_shown = [await row(0).locator('.given').innerText(), await row(1).locator('.given').innerText()];

  // screenshots: wide, then narrow
  summary.step = 'screenshots';
  await page.screenshot({ path: path.join(opts.out, 'triage-wide.png') });
  await page.setViewportSize({ width: 400, height: 860 });
  await sleep(300);
  await page.screenshot({ path: path.join(opts.out, 'triage-narrow.png') });
  await page.setViewportSize({ width: 1360, height: 760 });

  // the row opens the viewer on its study
  summary.step = 'viewer';
  context.on('response', (r) => {
    if (summary.viewer_status === null && r.url().includes('/viewer/viewer?')) summary.viewer_status = r.status();
  });
  const [viewer] = await Promise.all([context.waitForEvent('page'), row(0).locator('a.open').click()]);
  await viewer.waitForLoadState('load');
  summary.viewer_url = viewer.url();
  summary.ok = true;
  summary.step = 'done';
} catch (e) {
  summary.error = String(e && e.stack || e);
} finally {
  if (browser) await browser.close().catch(() => {});
  process.stdout.write(`${JSON.stringify(summary)}\n`);
  process.exit(summary.ok ? 0 : 1);
}

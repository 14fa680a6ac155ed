#!/usr/bin/env node
// Browser test of the viewer's site isolation, driven by tests/sites.rs.
//
//   node tests/browser/viewer-sites.mjs --base http://127.0.0.1:PORT --user NAME --password P \
//        --open <StudyInstanceUID> --out DIR [--timeout-ms 90000] [--chromium PATH]
//
// Signs in through the node's sign-in form (name and password; a session cookie), then:
//   list  opens the OHIF study list (<base>/viewer/) and records the Study Instance UIDs of every
//         study-level QIDO-RS answer the viewer received, and the list's visible text (worklist.png);
//   open  opens the viewer on --open (<base>/viewer/viewer?StudyInstanceUIDs=...) and records, for every
//         DICOMweb request about that study, its status and how many items it returned, and whether a
//         viewport shows an image (open.png).
// Prints one JSON summary line on stdout: {ok, listed, list_text, opened: [{url, status, items}],
// image_shown, open_text, step, error}. Exit 0 when every step ran (the Rust test judges the values), 1 when a
// step failed, 2 on bad usage.

import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'];

function parseArgs(argv) {
  const o = { timeoutMs: 90000, chromium: '/usr/bin/chromium' };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const val = () => argv[++i];
    switch (a) {
      case '--base': o.base = val().replace(/\/+$/, ''); break;
      case '--user': o.user = val(); break;
      case '--password': o.password = val(); break;
      case '--open': o.open = val(); break;
      case '--out': o.out = val(); break;
      case '--timeout-ms': o.timeoutMs = Number(val()); break;
      case '--chromium': o.chromium = val(); break;
      default: process.stderr.write(`viewer-sites.mjs: unknown argument ${a}\n`); process.exit(2);
    }
  }
  if (!o.base || !o.user || !o.password || !o.open || !o.out) {
    process.stderr.write('viewer-sites.mjs: --base, --user, --password, --open and --out are required\n');
    process.exit(2);
  }
  return o;
}

const opts = parseArgs(process.argv.slice(2));
const { chromium } = createRequire(path.join(REPO, '.viewer', 'package.json'))('playwright-core');
const summary = { ok: false, listed: [], list_text: '', opened: [], image_shown: false, open_text: '', step: 'start',
  error: null };
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Study Instance UIDs (0020000D) of a DICOM JSON array.
const studyUids = (body) => (Array.isArray(body) ? body.map((d) => d?.['0020000D']?.Value?.[0]).filter(Boolean) : []);

let browser;
try {
  browser = await chromium.launch({ executablePath: opts.chromium, headless: true, args: CHROMIUM_ARGS, timeout: 60000 });
  const context = await browser.newContext({ viewport: { width: 1360, height: 900 } });
  context.setDefaultTimeout(opts.timeoutMs);
  // OHIF's first-visit guided tour would cover the page
  await context.addInitScript(() => {
    try { localStorage.setItem('shownTours', JSON.stringify(['basicViewerTour'])); } catch (e) { /* ignore */ }
  });
  const page = await context.newPage();

  summary.step = 'sign-in';
  await page.goto(`${opts.base}/sign-in`);
  await page.fill('input[name=name]', opts.user);
  await page.fill('input[name=password]', opts.password);
  await Promise.all([page.waitForURL(`${opts.base}/triage`), page.click('button[type=submit]')]);

  // the study list: what the viewer's own QIDO-RS requests returned, and what it shows
  summary.step = 'list';
  let studyQueries = 0;
  const listed = new Set();
  const onList = async (r) => {
    const u = new URL(r.url());
    if (!u.pathname.endsWith('/dicom-web/studies') || r.request().method() !== 'GET') return;
    studyQueries += 1;
    try { for (const uid of studyUids(await r.json())) listed.add(uid); } catch (e) { /* not JSON */ }
  };
  page.on('response', onList);
  await page.goto(`${opts.base}/viewer/`);
  const deadline = Date.now() + opts.timeoutMs;
  while (studyQueries === 0 && Date.now() < deadline) await sleep(200);
  if (studyQueries === 0) throw new Error('the study list made no QIDO-RS request');
  await sleep(3000); // the list renders what came back
  summary.listed = [...listed].sort();
  summary.list_text = (await page.innerText('body')).slice(0, 4000);
  await page.screenshot({ path: path.join(opts.out, 'worklist.png') });
  page.off('response', onList);

  // a direct link to a study
  summary.step = 'open';
  page.on('response', async (r) => {
    if (!r.url().includes('/dicom-web/') || !r.url().includes(opts.open)) return;
    let items = null;
    try {
      const ct = r.headers()['content-type'] || '';
      if (ct.includes('json')) { const b = await r.json(); items = Array.isArray(b) ? b.length : null; }
    } catch (e) { /* body unavailable */ }
    summary.opened.push({ url: r.url().replace(opts.base, ''), status: r.status(), items });
  });
  await page.goto(`${opts.base}/viewer/viewer?StudyInstanceUIDs=${encodeURIComponent(opts.open)}`);
  await sleep(10000);
  summary.image_shown = await page.evaluate(() => {
    const c = document.querySelector('[data-cy="viewport-pane"] canvas');
    if (!c || !c.width) return false;
    const t = document.createElement('canvas');
    t.width = c.width; t.height = c.height;
    const g = t.getContext('2d');
    g.drawImage(c, 0, 0);
    const d = g.getImageData(0, 0, t.width, t.height).data;
    const levels = new Set();
    for (let i = 0; i < d.length; i += 4 * 11) levels.add(d[i]);
    return levels.size > 8;
  });
  summary.open_text = (await page.innerText('body')).slice(0, 2000);
  await page.screenshot({ path: path.join(opts.out, 'open.png') });
  summary.ok = true;
} catch (e) {
  summary.error = String(e && e.stack || e);
} finally {
  if (browser) await browser.close().catch(() => {});
  process.stdout.write(`${JSON.stringify(summary)}\n`);
  process.exit(summary.ok ? 0 : 1);
}

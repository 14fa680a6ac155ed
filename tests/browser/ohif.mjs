#!/usr/bin/env node
// Browser test of the OHIF viewer served by the firstread DICOMweb server (crates/dicomweb/viewer).
//
//   node tests/browser/ohif.mjs --base http://127.0.0.1:PORT --study <StudyInstanceUID> --out <dir> \
//        [--token <bearer>] [--auth cookie|config|url] [--sr-filter <regex>] [--seg-filter <regex>] [--no-rois] [--timeout-ms 60000] [--chromium PATH]
//
// Opens <base>/viewer/viewer?StudyInstanceUIDs=<uid> in headless Chromium (Debian's /usr/bin/chromium
// driven by playwright-core from <repo>/.viewer, installed by scripts/bootstrap.sh) and checks, each step
// on a fresh load of the viewer:
//   ct   the CT is rendered: a viewport canvas with non-uniform pixels (screenshot ct.png)
//   sr   every SR series of the study (or those whose description matches --sr-filter) is loaded into the
//        viewport: its ROIs are drawn (SVG shapes in the annotation layer; when nothing is drawn within 8 s
//        it scrolls one slice away and back, working around an OHIF redraw race, and reports
//        drawn_after_rerender), then the viewer's "track measurements?" prompt is accepted and the
//        measurement panel rows are counted
//        (sr.png for the first SR that draws ROIs, sr-<SeriesNumber>.png for each SR)
//   seg  the SEG series is loaded and OHIF's "open this Segmentation?" prompt accepted: the segmentation
//        panel lists segments and, after jumping to the first segment, the viewport shows coloured
//        pixels that the grey-scale CT does not have (seg.png)
// Throughout it records console errors, page errors, OHIF error-boundary crashes (OHIF logs those at
// console.debug level only), failed requests (HTTP >= 400, network errors other than aborts) and error
// notifications (toasts). Prints one JSON summary on stdout; exits 0 only when every step passed and
// nothing of the above was seen, 1 when a check failed, 2 on bad usage or when the browser cannot start.
//
// --token: the bearer the DICOMweb server expects; used for this script's own QIDO request, and given to
// the viewer as --auth says:
//   cookie (default)  first opens <base>/login?token=<token>&next=/viewer/ (the firstread server sets an
//                     HttpOnly session cookie that the viewer's same-origin requests then carry)
//   config            nothing: the server put it into app-config.js (__AUTHORIZATION__)
//   url               appends &token=<token> to the viewer URL (OHIF's own ?token=, kept for the session)

import { createRequire } from 'node:module';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'];

function usage(msg) {
  if (msg) process.stderr.write(`ohif.mjs: ${msg}\n`);
  process.stderr.write('usage: node tests/browser/ohif.mjs --base URL --study UID --out DIR [--token T] [--auth cookie|config|url]\n' +
    '       [--sr-filter REGEX] [--seg-filter REGEX] [--no-rois] [--timeout-ms N] [--chromium PATH] [--viewer-dir DIR] [--verbose]\n' +
    '       [--trust-spki BASE64]  (an HTTPS --base: trust the server key with this SHA-256 SPKI hash)\n');
  process.exit(2);
}

function parseArgs(argv) {
  const o = { timeoutMs: 60000, chromium: '/usr/bin/chromium', viewerDir: path.join(REPO, '.viewer'),
    auth: 'cookie', verbose: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const val = () => { if (i + 1 >= argv.length) usage(`${a} needs a value`); return argv[++i]; };
    switch (a) {
      case '--base': o.base = val().replace(/\/+$/, ''); break;
      case '--study': o.study = val(); break;
      case '--out': o.out = val(); break;
      case '--token': o.token = val(); break;
      case '--auth': o.auth = val(); break;
      case '--token-in-url': o.auth = 'url'; break;
      case '--sr-filter': o.srFilter = new RegExp(val(), 'i'); break;
      case '--seg-filter': o.segFilter = new RegExp(val(), 'i'); break;
      case '--no-rois': o.noRois = true; break;
      case '--timeout-ms': o.timeoutMs = Number(val()); break;
      case '--chromium': o.chromium = val(); break;
      case '--viewer-dir': o.viewerDir = val(); break;
      case '--trust-spki': o.trustSpki = val(); break;
      case '--verbose': o.verbose = true; break;
      case '-h': case '--help': usage();
      // falls through
      default: usage(`unknown argument ${a}`);
    }
  }
  if (!o.base || !o.study || !o.out) usage('--base, --study and --out are required');
  if (!(o.timeoutMs > 0)) usage('--timeout-ms must be a positive number');
  if (!['cookie', 'config', 'url'].includes(o.auth)) usage('--auth must be cookie, config or url');
  return o;
}

const opts = parseArgs(process.argv.slice(2));
const log = (...a) => { if (opts.verbose) process.stderr.write(`[ohif] ${a.join(' ')}\n`); };
const sleep = ms => new Promise(r => setTimeout(r, ms));

let chromium;
try {
  chromium = createRequire(path.join(path.resolve(opts.viewerDir), 'package.json'))('playwright-core').chromium;
} catch (e) {
  process.stderr.write(`ohif.mjs: cannot load playwright-core from ${opts.viewerDir} (run scripts/bootstrap.sh): ${e.message}\n`);
  process.exit(2);
}
fs.mkdirSync(opts.out, { recursive: true });

// ------------------------------------------------------------------ what is recorded
let step = 'start';
const summary = {
  ok: false,
  url: `${opts.base}/viewer/viewer?StudyInstanceUIDs=${encodeURIComponent(opts.study)}`,
  ct_rendered: false,
  cross_origin_isolated: null,
  sr_rois: 0,
  sr: [],
  seg_segments: 0,
  seg: null,
  console_errors: [],
  failed_requests: [],
  error_notifications: [],
  console_warnings: 0,
  aborted_requests: 0,
  failures: [],
  screenshots: {},
};
const fail = (where, msg) => { summary.failures.push(`${where}: ${msg}`); log('FAIL', where, msg); };

// ------------------------------------------------------------------ DICOMweb: what the study holds
const DCM = (ds, tag) => ds?.[tag]?.Value?.[0];
async function qidoSeries() {
  const url = `${opts.base}/dicom-web/studies/${encodeURIComponent(opts.study)}/series?includefield=0008103E,00200011,00080060`;
  const headers = { Accept: 'application/dicom+json' };
  if (opts.token) headers.Authorization = `Bearer ${opts.token}`;
  const ctl = new AbortController();
  const t = setTimeout(() => ctl.abort(), opts.timeoutMs);
  try {
    const r = await fetch(url, { headers, signal: ctl.signal });
    if (r.status === 204) return [];
    if (!r.ok) throw new Error(`HTTP ${r.status} for ${url}`);
    const body = await r.json();
    return body.map(s => ({
      uid: DCM(s, '0020000E'),
      modality: DCM(s, '00080060') || '',
      number: DCM(s, '00200011'),
      description: DCM(s, '0008103E') || '',
    }));
  } finally {
    clearTimeout(t);
  }
}

// ------------------------------------------------------------------ in-page probes
// Pixel statistics of every viewport's canvas (sampled): mean/std of the grey level, number of grey
// levels, and how many sampled pixels are clearly coloured (a grey-scale CT has none).
function probeViewports() {
  return [...document.querySelectorAll('[data-cy="viewport-pane"]')].map(pane => {
    const c = pane.querySelector('canvas.cornerstone-canvas') || pane.querySelector('canvas');
    if (!c || !c.width || !c.height) return null;
    try {
      const t = document.createElement('canvas');
      t.width = c.width; t.height = c.height;
      const g = t.getContext('2d', { willReadFrequently: true });
      g.drawImage(c, 0, 0);
      const d = g.getImageData(0, 0, t.width, t.height).data;
      let n = 0, sum = 0, sum2 = 0, colored = 0;
      const levels = new Set();
      for (let i = 0; i < d.length; i += 4 * 7) {
        const r = d[i], gr = d[i + 1], b = d[i + 2];
        const y = (r + gr + b) / 3;
        n++; sum += y; sum2 += y * y; levels.add(y | 0);
        if (Math.max(r, gr, b) - Math.min(r, gr, b) > 40) colored++;
      }
      const mean = sum / n;
      return { w: c.width, h: c.height, mean: +mean.toFixed(1), std: +Math.sqrt(Math.max(0, sum2 / n - mean * mean)).toFixed(1),
        levels: levels.size, colored };
    } catch (e) {
      return { error: String(e) };
    }
  });
}

// Drawn annotation shapes in the viewports' SVG layers (defs excluded).
function probeAnnotations() {
  let shapes = 0, labelled = 0;
  for (const svg of document.querySelectorAll('svg.svg-layer')) {
    for (const el of svg.querySelectorAll('polyline, polygon, path, circle, ellipse, rect')) {
      if (!el.closest('defs')) shapes++;
    }
    labelled += svg.querySelectorAll('[data-annotation-uid]').length;
  }
  return { shapes, labelled };
}

// ------------------------------------------------------------------ browser
let browser;
try {
  // an HTTPS node with a test certificate: Chromium trusts exactly that key (not "any certificate")
  const args = opts.trustSpki ? [...CHROMIUM_ARGS, `--ignore-certificate-errors-spki-list=${opts.trustSpki}`] : CHROMIUM_ARGS;
  browser = await chromium.launch({ executablePath: opts.chromium, headless: true, args, timeout: 60000 });
} catch (e) {
  process.stderr.write(`ohif.mjs: cannot start ${opts.chromium}: ${e.message}\n`);
  process.exit(2);
}

async function main() {
  const context = await browser.newContext({ viewport: { width: 1600, height: 1000 } });
  context.setDefaultTimeout(opts.timeoutMs);
  await context.addInitScript(() => {
    // OHIF's first-visit guided tour would cover the viewport.
    try { localStorage.setItem('shownTours', JSON.stringify(['basicViewerTour'])); } catch (e) { /* ignore */ }
    // Error notifications (sonner toasts) are recorded as they appear; they may vanish before a check.
    window.__firstreadToasts = [];
    const seen = new WeakSet();
    const scan = () => {
      for (const el of document.querySelectorAll('[data-sonner-toast]')) {
        if (seen.has(el)) continue;
        const type = el.getAttribute('data-type') || '';
        const text = (el.innerText || '').trim();
        if (!text) continue;
        seen.add(el);
        window.__firstreadToasts.push({ type, text: text.slice(0, 500) });
      }
    };
    new MutationObserver(scan).observe(document, { childList: true, subtree: true, characterData: true });
  });
  const page = await context.newPage();

  page.on('console', msg => {
    const type = msg.type();
    const text = msg.text();
    if (opts.verbose) log(`console.${type} [${step}]`, text.slice(0, 300).replace(/\n/g, ' | '));
    if (type === 'error') {
      summary.console_errors.push(`[${step}] ${text.slice(0, 1000)}`);
    } else if (/Error Boundary/.test(text)) {
      // OHIF catches render crashes in an error boundary and only console.debug()s them.
      summary.console_errors.push(`[${step}] (OHIF error boundary, console.${type}) ${text.slice(0, 1000)}`);
    } else if (type === 'warning') {
      summary.console_warnings++;
    }
  });
  page.on('pageerror', err => summary.console_errors.push(`[${step}] (page error) ${String(err.stack || err).slice(0, 1000)}`));
  page.on('response', resp => {
    if (resp.status() >= 400) {
      summary.failed_requests.push({ step, status: resp.status(), method: resp.request().method(), url: resp.url() });
    }
  });
  page.on('requestfailed', req => {
    const why = req.failure()?.errorText || 'failed';
    if (/ERR_ABORTED/.test(why)) summary.aborted_requests++;
    else summary.failed_requests.push({ step, status: null, error: why, method: req.method(), url: req.url() });
  });

  const collectToasts = async () => {
    try {
      const toasts = await page.evaluate(() => window.__firstreadToasts.splice(0));
      for (const t of toasts) {
        if (t.type === 'error' || /error|failed|something went wrong/i.test(t.text)) {
          summary.error_notifications.push(`[${step}] ${t.text}`);
        }
      }
    } catch (e) { /* page navigating */ }
  };

  const shot = async (name) => {
    const file = path.join(opts.out, name);
    await page.screenshot({ path: file });
    summary.screenshots[name.replace(/\.png$/, '')] = file;
  };

  // Polls fn until it returns a truthy value or the step's time is up.
  const waitFor = async (what, fn, timeoutMs = opts.timeoutMs, everyMs = 500) => {
    const end = Date.now() + timeoutMs;
    let last;
    for (;;) {
      try { last = await fn(); } catch (e) { last = undefined; }
      if (last) return last;
      if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
      await sleep(everyMs);
    }
  };

  const viewerUrl = summary.url + (opts.token && opts.auth === 'url' ? `&token=${encodeURIComponent(opts.token)}` : '');

  // A fresh load of the viewer with the study, until the CT is rendered.
  const openViewer = async () => {
    await page.goto(viewerUrl, { waitUntil: 'load', timeout: opts.timeoutMs });
    return waitFor('a viewport canvas with non-uniform pixels (the CT rendered)', async () => {
      const vps = await page.evaluate(probeViewports);
      const good = vps.find(v => v && !v.error && v.std > 5 && v.levels > 16);
      return good || null;
    });
  };

  const thumbnailFor = (series) => {
    let loc = page.locator('[data-cy^="study-browser-thumbnail"]');
    if (series.number !== undefined && series.number !== null) loc = loc.filter({ hasText: new RegExp(`S:\\s*${series.number}(?!\\d)`) });
    if (series.description) loc = loc.filter({ hasText: series.description.trim().split(/\s+/).slice(0, 3).join(' ') });
    return loc.first();
  };

  // The viewport's own prompt (SR tracking / SEG hydration): clicks its "Yes" when it shows up.
  const acceptViewportPrompt = async (timeoutMs) => {
    const yes = page.locator('[data-cy="viewport-pane"]').getByRole('button', { name: /^\s*Yes\s*$/ });
    try {
      await yes.first().waitFor({ state: 'visible', timeout: timeoutMs });
    } catch (e) {
      return null;
    }
    const text = (await page.locator('[data-cy="viewport-pane"]').first().innerText()).split('\n')
      .find(l => /\?\s*$/.test(l.trim())) || '';
    await yes.first().click();
    return text.trim() || 'Yes';
  };

  // ---------------------------------------------------------------- series of the study
  step = 'qido';
  let series = [];
  try {
    series = await qidoSeries();
    log('series:', JSON.stringify(series));
  } catch (e) {
    fail('qido', `listing the study's series failed: ${e.message}`);
  }

  // ---------------------------------------------------------------- login (session cookie)
  if (opts.token && opts.auth === 'cookie') {
    step = 'login';
    try {
      const resp = await page.goto(`${opts.base}/login?token=${encodeURIComponent(opts.token)}&next=${encodeURIComponent('/viewer/')}`,
        { waitUntil: 'load', timeout: opts.timeoutMs });
      const cookies = await context.cookies(opts.base);
      if (!cookies.length) fail('login', `GET /login answered ${resp ? resp.status() : 'nothing'} and set no cookie`);
    } catch (e) {
      fail('login', e.message);
    }
  }

  // ---------------------------------------------------------------- ct
  step = 'ct';
  try {
    const stats = await openViewer();
    summary.ct_rendered = true;
    summary.ct = stats;
    summary.cross_origin_isolated = await page.evaluate(() => self.crossOriginIsolated);
    if (!summary.cross_origin_isolated) {
      fail('ct', 'the page is not cross-origin isolated (Cross-Origin-Opener-Policy: same-origin and ' +
        'Cross-Origin-Embedder-Policy: require-corp missing on the viewer\'s responses)');
    }
    await sleep(1000);
    await shot('ct.png');
  } catch (e) {
    fail('ct', e.message);
    try { await shot('ct.png'); } catch (e2) { /* ignore */ }
  }
  await collectToasts();

  // ---------------------------------------------------------------- sr
  const srs = series.filter(s => s.modality === 'SR' && (!opts.srFilter || opts.srFilter.test(s.description)));
  if (summary.ct_rendered && !srs.length) fail('sr', 'the study has no SR series' + (opts.srFilter ? ' matching --sr-filter' : ''));
  // the planar "first read" report first
  srs.sort((a, b) => (/first read/i.test(b.description) ? 1 : 0) - (/first read/i.test(a.description) ? 1 : 0));
  for (const s of srs) {
    if (!summary.ct_rendered) break;
    step = `sr ${s.number ?? ''} ${s.description}`.trim();
    const errorsBefore = summary.console_errors.length;
    const r = { series_uid: s.uid, number: s.number, description: s.description, rois: 0, labels: 0,
      viewport_rendered: false, drawn_after_rerender: false, tracked_measurements: 0, prompt: null, errors: [] };
    summary.sr.push(r);
    try {
      await openViewer();
      await thumbnailFor(s).dblclick({ timeout: opts.timeoutMs });
      // ROIs drawn (read-only SR display), or an error, or nothing within the time
      const drawnOrError = async () => {
        if (summary.console_errors.length > errorsBefore) return true;
        const a = await page.evaluate(probeAnnotations);
        return a.shapes > 0 ? a : null;
      };
      let settled = false;
      try {
        await waitFor('ROIs drawn in the viewport', drawnOrError, Math.min(opts.timeoutMs, 8000));
        settled = true;
      } catch (e) { /* see below */ }
      if (!settled) {
        // OHIF 3.13.2 race (about 1 load in 5 here, independent of the server): the SR is loaded
        // and its annotation added ("Measurement is preview, skipping..."), but the SVG layer is
        // not redrawn until the viewport renders again. Scroll one slice away and back with the
        // mouse wheel, as a reader would, and look again.
        const box = await page.locator('[data-cy="viewport-pane"]').first().boundingBox();
        if (box) {
          await page.mouse.move(box.x + box.width / 2, box.y + box.height / 2);
          await page.mouse.wheel(0, 120);
          await sleep(700);
          await page.mouse.wheel(0, -120);
        }
        try {
          await waitFor('ROIs drawn in the viewport after scrolling away and back', drawnOrError, Math.min(opts.timeoutMs, 15000));
          r.drawn_after_rerender = true;
        } catch (e) { /* judged below */ }
      }
      await sleep(1000);
      const a = await page.evaluate(probeAnnotations);
      r.rois = a.shapes;
      r.labels = a.labelled;
      const vps = await page.evaluate(probeViewports);
      r.viewport_rendered = vps.some(v => v && !v.error && v.std > 5 && v.levels > 16);
      const file = `sr-${s.number ?? s.uid}.png`;
      await shot(file);
      r.screenshot = path.join(opts.out, file);
      if (r.rois > 0 && !summary.screenshots.sr) {
        fs.copyFileSync(r.screenshot, path.join(opts.out, 'sr.png'));
        summary.screenshots.sr = path.join(opts.out, 'sr.png');
      }
      // accept "track measurements?" and count the measurement panel's rows
      if (r.rois > 0) {
        r.prompt = await acceptViewportPrompt(10000);
        if (r.prompt) {
          const btn = page.locator('[data-cy="trackedMeasurements-btn"]');
          if (await btn.count()) await btn.first().click();
          try {
            r.tracked_measurements = await waitFor('measurement panel rows', async () =>
              page.locator('[data-cy="trackedMeasurements-panel"] [data-cy^="measurement-table-row-"]').count(), 10000);
          } catch (e) { r.tracked_measurements = 0; }
          if (r.tracked_measurements > 0) {
            await shot(`sr-${s.number ?? s.uid}-tracked.png`);
          }
        }
      }
    } catch (e) {
      r.errors.push(e.message);
      fail(step, e.message);
    }
    await collectToasts();
    const stepErrors = summary.console_errors.slice(errorsBefore);
    r.errors.unshift(...stepErrors);
    r.crashed = stepErrors.some(m => /error boundary|page error/i.test(m));
    if (!r.viewport_rendered && r.rois === 0) r.errors.push('the SR viewport shows no image and no ROI');
  }
  summary.sr_rois = Math.max(0, ...summary.sr.map(r => r.rois));
  // --no-rois: reports without planar ROIs (a model with measurements and classes only)
  if (summary.ct_rendered && srs.length && summary.sr_rois === 0 && !opts.noRois) fail('sr', 'no SR series drew any ROI');
  for (const r of summary.sr) {
    if (r.crashed) {
      const why = r.errors.find(m => /error boundary|page error/i.test(m)) || '';
      fail(`sr ${r.number ?? r.series_uid}`, `OHIF crashed on this SR (${r.description}): ${why.split('\n')[0].slice(0, 300)}`);
    }
  }

  // ---------------------------------------------------------------- seg
  const segs = series.filter(s => s.modality === 'SEG' && (!opts.segFilter || opts.segFilter.test(s.description)));
  if (summary.ct_rendered && !segs.length) fail('seg', 'the study has no SEG series');
  if (summary.ct_rendered && segs.length) {
    const s = segs[0];
    step = `seg ${s.number ?? ''} ${s.description}`.trim();
    const r = { series_uid: s.uid, number: s.number, description: s.description, prompt: null, segments: [],
      colored_before: null, colored_after: null };
    summary.seg = r;
    try {
      const before = await openViewer();
      r.colored_before = before.colored;
      await thumbnailFor(s).dblclick({ timeout: opts.timeoutMs });
      r.prompt = await acceptViewportPrompt(Math.min(opts.timeoutMs, 30000));
      if (!r.prompt) fail(step, 'OHIF did not ask to open the segmentation (no "Yes" in the viewport)');
      const segRows = page.locator('[data-cy="data-row"]:has([data-cy="data-row-colorhex"])');
      const panelBtn = page.locator('[data-cy="panelSegmentation-btn"]');
      await waitFor('segments listed in the segmentation panel', async () => {
        if (!(await segRows.count()) && await panelBtn.count()) {
          await panelBtn.first().click();
          await sleep(500);
        }
        return segRows.count();
      });
      r.segments = (await page.locator('[data-cy="data-row"]:has([data-cy="data-row-colorhex"]) [data-cy="data-row-title"]').allInnerTexts())
        .map(t => t.trim());
      summary.seg_segments = r.segments.length;
      // jump to the first segment and look for its colour in the viewport
      await segRows.first().click();
      const after = await waitFor('segmentation overlay pixels in the viewport', async () => {
        const vps = await page.evaluate(probeViewports);
        const v = vps.find(x => x && !x.error && x.colored > (r.colored_before || 0));
        return v || null;
      }, Math.min(opts.timeoutMs, 30000));
      r.colored_after = after.colored;
      await page.mouse.move(5, 995); // off the segment row, whose hover card would cover the viewport
      await sleep(800);
      await shot('seg.png');
    } catch (e) {
      fail(step, e.message);
      try { await shot('seg.png'); } catch (e2) { /* ignore */ }
    }
    await collectToasts();
  }

  step = 'end';
  await context.close();
}

try {
  await main();
} catch (e) {
  fail(step, `unexpected: ${e.stack || e}`);
} finally {
  await browser.close().catch(() => {});
}

if (summary.console_errors.length) fail('console', `${summary.console_errors.length} console error(s)`);
if (summary.failed_requests.length) fail('network', `${summary.failed_requests.length} failed request(s)`);
if (summary.error_notifications.length) fail('notifications', `${summary.error_notifications.length} error notification(s)`);
summary.ok = summary.failures.length === 0;
process.stdout.write(JSON.stringify(summary, null, 2) + '\n');
process.exit(summary.ok ? 0 : 1);

// The triage worklist: rows from /triage/api/studies, refreshed on every server-sent event of
// /triage/events (PostgreSQL LISTEN/NOTIFY behind it), relative times updated each second.
// Every value from the server is written with textContent (patient names come from peers).
'use strict';

const PAGE = 100;
const state = { offset: 0, total: 0, now: Date.now(), skew: 0, refreshing: false, again: false, openForm: null };
const $ = (sel, el = document) => el.querySelector(sel);
const tbody = $('#worklist tbody');
const filters = $('#filters');
const reader = $('#reader');
const CLASSES = [
  ['none_or_minimal', 'none or minimal'], ['moderate', 'moderate'], ['extensive', 'extensive'],
  ['severe', 'severe'], ['critical', 'critical'],
];

reader.value = localStorage.getItem('firstread.reader') || '';
reader.addEventListener('change', () => localStorage.setItem('firstread.reader', reader.value.trim()));

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === 'text') e.textContent = v;
    else if (k === 'class') e.className = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children) if (c !== null && c !== undefined) e.append(c);
  return e;
}

// DICOM PN "Family^Given^Middle^Prefix^Suffix", in the first non-empty of its alphabetic,
// ideographic and phonetic groups (PS3.5 6.2.1) -> "FAMILY, Given Middle"
function personName(pn) {
  const group = (pn || '').split('=').find((g) => g.replace(/\^/g, '').trim());
  if (!group) return '(no name)';
  const [family = '', given = '', middle = ''] = group.split('^').map((p) => p.trim());
  const rest = [given, middle].filter(Boolean).join(' ');
  if (!family) return rest || '(no name)';
  return rest ? `${family.toUpperCase()}, ${rest}` : family.toUpperCase();
}

function ago(iso) {
  if (!iso) return '';
  const s = Math.max(0, Math.round((Date.now() + state.skew - Date.parse(iso)) / 1000));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min ago`;
  return `${Math.floor(s / 86400)} d ago`;
}

function query() {
  const p = new URLSearchParams();
  for (const [k, v] of new FormData(filters)) if (String(v).trim()) p.set(k, String(v).trim());
  p.set('limit', PAGE);
  p.set('offset', state.offset);
  return p;
}

async function refresh() {
  if (state.refreshing) { state.again = true; return; }
  state.refreshing = true;
  try {
    const r = await fetch(`/triage/api/studies?${query()}`, { credentials: 'same-origin' });
    if (r.status === 401) { location.reload(); return; }
    if (!r.ok) throw new Error(`${r.status}`);
    const page = await r.json();
    state.total = page.total;
    state.skew = Date.parse(page.now) - Date.now();
    render(page.rows);
  } catch (e) {
    $('#live').textContent = `refresh failed (${e.message})`;
  } finally {
    state.refreshing = false;
    if (state.again) { state.again = false; refresh(); }
  }
}

let pending = null;
function scheduleRefresh() {
  if (pending) return;
  pending = setTimeout(() => { pending = null; refresh(); }, 250);
}

function viewerUrl(row) {
  const p = new URLSearchParams({ StudyInstanceUIDs: row.study_instance_uid });
  if (row.series_instance_uid) p.set('initialSeriesInstanceUID', row.series_instance_uid);
  return `/viewer/viewer?${p}`;
}

// the classes the method's validated error allows besides the measured one (it ranks by the highest)
function possibly(row) {
  const range = row.uncertainty && row.uncertainty.extent_class;
  const order = ['none_or_minimal', 'moderate', 'extensive', 'severe', 'critical'];
  if (!range || range[0] === range[1]) return '';
  const [lo, hi] = range.map((c) => order.indexOf(c));
  const others = order.slice(lo, hi + 1).filter((c) => c !== row.extent_class).map((c) => c.replaceAll('_', ' '));
  return el('span', { class: 'possibly', title: "within the method's validated error", text: ` possibly ${others.join(', ')}` });
}

// what the reader must know about the result (a prone scan, one lung much smaller than the
// other): marked on the row, the words in its title
function cautionMark(row) {
  if (!row.cautions || !row.cautions.length) return '';
  return el('span', { class: 'caution', title: row.cautions.join('\n'), text: ` caution (${row.cautions.length})` });
}

function scoreRange(row) {
  const range = row.uncertainty && row.uncertainty.severity_score;
  return range && range[0] !== range[1] ? ` (${range[0]}-${range[1]})` : '';
}

function resultCell(row) {
  if (!row.extent_class) {
    // no extent class: a package described by its vocabulary alone says its classes under Other findings
    const classed = (row.reads || []).some((r) => r.classes.length);
    return el('td', { class: 'result' }, el('span', { class: 'sub', text: row.status === 'done' && !classed ? 'no result' : '—' }));
  }
  return el('td', { class: 'result' },
    el('span', { class: `badge class ${row.extent_class}`, text: row.extent_label || row.extent_class }),
    possibly(row),
    cautionMark(row),
    el('div', { class: 'sub' },
      `score ${row.severity_score ?? '?'}${scoreRange(row)}/30 · involvement ${row.involvement_pct == null ? '?' : row.involvement_pct.toFixed(1)} %`),
    el('div', { class: 'sub', text: row.model ? `${row.model} ${row.model_version || ''} · pre-read aid` : '' }));
}

// every other active package's read: its classes (label from its manifest, "possibly ..." within
// the method's error, abnormal ones marked), or its status while it has none
function otherCell(row) {
  const td = el('td', { class: 'other' });
  for (const read of row.reads || []) {
    if (!read.classes.length && (read.extent_class || read.model === row.model)) continue; // the First read column's
    const who = `${read.model}${read.model_version ? ` ${read.model_version}` : ''}`;
    if (!read.classes.length) {
      td.append(el('div', { class: 'sub', 'data-model': read.model, text: `${who}: ${read.status}${read.reason ? ` (${read.reason})` : ''}` }));
      continue;
    }
    for (const c of read.classes) {
      const abnormal = c.class_abnormal || c.possible.some((p) => p.abnormal);
      td.append(el('div', { class: `finding${abnormal ? ' abnormal' : ''}`, 'data-model': read.model, 'data-key': c.key, 'data-class': c.class || '' },
        el('span', { class: `badge ${c.class_abnormal ? 'abnormal' : 'normal'}`, text: c.class_label || 'not measured' }),
        c.possible.length ? el('span', {
          class: `possibly${c.possible.some((p) => p.abnormal) ? ' abnormal' : ''}`, title: "within the method's validated error",
          text: ` possibly ${c.possible.map((p) => p.label).join(', ')}`,
        }) : null,
        el('div', { class: 'sub', text: `${c.label}${c.value ? ` ${c.value}` : ''} · ${who}` })));
    }
  }
  return td;
}

function feedbackCell(row) {
  const td = el('td', { class: 'fb' });
  if (row.status !== 'done' && row.status !== 'superseded') return td;
  const key = `${row.study_instance_uid}/${row.study_version}`;
  const given = row.feedback;
  for (const [verdict, label] of [['agree', 'Agree'], ['disagree', 'Disagree'], ['not_assessable', 'N/A']]) {
    td.append(el('button', {
      type: 'button', 'data-verdict': verdict, text: label,
      class: given && given.verdict === verdict ? 'chosen' : null,
      onclick: () => { state.openForm = { key, verdict }; renderForm(td, row, verdict); },
    }));
  }
  if (given) {
    const cls = given.extent_class ? ` → ${given.extent_class.replaceAll('_', ' ')}` : '';
    td.append(el('div', { class: 'given', text: `${given.verdict.replace('_', ' ')}${cls} · ${given.author}${given.comment ? ` · “${given.comment}”` : ''}` }));
  }
  if (state.openForm && state.openForm.key === key) renderForm(td, row, state.openForm.verdict);
  return td;
}

function renderForm(td, row, verdict) {
  const old = $('form', td);
  if (old) old.remove();
  const select = el('select', { name: 'extent_class', hidden: verdict !== 'disagree' },
    el('option', { value: '', text: 'class you would give…' }),
    ...CLASSES.map(([v, l]) => el('option', { value: v, text: l })));
  const comment = el('textarea', { name: 'comment', placeholder: 'comment (optional)', maxlength: '2000' });
  const error = el('div', { class: 'reason' });
  const form = el('form', {
    onsubmit: async (ev) => {
      ev.preventDefault();
      const author = reader.value.trim();
      if (!author) { error.textContent = 'Enter your name (Reader) first.'; reader.focus(); return; }
      localStorage.setItem('firstread.reader', author);
      const body = { study_instance_uid: row.study_instance_uid, study_version: row.study_version, site: row.site, verdict, comment: comment.value, author };
      if (verdict === 'disagree') body.extent_class = select.value;
      const r = await fetch('/triage/api/feedback', {
        method: 'POST', credentials: 'same-origin', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body),
      });
      if (r.ok) { state.openForm = null; refresh(); } else { error.textContent = await r.text(); }
    },
  }, select, comment, el('button', { type: 'submit', text: `Save ${verdict.replace('_', ' ')}` }), error);
  td.append(form);
}

function render(rows) {
  const focused = document.activeElement && tbody.contains(document.activeElement) && state.openForm;
  if (focused) return; // do not pull a form away while it is being filled in; the next event redraws
  tbody.replaceChildren(...rows.map((row, i) => {
    const key = row.key_image
      ? el('img', { alt: 'key image', loading: 'lazy', src: `/triage/studies/${encodeURIComponent(row.study_instance_uid)}/${row.study_version}/key-image.png?site=${encodeURIComponent(row.site)}` })
      : el('span', { class: 'none' });
    const ids = [row.patient_id && `ID ${row.patient_id}`, row.accession_number && `Acc ${row.accession_number}`].filter(Boolean).join(' · ');
    return el('tr', {
      class: 'study', 'data-study': row.study_instance_uid, 'data-version': row.study_version,
      'data-status': row.status, 'data-class': row.extent_class || '', 'data-abnormal': row.abnormal ? 'true' : null,
    },
    el('td', { class: 'c-rank', text: String(state.offset + i + 1) }),
    el('td', { class: 'key' }, key),
    el('td', { class: 'patient' }, el('div', { class: 'name', text: personName(row.patient_name) }),
      el('div', { class: 'ids', text: ids }),
      el('div', { class: 'sub', text: `${row.study_description || ''}${row.study_version > 1 ? ` · version ${row.study_version}` : ''}` })),
    resultCell(row),
    otherCell(row),
    el('td', {}, el('div', { class: `status ${row.status}`, text: row.status.replace('_', ' ') }),
      row.reason ? el('div', { class: 'reason', text: row.reason }) : null,
      ...(row.notifications || []).map((n) => el('div', {
        class: `notification ${n.state}`, title: n.error || '',
        text: `${n.destination}: ${n.state === 'done' ? 'sent' : n.state}${n.state === 'dead' && n.error ? ` (${n.error})` : ''}`,
      }))),
    el('td', { class: 'site', text: row.site }),
    el('td', {}, el('div', { class: 'ago', 'data-at': row.last_image_at || '', text: ago(row.last_image_at) }),
      row.time_to_result_s != null ? el('div', { class: 'sub', text: `result in ${row.time_to_result_s.toFixed(1)} s` }) : null),
    el('td', {}, el('a', { class: 'open', href: viewerUrl(row), target: '_blank', rel: 'noopener', text: 'Open in viewer' })),
    feedbackCell(row));
  }));
  $('#empty').hidden = rows.length > 0;
  const last = Math.min(state.offset + rows.length, state.total);
  $('#count').textContent = state.total ? `${state.offset + 1}–${last} of ${state.total}` : '0 studies';
  $('#prev').disabled = state.offset === 0;
  $('#next').disabled = last >= state.total;
  const sites = new Set([...document.querySelectorAll('td.site')].map((t) => t.textContent));
  $('#sites').replaceChildren(...[...sites].sort().map((s) => el('option', { value: s })));
}

setInterval(() => {
  for (const t of document.querySelectorAll('.ago[data-at]')) t.textContent = ago(t.dataset.at);
}, 1000);

filters.addEventListener('change', () => { state.offset = 0; refresh(); });
filters.addEventListener('submit', (e) => { e.preventDefault(); state.offset = 0; refresh(); });
$('#prev').addEventListener('click', () => { state.offset = Math.max(0, state.offset - PAGE); refresh(); });
$('#next').addEventListener('click', () => { state.offset += PAGE; refresh(); });

function connect() {
  const live = $('#live');
  const es = new EventSource('/triage/events', { withCredentials: true });
  es.addEventListener('hello', () => { live.className = 'live on'; live.textContent = 'live'; refresh(); });
  es.addEventListener('changed', scheduleRefresh);
  es.addEventListener('tick', scheduleRefresh);
  es.onerror = () => { live.className = 'live off'; live.textContent = 'reconnecting…'; };
}

refresh();
connect();

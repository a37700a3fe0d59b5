// The dashboard's script. Everything the server sends (sandbox ids, app names, crash
// reasons, operator summaries) is someone else's word: it reaches the page only through
// textContent, attributes set as properties, and canvas text; never as markup. Control
// characters and invisible format characters in it are shown visibly (`\n`, `\u{1b}`), as
// the command line shows them, and the app's self-declared name and version are labelled as
// its claim.
'use strict';

const MAX_POINTS = 120;   // samples per series (two minutes at one per second)
const MAX_EVENTS = 500;   // timeline rows kept
const PALETTE = ['#2a5db0', '#c0392b', '#1e7d32', '#8e44ad', '#d35400', '#16a085',
                 '#7f8c8d', '#b7950b', '#2c3e50', '#e84393'];

const charts = {
  memory: { canvas: null, series: new Map(), value: u => u.memory_bytes, unit: 'bytes' },
  processes: { canvas: null, series: new Map(), value: u => u.processes, unit: '' },
  cpu: { canvas: null, series: new Map(), value: u => u.cpu_percent, unit: '%' },
};
const colors = new Map();
let eventCount = 0;
let lagged = 0;

// C0 (newline and ESC included), DEL, C1, and the invisible characters that reorder or hide
// text (bidi controls, zero-width characters, line and paragraph separators, BOM): the set
// host/src/output.rs `acts_on_terminal` escapes.
const HIDDEN = /[\u0000-\u001f\u007f-\u009f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff\ufff9-\ufffb]/g;
const NAMED = { '\n': '\\n', '\r': '\\r', '\t': '\\t' };

// Text from outside the page, with every hidden character shown as an escape.
function shown(text) {
  return String(text).replace(HIDDEN, c => NAMED[c] || '\\u{' + c.charCodeAt(0).toString(16) + '}');
}

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = shown(text);
  if (cls) e.className = cls;
  return e;
}

// The app's self-declared name and version: quoted, escaped, and labelled as its claim.
function claimCell(name, version) {
  const td = el('td');
  td.appendChild(el('span', '"' + name + '" "' + version + '"', 'claimed'));
  td.appendChild(el('span', " (the app's claim)", 'muted'));
  td.title = "the app's own word: its self-declared name and version, not checked by the host";
  return td;
}

function colorOf(id) {
  if (!colors.has(id)) colors.set(id, PALETTE[colors.size % PALETTE.length]);
  return colors.get(id);
}

function bytes(n) {
  if (n === null || n === undefined) return '–';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i === 0 ? n : n.toFixed(1)) + ' ' + units[i];
}

function fmt(v, unit) {
  if (unit === 'bytes') return bytes(v);
  if (unit === '%') return (Math.round(v * 10) / 10) + '%';
  return String(Math.round(v * 10) / 10);
}

function limitsText(l) {
  if (!l) return '';
  const parts = [];
  if (l.max_memory != null) parts.push('mem ' + bytes(l.max_memory));
  if (l.max_processes != null) parts.push('procs ' + l.max_processes);
  if (l.cpu != null) parts.push('cpu ' + l.cpu);
  if (l.max_open_files != null) parts.push('fds ' + l.max_open_files);
  if (l.max_disk != null) parts.push('disk ' + bytes(l.max_disk));
  if (l.max_file_size != null) parts.push('fsize ' + bytes(l.max_file_size));
  if (l.cpu_seconds != null) parts.push('cpu-s ' + l.cpu_seconds);
  if (l.address_space != null) parts.push('as ' + bytes(l.address_space));
  return parts.length ? parts.join(', ') : 'none';
}

function isolationCell(iso) {
  const td = el('td');
  if (!iso || typeof iso !== 'object') return td;
  td.appendChild(el('div', iso.level || ''));
  const mech = iso.mechanisms;
  const entries = Array.isArray(mech) ? mech : (mech && Array.isArray(mech.entries) ? mech.entries : []);
  for (const m of entries) {
    const state = m.applied ? '' : (m.required === false ? ' na' : ' off');
    const chip = el('span', String(m.mechanism) + (m.applied ? ' ✓' : ' ✗'), 'chip' + state);
    chip.title = shown(m.detail || '');
    td.appendChild(chip);
  }
  return td;
}

function renderTable(sample) {
  const tbody = document.querySelector('#sandboxes tbody');
  const rows = [];
  for (const s of sample.sandboxes) {
    const tr = el('tr');
    tr.dataset.id = s.id;
    const u = s.usage || {};
    const idCell = el('td', s.id);
    idCell.style.color = colorOf(s.id);
    tr.appendChild(idCell);
    const status = el('td', s.status, 'status-' + String(s.status).replace(/[^a-z_]/g, ''));
    if (s.crash_reason) status.title = shown(s.crash_reason);
    tr.appendChild(status);
    tr.appendChild(el('td', 'v' + s.version, 'num'));
    tr.appendChild(claimCell(s.app_name, s.app_version));
    tr.appendChild(el('td', s.pid, 'num'));
    tr.appendChild(el('td', s.restart_count, 'num'));
    tr.appendChild(el('td', u.processes ?? '–', 'num'));
    tr.appendChild(el('td', bytes(u.memory_bytes), 'num'));
    tr.appendChild(el('td', u.cpu_percent != null ? u.cpu_percent + '%' : '–', 'num'));
    tr.appendChild(el('td', limitsText(s.limits)));
    tr.appendChild(isolationCell(s.isolation));
    rows.push(tr);
  }
  tbody.replaceChildren(...rows);
  document.getElementById('count').textContent = '(' + sample.sandboxes.length + ')';
  document.getElementById('omitted').textContent =
    sample.omitted ? sample.omitted + ' more not shown' : '';
  document.getElementById('sampled').textContent = sample.time ? 'sampled ' + shown(sample.time) : '';
}

function updateCharts(sample) {
  const live = new Set(sample.sandboxes.map(s => s.id));
  for (const chart of Object.values(charts)) {
    for (const id of chart.series.keys()) if (!live.has(id)) chart.series.delete(id);
    for (const s of sample.sandboxes) {
      if (!s.usage) continue;
      let points = chart.series.get(s.id);
      if (!points) { points = []; chart.series.set(s.id, points); }
      points.push(Number(chart.value(s.usage)) || 0);
      if (points.length > MAX_POINTS) points.shift();
    }
    const last = {};
    for (const [id, points] of chart.series) last[id] = points[points.length - 1];
    // For tests and tools: the newest value of each series.
    chart.canvas.dataset.last = JSON.stringify(last);
    chart.canvas.dataset.points = String(Math.max(0, ...[...chart.series.values()].map(p => p.length)));
    draw(chart);
  }
  const legend = document.getElementById('legend');
  legend.replaceChildren(...[...live].sort().map(id => {
    const li = el('li', id);
    li.style.setProperty('--c', colorOf(id));
    return li;
  }));
}

function draw(chart) {
  const c = chart.canvas;
  const g = c.getContext('2d');
  const w = c.width, h = c.height, left = 64, bottom = 16, top = 8;
  g.clearRect(0, 0, w, h);
  let max = 0;
  for (const points of chart.series.values()) for (const v of points) max = Math.max(max, v);
  if (chart.unit === '%') max = Math.max(max, 10);
  max = max > 0 ? max * 1.1 : 1;
  g.strokeStyle = '#d9dde5';
  g.fillStyle = '#6b7385';
  g.font = '11px system-ui, sans-serif';
  g.lineWidth = 1;
  for (let i = 0; i <= 4; i++) {
    const y = top + (h - top - bottom) * i / 4;
    g.beginPath(); g.moveTo(left, y); g.lineTo(w, y); g.stroke();
    g.fillText(fmt(max * (4 - i) / 4, chart.unit), 2, y + 4);
  }
  const dx = (w - left) / (MAX_POINTS - 1);
  for (const [id, points] of chart.series) {
    g.strokeStyle = colorOf(id);
    g.lineWidth = 2;
    g.beginPath();
    const start = MAX_POINTS - points.length;
    points.forEach((v, i) => {
      const x = left + (start + i) * dx;
      const y = top + (h - top - bottom) * (1 - v / max);
      if (i === 0) g.moveTo(x, y); else g.lineTo(x, y);
    });
    g.stroke();
  }
}

function describe(e) {
  switch (e.event) {
    case 'sandbox.created':
      return 'pid ' + e.pid + ', v' + e.version + ', ' + e.isolation + ', ready in ' + (e.ready_us / 1000).toFixed(1) + ' ms';
    case 'sandbox.reloaded':
      return 'v' + e.from + ' → v' + e.to + ' in ' + (e.load_us / 1000).toFixed(1) + ' ms';
    case 'sandbox.reload_failed': return 'v' + e.version + ' still serves: ' + e.reason + ' (quotes the app)';
    case 'sandbox.rolled_back': return 'v' + e.from + ' → v' + e.to;
    case 'sandbox.workers_added': return '+' + e.count + ', ' + e.total + ' workers';
    case 'sandbox.worker_restarted': return 'worker ' + e.index + ': ' + e.reason;
    case 'sandbox.crashed': return e.cause + ': ' + e.how + (e.final ? ' (stays down)' : '');
    case 'sandbox.restarted': return 'pid ' + e.pid + ' after ' + e.after;
    case 'sandbox.destroyed': return '';
    case 'operator.started': return e.skill + ' via ' + e.provider + ' (' + e.trigger + ')';
    case 'operator.snapshot': return 'snapshot ' + e.id + ': ' + JSON.stringify(e.data).slice(0, 160) + '…';
    case 'operator.notification': return '[' + e.severity + '] ' + e.summary;
    case 'operator.forced': return e.tool + ' (named by the request: the model had not called a tool)';
    case 'operator.state': return e.state + ': ' + e.summary;
    case 'operator.done': return 'verdict ' + e.state + ' (' + e.stop + ', ' + e.notifications + ' notifications)';
    case 'operator.no_verdict': return 'no verdict: ' + e.reason;
    case 'operator.insight': return insightText(e);
    default: {
      const rest = Object.assign({}, e);
      for (const k of ['seq', 'time', 'event', 'sandbox']) delete rest[k];
      return JSON.stringify(rest);
    }
  }
}

// An insight in words: correlation, grounded or why not, confidence, state, hypothesis.
function insightText(e) {
  const grounding = e.grounded ? 'grounded' : 'UNGROUNDED (' + e.ungrounded + ')';
  return e.correlation + ', ' + grounding + ', confidence ' + Number(e.confidence).toFixed(2) +
    ', state ' + e.state + ', ' + e.notifications + ' notifications' +
    ((e.sandboxes || []).length ? ', sandboxes ' + e.sandboxes.join(',') : '') + ': ' + e.hypothesis;
}

let insightCount = 0;

// The Insights list: one item per operator.insight event, newest first.
function addInsight(e) {
  const li = el('li');
  li.dataset.grounded = String(e.grounded === true);
  li.className = e.grounded ? 'sev-healthy' : 'sev-warning';
  li.appendChild(el('span', String(e.time || '').replace('T', ' ').replace('Z', ''), 'time'));
  li.appendChild(el('span', insightText(e), 'text'));
  const list = document.getElementById('insights');
  list.prepend(li);
  while (list.childElementCount > MAX_EVENTS) list.lastElementChild.remove();
  insightCount++;
  document.getElementById('insight-count').textContent = '(' + insightCount + ')';
}

function addEvent(e) {
  if (e.event === 'operator.insight') addInsight(e);
  const li = el('li');
  li.dataset.event = String(e.event);
  li.dataset.seq = String(e.seq);
  const sev = e.severity || (e.event === 'operator.state' || e.event === 'operator.done' ? e.state : '');
  if (sev) li.className = 'sev-' + String(sev).replace(/[^a-z]/g, '');
  li.appendChild(el('span', String(e.time || '').replace('T', ' ').replace('Z', ''), 'time'));
  li.appendChild(el('span', e.event, 'name'));
  li.appendChild(el('span', e.sandbox || '', 'sb'));
  li.appendChild(el('span', describe(e), 'text'));
  const list = document.getElementById('timeline');
  list.prepend(li);
  while (list.childElementCount > MAX_EVENTS) list.lastElementChild.remove();
  eventCount++;
  document.body.dataset.events = String(eventCount);
}

function connect() {
  const conn = document.getElementById('conn');
  const source = new EventSource('events');
  source.onopen = () => { conn.dataset.state = 'open'; conn.textContent = 'live'; };
  source.onerror = () => { conn.dataset.state = 'error'; conn.textContent = 'reconnecting…'; };
  source.addEventListener('sample', m => {
    const sample = JSON.parse(m.data);
    renderTable(sample);
    updateCharts(sample);
  });
  source.addEventListener('event', m => addEvent(JSON.parse(m.data)));
  source.addEventListener('lagged', m => {
    lagged += JSON.parse(m.data).missed;
    document.getElementById('lagged').textContent = '(missed ' + lagged + ' events: the page fell behind)';
  });
}

document.addEventListener('DOMContentLoaded', () => {
  for (const [name, chart] of Object.entries(charts)) {
    chart.canvas = document.getElementById('chart-' + name);
  }
  connect();
});

// tether admin: the cluster as the node serving this page sees it. Every
// 2 s it asks the admin API (nodes, stats, rooms) and this node's /metrics,
// keeps the series in memory while the page is open and draws them with
// uPlot. Whatever comes from the server goes into the page as text
// (textContent), never as markup.
'use strict';

const POLL_MS = 2000;
const KEEP_POINTS = 900; // 30 minutes of samples
const ROOMS_SHOWN = 100;
const KICK_ARMED_MS = 4000;
// The token stays in this tab's sessionStorage: never in the URL, where
// it would reach the history, logs and Referer headers.
const TOKEN_KEY = 'tether.admin.token';

const $ = (id) => document.getElementById(id);
let token = sessionStorage.getItem(TOKEN_KEY) || '';

// ---------- talking to the node ----------

// RequestError is a failed request: its HTTP status (0 when the node did
// not answer) and what the server said.
class RequestError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

// request fetches a path of the admin server (relative to /ui/, so that
// the page also works behind a proxy that mounts the server elsewhere).
async function request(method, path, body) {
  const headers = {};
  if (token) headers.Authorization = 'Bearer ' + token;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let res;
  try {
    res = await fetch('../' + path, {
      method, headers, cache: 'no-store',
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (err) {
    throw new RequestError(0, 'the node does not answer (' + err.message + ')');
  }
  if (!res.ok) {
    const text = await res.text();
    let answer = {};
    try { answer = JSON.parse(text) || {}; } catch { /* not JSON: the text is the message */ }
    throw new RequestError(res.status, answer.message || answer.error || text.trim() || res.statusText);
  }
  return res;
}

const api = async (method, path, body) => (await request(method, 'api/' + path, body)).json();

// ---------- signing in ----------

function showLogin(error) {
  stopPolling();
  $('dash-view').hidden = true;
  $('login-view').hidden = false;
  $('login-error').textContent = error;
  $('login-error').hidden = !error;
  $('token-input').focus();
}

function showDashboard(status) {
  $('login-view').hidden = true;
  $('dash-view').hidden = false;
  $('signout-button').hidden = !token;
  $('served-by').textContent = status.node;
  startPolling();
}

// start asks the node who it is with the current token: the answer opens
// the dashboard, a 401 the sign-in form.
async function start() {
  try {
    showDashboard(await api('GET', 'status'));
  } catch (err) {
    if (err.status === 401) {
      const had = token;
      forgetToken();
      showLogin(had ? 'The saved token was refused: type it again.' : '');
      return;
    }
    showLogin('Could not reach the node: ' + err.message);
  }
}

function forgetToken() {
  token = '';
  sessionStorage.removeItem(TOKEN_KEY);
}

$('login-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  // An empty field tries without a token: the form is also how the page
  // retries after the node did not answer.
  const typed = $('token-input').value.trim();
  $('login-button').disabled = true;
  token = typed;
  try {
    const status = await api('GET', 'status');
    if (token) sessionStorage.setItem(TOKEN_KEY, token);
    $('token-input').value = '';
    showDashboard(status);
  } catch (err) {
    token = '';
    showLogin(err.status !== 401 ? 'Could not reach the node: ' + err.message
      : typed ? "Token refused: that is not this node's http.token."
      : 'This node needs its token.');
  } finally {
    $('login-button').disabled = false;
  }
});

$('signout-button').addEventListener('click', () => {
  forgetToken();
  showLogin('');
});

// ---------- polling ----------

// generation tells a poll loop that it was stopped (and maybe a new one
// started) while it waited for the node.
let generation = 0;
let timer = null;

function startPolling() {
  stopPolling();
  poll(++generation);
}

function stopPolling() {
  generation++;
  clearTimeout(timer);
}

async function poll(gen) {
  const began = performance.now();
  await tick(gen);
  if (gen === generation) timer = setTimeout(() => poll(gen), Math.max(0, POLL_MS - (performance.now() - began)));
}

async function tick(gen) {
  const [nodes, stats, rooms, metrics] = await Promise.allSettled([
    api('GET', 'nodes'), api('GET', 'stats'), api('GET', 'rooms'),
    request('GET', 'metrics').then((res) => res.text()),
  ]);
  if (gen !== generation) return;
  const failed = [nodes, stats, rooms, metrics].filter((r) => r.status === 'rejected').map((r) => r.reason);
  if (failed.some((err) => err.status === 401)) {
    forgetToken();
    showLogin('The token was refused: type it again.');
    return;
  }
  if (nodes.status === 'fulfilled') renderNodes(nodes.value, stats.status === 'fulfilled' ? stats.value : []);
  if (rooms.status === 'fulfilled') renderRooms(rooms.value);
  if (metrics.status === 'fulfilled') record(parseMetrics(metrics.value), Date.now() / 1000);
  const state = $('state');
  state.dataset.state = failed.length ? 'reconnecting' : 'online';
  state.textContent = failed.length ? 'retrying' : 'live';
  state.title = failed.map((err) => err.message).join('\n');
}

// ---------- nodes ----------

function renderNodes(nodes, stats) {
  const byNode = new Map(stats.map((s) => [s.node, s]));
  const self = $('served-by').textContent;
  const rows = nodes.map((n) => {
    const s = byNode.get(n.node);
    const id = cell(n.node, 'mono');
    if (n.node === self) id.append(tag('this node'));
    const state = pill(n.alive ? 'alive' : 'dead', n.alive ? 'online' : 'offline');
    if (!n.alive) state.title = 'last heard ' + ago(new Date(n.last_seen));
    const nats = cell(s ? s.nats : '—');
    if (s && s.nats !== 'connected') nats.classList.add('warn');
    return row(
      id, cell(state), cell(s ? s.uptime : '—'),
      cell(String(s ? s.connections : n.connections), 'num'),
      cell(s ? String(s.rooms) : '—', 'num'), nats,
    );
  });
  $('nodes').tBodies[0].replaceChildren(...rows);
  const alive = nodes.filter((n) => n.alive).length;
  $('nodes-count').textContent = alive === nodes.length ? String(nodes.length) : `${alive} of ${nodes.length} alive`;
}

// ---------- rooms ----------

function renderRooms(rooms) {
  rooms.sort((a, b) => b.members - a.members || a.room.localeCompare(b.room));
  const largest = rooms.length ? rooms[0].members : 0;
  const rows = rooms.slice(0, ROOMS_SHOWN).map((r) => {
    // A bar beside the count: the room's size against the largest one.
    const meter = document.createElement('div');
    const track = document.createElement('span');
    const bar = document.createElement('span');
    meter.className = 'meter';
    track.className = 'track';
    bar.className = 'bar';
    bar.style.width = (100 * r.members / largest) + '%';
    track.append(bar);
    meter.append(track, String(r.members));
    const members = cell(meter, 'num');
    const nodes = cell(String(Object.keys(r.nodes).length), 'num');
    nodes.title = Object.entries(r.nodes).map(([node, n]) => `${node}: ${n}`).join('\n');
    return row(cell(r.room, 'room-name'), members, nodes);
  });
  if (!rows.length) rows.push(row(cell('No rooms yet.', 'empty', 3)));
  $('rooms').tBodies[0].replaceChildren(...rows);
  $('rooms-count').textContent = String(rooms.length);
  const more = rooms.length - ROOMS_SHOWN;
  $('rooms-more').hidden = more <= 0;
  $('rooms-more').textContent = `and ${more} smaller rooms`;
}

// ---------- series and charts ----------

// parseMetrics reads what the charts need of the Prometheus text format:
// each sample line "name{label="value",...} number"; comments are skipped.
function parseMetrics(text) {
  const samples = [];
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)/.exec(line);
    if (!m) continue; // a comment, a blank line
    const labels = {};
    for (const l of (m[2] || '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) {
      labels[l[1]] = l[2].replace(/\\(.)/g, (_, c) => (c === 'n' ? '\n' : c));
    }
    samples.push({ name: m[1], labels, value: Number(m[3]) });
  }
  return samples;
}

// sumBy adds up a metric's samples by one label's values.
function sumBy(samples, name, label) {
  const out = new Map();
  for (const s of samples) {
    if (s.name === name) out.set(s.labels[label], (out.get(s.labels[label]) || 0) + s.value);
  }
  return out;
}

const total = (samples, name) => samples.filter((s) => s.name === name).reduce((sum, s) => sum + s.value, 0);

// A Track is one chart's series over the shared sample times: an array of
// values per key (a listener, a close reason), null where there was none.
class Track {
  constructor(keys = []) {
    this.values = new Map(keys.map((k) => [k, []]));
  }

  push(length, sample) {
    for (const k of sample.keys()) {
      if (!this.values.has(k)) this.values.set(k, new Array(length).fill(null));
    }
    for (const [k, v] of this.values) v.push(sample.has(k) ? sample.get(k) : null);
  }

  shift() {
    for (const v of this.values.values()) v.shift();
  }
}

const times = [];
const tracks = {
  connections: new Track(),
  rates: new Track(['messages in', 'deliveries out']),
  closes: new Track(),
};
let previous = null; // the counters of the last sample, for rates

// record turns one /metrics sample into a point of every chart. Rates are
// the counters' differences over the time between two samples; a counter
// that went down (the node restarted) gives no point.
function record(samples, now) {
  const frames = new Map([
    ['messages in', total(samples, 'tether_frames_in_total')],
    ['deliveries out', total(samples, 'tether_frames_out_total')],
  ]);
  const closes = sumBy(samples, 'tether_closes_total', 'reason');
  const rates = new Map();
  const closed = new Map();
  if (previous) {
    const dt = now - previous.time;
    for (const [k, v] of frames) {
      const d = v - previous.frames.get(k);
      rates.set(k, d >= 0 ? d / dt : null);
    }
    for (const [reason, v] of closes) {
      const d = v - (previous.closes.get(reason) || 0);
      closed.set(reason, d >= 0 ? d : null);
    }
  }
  previous = { time: now, frames, closes };

  const n = times.length;
  times.push(now);
  tracks.connections.push(n, sumBy(samples, 'tether_connections', 'listener'));
  tracks.rates.push(n, rates);
  tracks.closes.push(n, closed);
  if (times.length > KEEP_POINTS) {
    times.shift();
    for (const t of Object.values(tracks)) t.shift();
  }
  for (const [name, chart] of Object.entries(charts)) chart.draw(times, tracks[name]);
}

const css = (name) => getComputedStyle(document.documentElement).getPropertyValue(name).trim();
const numbers = new Intl.NumberFormat('en-US', { maximumFractionDigits: 1 });
const ticks = new Intl.NumberFormat('en-US', { maximumFractionDigits: 2 }); // 0.25 rates apart

// nonZero picks the samples a chart marks with a dot: for closes, the
// intervals that had any, which a line at 0 between them would hide.
const nonZero = (u, sidx) => u.data[sidx].flatMap((v, i) => (v > 0 ? [i] : []));

// pinLegend has a legend show the latest values while no cursor is on its
// chart (uPlot's shows dashes then). It runs on every legend update, its
// own included: pinning stops that recursion.
let pinning = false;
function pinLegend(u) {
  if (pinning || u.cursor.idx != null || !u.data[0].length) return;
  pinning = true;
  u.setLegend({ idx: u.data[0].length - 1 });
  pinning = false;
}

// Chart is one uPlot chart in its element; it is built again when its
// series change (a listener or a close reason appears).
class Chart {
  constructor(el, { unit = '', integers = false, marks = false }) {
    this.el = el;
    this.unit = unit;
    this.integers = integers;
    this.marks = marks;
    this.plot = null;
    this.keys = '';
    new ResizeObserver(() => this.plot && this.plot.setSize(this.size())).observe(el);
  }

  size() {
    return { width: this.el.clientWidth, height: 190 };
  }

  options(keys) {
    const palette = [css('--accent'), css('--ok'), css('--warn'), css('--bad'), css('--whisper'), '#2b8a9e', '#d0558f', '#6b7a8f'];
    const axis = {
      stroke: css('--muted'),
      grid: { stroke: css('--border'), width: 1 },
      ticks: { stroke: css('--border'), width: 1 },
    };
    const value = (u, v) => (v == null ? '–' : numbers.format(v) + this.unit);
    return {
      ...this.size(),
      cursor: { drag: { x: false, y: false } },
      hooks: { setLegend: [pinLegend] },
      scales: { y: { range: (u, min, max) => [0, max > 0 ? max * 1.15 : 1] } },
      axes: [axis, {
        ...axis, size: 48,
        incrs: this.integers ? [1, 2, 5, 10, 20, 50, 100, 200, 500, 1e3, 2e3, 5e3, 1e4, 1e5, 1e6] : undefined,
        values: (u, splits) => splits.map((t) => ticks.format(t)),
      }],
      series: [{}, ...keys.map((k, i) => {
        const color = palette[i % palette.length];
        return {
          label: k, stroke: color, width: 2, value,
          points: this.marks ? { show: false, size: 7, filter: nonZero } : { show: false },
        };
      })],
    };
  }

  draw(times, track) {
    const keys = [...track.values.keys()];
    const data = [times, ...keys.map((k) => track.values.get(k))];
    if (this.keys !== JSON.stringify(keys)) {
      if (this.plot) this.plot.destroy();
      this.plot = new uPlot(this.options(keys), data, this.el);
      this.keys = JSON.stringify(keys);
    } else {
      this.plot.setData(data);
    }
    this.el.dataset.points = String(this.plot.data[0].length);
  }
}

const charts = {
  connections: new Chart($('chart-connections'), { integers: true }),
  rates: new Chart($('chart-rates'), { unit: '/s' }),
  closes: new Chart($('chart-closes'), { integers: true, marks: true }),
};

// ---------- finding and kicking connections ----------

$('find-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const by = document.querySelector('input[name="find-by"]:checked').value;
  const q = $('find-input').value.trim();
  const status = $('find-status');
  if (!q) {
    status.textContent = by === 'id' ? 'Type a connection id.' : 'Type a user id.';
    return;
  }
  $('found').replaceChildren();
  status.textContent = 'Looking…';
  try {
    const infos = by === 'id'
      ? [await api('GET', 'conns/' + encodeURIComponent(q))]
      : await api('GET', 'users/' + encodeURIComponent(q) + '/conns');
    status.textContent = by === 'id' ? ''
      : infos.length ? `${infos.length} open connection${infos.length > 1 ? 's' : ''} of user ${q}`
      : `No open connection is bound to user ${q}.`;
    $('found').replaceChildren(...infos.map(connCard));
  } catch (err) {
    if (err.status === 401) {
      forgetToken();
      showLogin('The token was refused: type it again.');
      return;
    }
    status.textContent = err.status === 404 ? `No connection ${q}.` : err.message;
  }
});

$('find-by-id').addEventListener('change', () => { $('find-input').placeholder = 'node-x7k2m9qa.65201wJI8ST2WWSQ'; });
$('find-by-user').addEventListener('change', () => { $('find-input').placeholder = 'u17'; });

// connCard is a connection's info, with a Kick button while it is open.
function connCard(info) {
  const card = $('conn-card').content.firstElementChild.cloneNode(true);
  card.dataset.conn = info.id;
  card.querySelector('.conn-id').textContent = info.id;
  fillCard(card, info);
  const kick = card.querySelector('.kick-button');
  let armed = null;
  const disarm = (text) => {
    clearTimeout(armed);
    armed = null;
    kick.disabled = false;
    kick.textContent = text;
    kick.classList.remove('armed');
  };
  kick.addEventListener('click', async () => {
    // A first click arms the button: a kick cannot be undone.
    if (!armed) {
      kick.textContent = 'Click again to kick';
      kick.classList.add('armed');
      armed = setTimeout(() => disarm('Kick'), KICK_ARMED_MS);
      return;
    }
    clearTimeout(armed);
    kick.disabled = true;
    kick.textContent = 'Kicking…';
    try {
      await api('POST', 'kick', { conn: info.id });
      const after = await closedInfo(info.id);
      fillCard(card, after);
      disarm(after.closed ? 'Kick' : 'Kicked; not closed yet');
    } catch (err) {
      disarm('Kick failed: ' + err.message);
    }
  });
  return card;
}

// closedInfo asks for a kicked connection's info until it says closed:
// the kick is a message to the connection's actor, which closes after.
async function closedInfo(id) {
  const deadline = Date.now() + 5000;
  for (;;) {
    const info = await api('GET', 'conns/' + encodeURIComponent(id));
    if (info.closed || Date.now() > deadline) return info;
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}

function fillCard(card, info) {
  const state = card.querySelector('.conn-state');
  state.textContent = info.closed ? 'closed: ' + info.reason : 'open';
  state.dataset.state = !info.closed ? 'online' : info.reason === 'kicked' ? 'kicked' : 'offline';
  card.querySelector('.kick-button').hidden = !!info.closed;
  const fields = [
    ['Node', info.node],
    ['Listener', `${info.listener} (${info.protocol})`],
    ['Remote', `${info.remote_addr}:${info.remote_port}`],
    ['Local port', String(info.local_port)],
    ['User', info.user || '—'],
    ['Rooms', info.rooms && info.rooms.length ? info.rooms.join(', ') : '—'],
    ['Connected', when(info.connected)],
    ['Last receive', when(info.last_receive)],
    ['Last send', when(info.last_send)],
    ['In', `${bytes(info.bytes_in)}, ${frames(info.frames_in)}`],
    ['Out', `${bytes(info.bytes_out)}, ${frames(info.frames_out)}`],
    ['Queued', bytes(info.queued_bytes) + (info.dropped ? `, ${info.dropped} dropped` : '')],
  ];
  if (info.closed) fields.push(['Closed', when(info.closed)]);
  card.querySelector('.conn-info').replaceChildren(...fields.flatMap(([k, v]) => {
    const dt = document.createElement('dt');
    const dd = document.createElement('dd');
    dt.textContent = k;
    dd.textContent = v;
    return [dt, dd];
  }));
}

// ---------- formatting ----------

function cell(content, className, span) {
  const td = document.createElement('td');
  if (typeof content === 'string') td.textContent = content;
  else td.append(content);
  if (className) td.className = className;
  if (span) td.colSpan = span;
  return td;
}

function row(...cells) {
  const tr = document.createElement('tr');
  tr.append(...cells);
  return tr;
}

function pill(text, state) {
  const span = document.createElement('span');
  span.className = 'pill';
  span.dataset.state = state;
  span.textContent = text;
  return span;
}

function tag(text) {
  const span = document.createElement('span');
  span.className = 'you-tag';
  span.textContent = text;
  return span;
}

// when is a time of the server with how long ago it was; Go's zero time
// (never) is a dash.
function when(iso) {
  const t = iso ? new Date(iso) : null;
  if (!t || t.getFullYear() < 2000) return '—';
  return `${t.toLocaleString()} (${ago(t)})`;
}

function ago(t) {
  const s = Math.max(0, Math.round((Date.now() - t.getTime()) / 1000));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return `${Math.floor(s / 86400)} d ago`;
}

const frames = (n) => `${numbers.format(n)} frame${n === 1 ? '' : 's'}`;

function bytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${numbers.format(n / 1024)} KiB`;
  return `${numbers.format(n / 1024 / 1024)} MiB`;
}

start();

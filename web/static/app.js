// tether chat: the page of the chat application (DESIGN.md section 5).
// The connection is the client's (/tether.js): its heartbeat, reconnects
// with backoff, authentication, and joining the room again, resumed with
// since where the room keeps history. This page is the UI around it. No
// dependencies. Every piece of user text reaches the DOM through
// textContent or attributes, never through innerHTML.
import { TetherClient } from '/tether.js';

const MAX_LINES = 500; // message list entries kept in the DOM
const GROUP_MS = 3 * 60 * 1000; // consecutive messages of one sender merge
const PRESENCE_LINES = 3; // above this many names a presence diff is summarised

// Why a join with since did not recover (README, "History").
const RECOVERY_TEXT = {
  no_history: 'this room keeps no history',
  too_old: 'they are no longer kept',
  epoch_changed: "the room's history was reset",
};

const $ = (id) => document.getElementById(id);
const ui = {
  joinView: $('join-view'), joinForm: $('join-form'), joinName: $('join-name'),
  joinRoom: $('join-room'), joinError: $('join-error'), joinButton: $('join-button'),
  joinToken: $('join-token'), tokenField: $('token-field'),
  chatView: $('chat-view'), roomName: $('room-name'), roomSub: $('room-sub'),
  state: $('state'), reconnect: $('reconnect-button'), leave: $('leave-button'),
  sidebar: $('sidebar'), scrim: $('sidebar-scrim'), membersToggle: $('members-toggle'),
  membersToggleCount: $('members-toggle-count'), members: $('members'), memberCount: $('member-count'),
  meAvatar: $('me-avatar'), meName: $('me-name'), meConn: $('me-conn'),
  messages: $('messages'), composer: $('composer'), input: $('composer-input'), send: $('send-button'),
  whisperChip: $('whisper-chip'), whisperName: $('whisper-name'), whisperCancel: $('whisper-cancel'),
};

const st = {
  myConns: new Set(), // every id we had: our old messages stay "own"
  auth: '', // the listener authenticates its clients: 'token' or 'proxy' (welcome)
  token: '', // ours: from ?token= or the join form
  session: null, // {room, name, avatar} while the user wants to be in a room
  joined: false, // the client has joined session.room on this connection
  countdown: 0, // the interval that shows the seconds to the next attempt
  members: new Map(), // conn → {conn, name, avatar, node}
  whisperTo: null, // {conn, name}
  last: null, // {from, whisper, to, at} of the last message line, for grouping
  lastDay: '', // the day of the last line
  unread: 0, // messages that arrived while the page was hidden
};

const query = new URLSearchParams(location.search);
st.token = query.get('token') || ''; // never stored: a token is a password
const client = new TetherClient((location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/ws', { token: st.token });

// ---------- small DOM helpers ----------

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text != null) e.textContent = text;
  return e;
}

const segmenter = typeof Intl !== 'undefined' && Intl.Segmenter ? new Intl.Segmenter() : null;
function graphemes(s) {
  if (segmenter) { let n = 0; for (const _ of segmenter.segment(s)) n++; return n; }
  return [...s].length;
}

// An avatar is shown as sent when it is an emoji or a short mark; other
// strings (image URLs of other clients, say) become the name's initial on
// a colour of its own: the page never loads anything from elsewhere.
function avatarEl(avatar, name, small) {
  const a = el('span', small ? 'avatar small' : 'avatar');
  a.setAttribute('aria-hidden', 'true');
  const s = typeof avatar === 'string' ? avatar.trim() : '';
  if (s && !/\s/.test(s) && graphemes(s) <= 2 && (/\p{Extended_Pictographic}/u.test(s) || s.length <= 2)) {
    a.textContent = s;
  } else {
    const n = (name || '?').trim() || '?';
    a.textContent = [...n][0].toUpperCase();
    a.classList.add('initial');
    let h = 0;
    for (const ch of n) h = (h * 31 + ch.codePointAt(0)) >>> 0;
    a.style.background = `hsl(${h % 360} 45% 52%)`;
  }
  return a;
}

function fmtTime(d) {
  return d.toLocaleTimeString([], { hour: 'numeric', minute: '2-digit' });
}
function fmtDay(d) {
  const today = new Date();
  const yesterday = new Date(today.getFullYear(), today.getMonth(), today.getDate() - 1);
  if (d.toDateString() === today.toDateString()) return 'Today';
  if (d.toDateString() === yesterday.toDateString()) return 'Yesterday';
  return d.toLocaleDateString([], { weekday: 'long', month: 'long', day: 'numeric' });
}

// ---------- connection state pill ----------

function setState(state, label, detail) {
  for (const pill of document.querySelectorAll('.state-pill')) {
    pill.dataset.state = state;
    pill.textContent = label || state;
    pill.title = detail || '';
  }
  ui.reconnect.hidden = !(state === 'kicked' || state === 'reconnecting' || state === 'offline');
  ui.reconnect.textContent = state === 'kicked' ? 'Reconnect' : 'Retry now';
  ui.sidebar.classList.toggle('stale', state !== 'online');
  updateComposer();
}

// The client's states, as the page shows them.
client.on('state', (s) => {
  clearInterval(st.countdown);
  st.joined = false; // until the client says it has joined again
  switch (s.state) {
    case 'connecting':
      setState('connecting', s.attempt > 0 ? 'reconnecting' : 'connecting');
      break;
    case 'unauthenticated':
      st.auth = s.auth;
      ui.tokenField.hidden = false;
      setState('unauthorized', 'token needed', 'this server needs a token');
      if (st.session) endSession('This server needs a token: paste yours below.');
      break;
    case 'connected':
      st.auth = client.welcome.auth || '';
      ui.tokenField.hidden = st.auth !== 'token';
      st.myConns.add(client.conn);
      if (st.session && client.user) Object.assign(st.session, { name: client.user.name, avatar: client.user.avatar });
      setState('online', 'online', `connection ${client.conn} on node ${client.node}`);
      renderMe();
      break;
    case 'reconnecting':
      if (s.previous === 'connected' && st.session) system(`Disconnected (${s.reason}), reconnecting…`, 'warn');
      countDown(Date.now() + s.delay, s.reason);
      break;
    case 'closed': // the server meant it: kicked, or the token refused or expired
      if (s.code === 4004) {
        setState('kicked', 'kicked', s.reason);
        if (st.session) system('You were kicked from the server. Press Reconnect to come back.', 'error');
      } else if (s.error) {
        setState('unauthorized', 'token refused', s.error.message);
        endSession(`Token refused: ${s.error.message}`);
      } else {
        setState('unauthorized', s.reason, s.reason);
        if (st.session) endSession(s.code === 4007 ? 'Your token expired: paste a new one to come back.' : 'The server refused the token: paste another.');
      }
      break;
  }
});

// countDown shows the seconds until the client's next attempt.
function countDown(at, why) {
  const show = () => {
    if (navigator.onLine === false) {
      setState('offline', 'offline', why);
      return;
    }
    const s = Math.max(1, Math.ceil((at - Date.now()) / 1000));
    setState('reconnecting', `reconnecting in ${s}s`, why);
  };
  show();
  st.countdown = setInterval(show, 250);
}

function isReady() {
  return client.state === 'connected' && st.joined;
}

// ---------- rooms ----------

// joinRoom joins session.room for the first time; the client joins it
// again after every reconnect and says so in a rejoin event.
async function joinRoom() {
  const s = st.session;
  try {
    await client.join(s.room, { name: s.name, avatar: s.avatar });
  } catch (err) {
    if (s !== st.session) return; // left, or the state ended the session and said why
    endSession(`Could not join #${s.room}: ${err.code}${err.message && err.message !== err.code ? ' (' + err.message + ')' : ''}`);
    return;
  }
  if (s !== st.session) return;
  st.joined = true;
  updateComposer();
  system(`You joined #${s.room}`);
  refreshMembers(s);
}

// After a reconnect, or after a gap in a room with history, the client
// joined again: with since where it could, and says what it recovered.
client.on('rejoin', (r) => {
  const s = st.session;
  if (!s || r.room !== s.room) return;
  if (r.error) {
    endSession(`Could not rejoin #${s.room}: ${r.error.message}`);
    return;
  }
  st.joined = true;
  updateComposer();
  const afterGap = r.cause === 'gap';
  if (r.recovered) {
    const n = r.replayed;
    const what = n === 0 ? 'nothing was missed' : `recovered ${n} missed message${n === 1 ? '' : 's'}`;
    system(afterGap ? `Back in order: ${what}` : `Reconnected, back in #${s.room}: ${what}`, 'good');
  } else {
    const why = RECOVERY_TEXT[r.reason] || 'this room keeps no history';
    system(`${afterGap ? 'Messages were lost' : `Reconnected, back in #${s.room}`}: messages sent meanwhile could not be recovered (${why})`, 'warn');
  }
  if (!afterGap) refreshMembers(s);
});

// A gap in a room with history is the client's to mend (a rejoin
// follows); in one without, the page can only say so.
client.on('gap', (g) => {
  if (inRoom(g.room) && !client.position(g.room)) system('Some messages were lost on the way (this room keeps no history)', 'warn');
});

// refreshMembers shows ourselves at once, then the member list proper.
async function refreshMembers(s) {
  st.members.set(client.conn, { conn: client.conn, name: s.name, avatar: s.avatar, node: client.node });
  renderMembers();
  let list;
  try {
    list = await client.members(s.room);
  } catch (err) {
    if (s === st.session && err.code !== 'disconnected') system(`Could not list members: ${err.message}`, 'error');
    return;
  }
  if (s !== st.session) return;
  st.members = new Map();
  for (const m of list) if (m && m.conn != null) st.members.set(String(m.conn), normMember(m));
  renderMembers();
}

function inRoom(room) {
  return st.session !== null && st.joined && room === st.session.room;
}

client.on('joined', (m) => { if (inRoom(m.room)) memberJoined(m, true); });
client.on('left', (m) => { if (inRoom(m.room)) memberLeft(m, true); });
client.on('presence', (m) => { if (inRoom(m.room)) presence(m); });
client.on('error', (err) => system(`Server error: ${err.code}${err.message !== err.code ? ' (' + err.message + ')' : ''}`, 'error'));

// endSession leaves the room (the client forgets it) and shows the join
// form, with why when there is a why.
function endSession(why) {
  const s = st.session;
  st.session = null;
  st.joined = false;
  if (s) client.leave(s.room).catch(() => { /* leaving anyway */ });
  showJoin(why);
}

function normMember(m) {
  return {
    conn: String(m.conn),
    name: typeof m.name === 'string' && m.name ? m.name : String(m.conn),
    avatar: typeof m.avatar === 'string' ? m.avatar : '',
    node: typeof m.node === 'string' ? m.node : '',
  };
}

function memberJoined(m, announce) {
  if (m.conn == null) return;
  const member = normMember(m);
  st.members.set(member.conn, member);
  renderMembers();
  if (announce) system(`${member.name} joined`, '', { kind: 'joined', conn: member.conn });
}

function memberLeft(m, announce) {
  if (m.conn == null) return;
  const conn = String(m.conn);
  const known = st.members.get(conn);
  const name = typeof m.name === 'string' && m.name ? m.name : (known ? known.name : conn);
  st.members.delete(conn);
  if (st.whisperTo && st.whisperTo.conn === conn) setWhisper(null);
  renderMembers();
  if (announce) system(leftText(name, m.reason), '', { kind: 'left', conn });
}

function leftText(name, reason) {
  return !reason || reason === 'left' ? `${name} left` : `${name} left (${reason})`;
}

// presence is the diff large rooms send instead of joined/left.
function presence(msg) {
  const joined = Array.isArray(msg.joined) ? msg.joined : [];
  const left = Array.isArray(msg.left) ? msg.left : [];
  for (const m of joined) memberJoined(m, joined.length <= PRESENCE_LINES);
  for (const m of left) memberLeft(m, left.length <= PRESENCE_LINES);
  if (joined.length > PRESENCE_LINES) system(`${joined.length} people joined`);
  if (left.length > PRESENCE_LINES) system(`${left.length} people left`);
}

// ---------- messages ----------

// Messages of our room (the client has dropped what it had seen already)
// and whispers to us.
client.on('message', (msg) => {
  const whisper = msg.room == null;
  if (!whisper && !(st.session && msg.room === st.session.room)) return;
  const from = String(msg.from || '');
  const known = st.members.get(from);
  addMessage({
    from,
    name: typeof msg.name === 'string' && msg.name ? msg.name : (known ? known.name : from),
    avatar: typeof msg.avatar === 'string' ? msg.avatar : (known ? known.avatar : ''),
    data: msg.data,
    time: msg.time,
    own: st.myConns.has(from),
    whisper,
  });
});

// addMessage adds one message line: avatar, name, time, text.
function addMessage(m) {
  let when = m.time ? new Date(m.time) : new Date();
  if (isNaN(when)) when = new Date();
  // A day line when the day changes (or when the first line is not today's).
  const day = when.toDateString();
  if (day !== (st.lastDay || new Date().toDateString())) {
    appendLine(el('li', 'day', fmtDay(when)));
    st.last = null;
  }
  st.lastDay = day;
  const cont = st.last !== null && st.last.from === m.from && st.last.whisper === m.whisper &&
    st.last.to === m.to && when - st.last.at < GROUP_MS;

  const li = el('li', 'msg');
  li.classList.toggle('own', m.own);
  li.classList.toggle('whisper', m.whisper);
  li.classList.toggle('cont', cont);
  li.dataset.from = m.from;
  li.append(avatarEl(m.avatar, m.name));

  const bubble = el('div', 'bubble');
  const meta = el('div', 'msg-meta');
  meta.append(el('span', 'msg-name', m.name));
  if (m.whisper) meta.append(el('span', 'msg-tag', m.to ? `whisper to ${m.to}` : 'whisper'));
  const t = el('time', 'msg-time', fmtTime(when));
  t.dateTime = when.toISOString();
  t.title = when.toLocaleString();
  meta.append(t);
  bubble.append(meta);

  const text = el('div', 'msg-text');
  if (typeof m.data === 'string') {
    text.textContent = m.data;
  } else {
    text.classList.add('json');
    text.textContent = JSON.stringify(m.data);
  }
  bubble.append(text);
  li.append(bubble);
  // Screen readers hear one sentence per message.
  li.setAttribute('aria-label', `${m.name}${m.whisper ? ' whispers' : ''} at ${fmtTime(when)}: ${text.textContent}`);
  appendLine(li, m.own);
  st.last = { from: m.from, whisper: m.whisper, to: m.to, at: when };
  if (document.hidden && !m.own) { st.unread++; updateTitle(); }
}

// system adds a line about the room or the connection ("bob left (idle)").
function system(text, tone, data) {
  const li = el('li', 'system' + (tone ? ' ' + tone : ''), text);
  if (data) for (const [k, v] of Object.entries(data)) li.dataset[k] = v;
  appendLine(li, false);
  st.last = null;
  st.lastDay = new Date().toDateString();
}

function appendLine(li, force) {
  const box = ui.messages;
  const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 80;
  box.append(li);
  while (box.childElementCount > MAX_LINES) box.firstElementChild.remove();
  if (atBottom || force) box.scrollTop = box.scrollHeight;
}

// ---------- member list ----------

function renderMembers() {
  const list = [...st.members.values()].sort((a, b) => {
    const am = st.myConns.has(a.conn), bm = st.myConns.has(b.conn);
    if (am !== bm) return am ? -1 : 1;
    return a.name.localeCompare(b.name, undefined, { sensitivity: 'base' }) || a.conn.localeCompare(b.conn);
  });
  const items = list.map((m) => {
    const li = el('li');
    li.dataset.conn = m.conn;
    li.dataset.name = m.name;
    const me = m.conn === client.conn;
    const b = el('button', 'member');
    b.type = 'button';
    b.title = `${m.name} · ${m.conn}${m.node ? ' on ' + m.node : ''}`;
    if (me) {
      b.setAttribute('aria-disabled', 'true');
      b.setAttribute('aria-label', `${m.name} (you)`);
    } else {
      b.setAttribute('aria-label', `Whisper to ${m.name}`);
      b.addEventListener('click', () => { setWhisper(m); closeSidebar(); ui.input.focus(); });
    }
    b.append(avatarEl(m.avatar, m.name, true));
    const text = el('span', 'member-text');
    const name = el('span', 'member-name', m.name);
    if (me) name.append(el('span', 'you-tag', 'you'));
    text.append(name);
    b.append(text);
    li.append(b);
    return li;
  });
  ui.members.replaceChildren(...items);
  const n = list.length;
  ui.memberCount.textContent = String(n);
  ui.membersToggleCount.textContent = String(n);
  ui.roomSub.textContent = `${n} ${n === 1 ? 'member' : 'members'}`;
}

function renderMe() {
  const s = st.session;
  if (!s) return;
  const avatar = avatarEl(s.avatar, s.name);
  avatar.id = 'me-avatar';
  ui.meAvatar.replaceWith(avatar);
  ui.meAvatar = avatar;
  ui.meName.textContent = s.name;
  ui.meConn.textContent = client.conn ? client.conn : 'not connected';
  ui.meConn.title = client.conn ? `connection ${client.conn} on node ${client.node}` : '';
}

// ---------- composer ----------

function updateComposer() {
  const ready = isReady();
  ui.send.disabled = !ready;
  const room = st.session ? st.session.room : '';
  ui.input.placeholder = !st.session ? '' :
    st.whisperTo ? `Whisper to ${st.whisperTo.name}` :
    ready ? `Message #${room}` : 'Waiting for the connection…';
}

function setWhisper(m) {
  st.whisperTo = m ? { conn: m.conn, name: m.name } : null;
  ui.whisperChip.hidden = !m;
  ui.whisperName.textContent = m ? m.name : '';
  updateComposer();
}

// findMember finds a member by connection id, then by name.
function findMember(who) {
  if (st.members.has(who)) return st.members.get(who);
  const lower = who.toLocaleLowerCase();
  for (const m of st.members.values()) if (m.name.toLocaleLowerCase() === lower) return m;
  return null;
}

async function submitComposer() {
  const raw = ui.input.value;
  const text = raw.trim();
  if (!text || !st.session || !isReady()) return;

  let target = st.whisperTo;
  let body = text;
  const cmd = /^\/w(?:hisper)?\s+(\S+)\s+([\s\S]+)$/.exec(text);
  if (cmd) {
    const m = findMember(cmd[1]);
    target = m ? { conn: m.conn, name: m.name } : { conn: cmd[1], name: cmd[1] };
    body = cmd[2].trim();
  } else if (/^\/w(hisper)?(\s|$)/.test(text)) {
    system('Usage: /w <name or connection id> <text>', 'warn');
    return;
  }

  ui.input.value = '';
  autosize();
  const s = st.session;
  try {
    if (target) {
      await client.whisper(target.conn, body);
      addMessage({ from: client.conn, name: s.name, avatar: s.avatar, data: body, own: true, whisper: true, to: target.name });
    } else {
      await client.send(s.room, body, { echo: true });
    }
  } catch (err) {
    const why = err.code === 'not_found' ? `${target ? target.name : 'they'} is not connected` : `${err.code}${err.message && err.message !== err.code ? ': ' + err.message : ''}`;
    system(`Not sent (${why})`, 'error');
    if (!ui.input.value) { ui.input.value = raw; autosize(); }
  }
}

function autosize() {
  ui.input.style.height = 'auto';
  ui.input.style.height = Math.min(ui.input.scrollHeight, 160) + 'px';
}

// ---------- views ----------

function showJoin(error) {
  ui.chatView.hidden = true;
  ui.joinView.hidden = false;
  ui.joinError.textContent = error || '';
  ui.joinError.hidden = !error;
  ui.messages.replaceChildren();
  st.members.clear();
  st.last = null;
  st.lastDay = '';
  setWhisper(null);
  renderMembers();
  st.unread = 0;
  updateTitle();
  ui.joinName.focus();
}

function showChat() {
  const s = st.session;
  ui.joinView.hidden = true;
  ui.chatView.hidden = false;
  ui.roomName.textContent = s.room;
  ui.messages.setAttribute('aria-label', `Messages in #${s.room}`);
  updateTitle();
  renderMe();
  renderMembers();
  updateComposer();
  ui.input.focus();
}

function updateTitle() {
  const room = st.session ? `#${st.session.room} · ` : '';
  document.title = `${st.unread ? `(${st.unread}) ` : ''}${room}tether chat`;
}

function openSidebar() {
  ui.sidebar.classList.add('open');
  ui.scrim.hidden = false;
  ui.membersToggle.setAttribute('aria-expanded', 'true');
}
function closeSidebar() {
  ui.sidebar.classList.remove('open');
  ui.scrim.hidden = true;
  ui.membersToggle.setAttribute('aria-expanded', 'false');
}

// ---------- wiring ----------

function prefill() {
  let saved = {};
  try { saved = JSON.parse(localStorage.getItem('tether.join') || '{}') || {}; } catch { /* none */ }
  const name = query.get('name') || saved.name || '';
  const room = query.get('room') || saved.room || 'lobby';
  const avatar = query.get('avatar') || saved.avatar || '';
  ui.joinName.value = name.slice(0, 32);
  ui.joinRoom.value = room.slice(0, 64);
  for (const r of ui.joinForm.elements.avatar) if (r.value === avatar) r.checked = true;
}

ui.joinForm.addEventListener('submit', (ev) => {
  ev.preventDefault();
  const name = ui.joinName.value.trim();
  const room = ui.joinRoom.value.trim().replace(/^#/, '');
  const picked = ui.joinForm.querySelector('input[name="avatar"]:checked');
  const avatar = picked ? picked.value : '🦊';
  const token = ui.joinToken.value.trim();
  if (token) st.token = token;
  if (st.auth === 'token' && !st.token) { ui.joinError.textContent = 'Please paste your token.'; ui.joinError.hidden = false; ui.joinToken.focus(); return; }
  if (!name && !st.auth) { ui.joinError.textContent = 'Please enter your name.'; ui.joinError.hidden = false; ui.joinName.focus(); return; }
  if (!room) { ui.joinError.textContent = 'Please enter a room.'; ui.joinError.hidden = false; ui.joinRoom.focus(); return; }
  try { localStorage.setItem('tether.join', JSON.stringify({ name, room, avatar })); } catch { /* private mode */ }
  ui.joinError.hidden = true;
  st.session = { room, name, avatar };
  if (client.user) Object.assign(st.session, { name: client.user.name, avatar: client.user.avatar });
  showChat();
  // A refused token closes the connection: the closed state says why.
  if (token) client.auth(token).catch(() => {});
  joinRoom(); // now, or once the client is connected
  if (client.state === 'closed') client.connect(); // a new attempt, kicked or refused before
});

ui.composer.addEventListener('submit', (ev) => { ev.preventDefault(); submitComposer(); });
ui.input.addEventListener('keydown', (ev) => {
  if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing) {
    ev.preventDefault();
    submitComposer();
  } else if (ev.key === 'Escape' && st.whisperTo) {
    setWhisper(null);
  }
});
ui.input.addEventListener('input', autosize);
ui.whisperCancel.addEventListener('click', () => { setWhisper(null); ui.input.focus(); });
ui.leave.addEventListener('click', () => endSession(''));
ui.reconnect.addEventListener('click', () => client.connect());
ui.membersToggle.addEventListener('click', () => (ui.sidebar.classList.contains('open') ? closeSidebar() : openSidebar()));
ui.scrim.addEventListener('click', closeSidebar);
$('sidebar-close').addEventListener('click', () => { closeSidebar(); ui.membersToggle.focus(); });
document.addEventListener('keydown', (ev) => { if (ev.key === 'Escape') closeSidebar(); });

document.addEventListener('visibilitychange', () => {
  if (!document.hidden && st.unread) { st.unread = 0; updateTitle(); }
});
// Back online: no need to wait for the client's next attempt.
window.addEventListener('online', () => {
  if (client.state === 'reconnecting') client.connect();
});

prefill();
client.connect();

// tether chat: the page of the chat application (DESIGN.md section 5).
// No dependencies. Every piece of user text reaches the DOM through
// textContent or attributes, never through innerHTML.
'use strict';

(() => {
  const BACKOFF_MIN_MS = 500;
  const BACKOFF_MAX_MS = 15000;
  const STABLE_MS = 10000; // a connection that lived this long resets the backoff
  const REQUEST_TIMEOUT_MS = 10000;
  const MAX_LINES = 500; // message list entries kept in the DOM
  const GROUP_MS = 3 * 60 * 1000; // consecutive messages of one sender merge
  const PRESENCE_LINES = 3; // above this many names a presence diff is summarised

  // Close codes of the server (README, "Close reasons") and of the browser.
  const CLOSE_TEXT = {
    1000: 'closed', 1001: 'server_shutdown', 1002: 'bad_frame', 1005: 'closed',
    1006: 'connection lost', 1007: 'bad_frame', 1009: 'frame_too_large',
    1011: 'server error', 1015: 'TLS error',
    4000: 'idle', 4001: 'no_pong', 4002: 'slow_consumer', 4003: 'write_timeout', 4004: 'kicked',
    4005: 'memory_limit', 4006: 'unauthorized', 4007: 'token_expired', 4008: 'rate_limited',
  };
  const CODE_KICKED = 4004;
  const CODE_UNAUTHORIZED = 4006;
  const CODE_TOKEN_EXPIRED = 4007;
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
    ws: null,
    conn: '', // our connection id, set by welcome
    node: '',
    myConns: new Set(), // every id we had: our old messages stay "own"
    pingEveryMs: 20000,
    lastSent: 0,
    lastRecv: 0,
    tick: 0,
    nextId: 1,
    pending: new Map(), // request id → {resolve, reject, timer}
    attempt: 0,
    retryTimer: 0,
    retryAt: 0,
    countdown: 0,
    openedAt: 0,
    kicked: false, // kicked, or refused: no reconnect until the user asks
    auth: '', // the listener authenticates its clients: 'token' or 'proxy' (welcome)
    token: '', // ours: from ?token= or the join form
    authed: false, // auth was answered ok on this connection
    user: null, // {name, avatar} the token (or the backend) gives us
    session: null, // {room, name, avatar} while the user wants to be in a room
    joined: false, // the server has us in session.room on this connection
    everJoined: false, // session has been joined once (later joins are rejoins)
    joining: false, // a join of session.room is out: the messages it recovers come before its ok
    recovered: 0, // messages that came while joining
    position: null, // {offset, epoch} of the room's last message here, in a room with history
    members: new Map(), // conn → {conn, name, avatar, node}
    whisperTo: null, // {conn, name}
    last: null, // {from, whisper, to, at} of the last message line, for grouping
    lastDay: '', // the day of the last line
    unread: 0, // messages that arrived while the page was hidden
  };

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

  // ---------- WebSocket ----------

  function wsURL() {
    return (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/ws';
  }

  function connect() {
    clearRetry();
    if (st.ws) return;
    if (navigator.onLine === false) {
      setState('offline', 'offline', 'the browser is offline');
      return;
    }
    setState('connecting', st.attempt > 0 ? 'reconnecting' : 'connecting');
    let ws;
    try {
      ws = new WebSocket(wsURL());
    } catch (err) {
      scheduleReconnect(String(err && err.message || err));
      return;
    }
    st.ws = ws;
    ws.onopen = () => {
      if (ws !== st.ws) return;
      st.openedAt = Date.now();
      st.lastRecv = st.lastSent = Date.now();
    };
    ws.onmessage = (ev) => {
      if (ws !== st.ws) return;
      st.lastRecv = Date.now();
      let msg;
      try { msg = JSON.parse(ev.data); } catch { return; }
      if (msg && typeof msg === 'object') handle(msg);
    };
    ws.onclose = (ev) => {
      if (ws !== st.ws) return;
      dropped(ev.code, ev.reason);
    };
    // onerror is always followed by onclose.
  }

  function isOnline() {
    return st.ws !== null && st.ws.readyState === WebSocket.OPEN && st.conn !== '';
  }

  function send(obj) {
    if (!st.ws || st.ws.readyState !== WebSocket.OPEN) return false;
    st.ws.send(JSON.stringify(obj));
    st.lastSent = Date.now();
    return true;
  }

  class RequestError extends Error {
    constructor(code, message) { super(message || code); this.code = code; }
  }

  // request sends obj with a fresh id and resolves with the reply that
  // carries it (ok, members, pong), or rejects with its error.
  function request(obj) {
    return new Promise((resolve, reject) => {
      if (!isOnline()) { reject(new RequestError('offline', 'not connected')); return; }
      const id = st.nextId++;
      const timer = setTimeout(() => {
        st.pending.delete(id);
        reject(new RequestError('timeout', 'no reply from the server'));
      }, REQUEST_TIMEOUT_MS);
      st.pending.set(id, { resolve, reject, timer });
      send({ ...obj, id });
    });
  }

  function failPending(code, message) {
    for (const [id, p] of st.pending) {
      clearTimeout(p.timer);
      p.reject(new RequestError(code, message));
      st.pending.delete(id);
    }
  }

  // tick runs every second while connected: our own heartbeat, and the
  // detection of a server that went silent (a half-open connection).
  function startTick() {
    stopTick();
    st.tick = setInterval(() => {
      if (!isOnline()) return;
      const now = Date.now();
      if (now - st.lastRecv > st.pingEveryMs * 2 + 5000) {
        const ws = st.ws;
        dropped(0, 'no answer from the server');
        try { ws.close(); } catch { /* already closing */ }
        return;
      }
      if (now - st.lastSent >= st.pingEveryMs) send({ op: 'ping' });
    }, 1000);
  }
  function stopTick() {
    if (st.tick) clearInterval(st.tick);
    st.tick = 0;
  }

  function dropped(code, reason) {
    const wasOnline = st.conn !== '';
    const lived = st.openedAt ? Date.now() - st.openedAt : 0;
    st.ws = null;
    st.conn = '';
    st.openedAt = 0;
    st.joined = false;
    stopTick();
    failPending('disconnected', 'connection lost');
    if (lived >= STABLE_MS) st.attempt = 0;
    const why = reason || CLOSE_TEXT[code] || (code ? 'code ' + code : 'connection lost');

    if (code === CODE_UNAUTHORIZED || code === CODE_TOKEN_EXPIRED) {
      st.kicked = true;
      setState('unauthorized', why, why);
      if (st.session) {
        st.session = null;
        showJoin(code === CODE_TOKEN_EXPIRED ? 'Your token expired: paste a new one to come back.' : 'The server refused the token: paste another.');
      }
      return;
    }
    if (code === CODE_KICKED) {
      st.kicked = true;
      setState('kicked', 'kicked', why);
      if (st.session) system('You were kicked from the server. Press Reconnect to come back.', 'error');
      return;
    }
    if (wasOnline && st.session) system(`Disconnected (${why}), reconnecting…`, 'warn');
    scheduleReconnect(why);
  }

  function clearRetry() {
    if (st.retryTimer) clearTimeout(st.retryTimer);
    if (st.countdown) clearInterval(st.countdown);
    st.retryTimer = st.countdown = 0;
  }

  // Exponential backoff: 0.5s, 1s, 2s, 4s … at most 15s, each ±20%.
  function scheduleReconnect(why) {
    clearRetry();
    if (navigator.onLine === false) {
      setState('offline', 'offline', why);
      return;
    }
    const base = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** Math.min(st.attempt, 10));
    const delay = Math.min(BACKOFF_MAX_MS, Math.round(base * (0.8 + Math.random() * 0.4)));
    st.attempt++;
    st.retryAt = Date.now() + delay;
    const show = () => {
      const s = Math.max(1, Math.ceil((st.retryAt - Date.now()) / 1000));
      setState('reconnecting', `reconnecting in ${s}s`, why);
    };
    show();
    st.countdown = setInterval(show, 250);
    st.retryTimer = setTimeout(connect, delay);
  }

  function reconnectNow() {
    st.kicked = false;
    st.attempt = 0;
    connect();
  }

  // ---------- server messages ----------

  function handle(msg) {
    if (msg.id != null && st.pending.has(msg.id)) {
      const p = st.pending.get(msg.id);
      st.pending.delete(msg.id);
      clearTimeout(p.timer);
      if (msg.op === 'error') p.reject(new RequestError(msg.code || 'error', msg.message || msg.code));
      else p.resolve(msg);
      return;
    }
    switch (msg.op) {
      case 'welcome': onWelcome(msg); break;
      case 'ping': send(msg.id != null ? { op: 'pong', id: msg.id } : { op: 'pong' }); break;
      case 'pong': case 'ok': break;
      case 'error':
        system(`Server error: ${msg.code || 'error'}${msg.message ? ' (' + msg.message + ')' : ''}`, 'error');
        break;
      case 'joined': if (inRoom(msg.room)) memberJoined(msg, true); break;
      case 'left': if (inRoom(msg.room)) memberLeft(msg, true); break;
      case 'presence': if (inRoom(msg.room)) presence(msg); break;
      case 'message': onMessage(msg); break;
      case 'gap': if (inRoom(msg.room)) onGap(); break;
      default: break; // fields and ops may be added: ignore what we do not know
    }
  }

  function inRoom(room) {
    return st.session !== null && st.joined && room === st.session.room;
  }

  function onWelcome(msg) {
    st.conn = String(msg.conn || '');
    st.node = String(msg.node || '');
    if (st.conn) st.myConns.add(st.conn);
    const hb = msg.heartbeat || {};
    const idle = Number(hb.idle_timeout_ms) || 0;
    st.pingEveryMs = idle > 0 ? Math.max(1000, Math.floor(idle / 3)) : 20000;
    st.kicked = false;
    st.auth = String(msg.auth || '');
    st.authed = false;
    ui.tokenField.hidden = st.auth !== 'token';
    clearRetry();
    startTick();
    if (st.auth) authenticate();
    else ready();
  }

  function ready() {
    setState('online', 'online', `connection ${st.conn} on node ${st.node}`);
    renderMe();
    if (st.session) joinRoom();
  }

  // authenticate sends auth on a listener that wants it: with our token,
  // or, on a proxy listener, with none (the backend may know us by a
  // cookie). The token's name is ours from then on: the server shows it
  // whatever the join says.
  async function authenticate() {
    if (st.auth === 'token' && !st.token) {
      setState('unauthorized', 'token needed', 'this server needs a token');
      if (st.session) { st.session = null; showJoin('This server needs a token: paste yours below.'); }
      return;
    }
    setState('connecting', 'signing in');
    let ok;
    try {
      ok = await request({ op: 'auth', token: st.token });
    } catch (err) {
      if (err.code === 'disconnected' || err.code === 'offline') return;
      st.kicked = true; // the server closes us: come back with another token
      st.session = null;
      showJoin(`Token refused: ${err.message}`);
      setState('unauthorized', 'token refused', err.message);
      return;
    }
    st.authed = true;
    st.user = { name: String(ok.name || ok.user || ''), avatar: String(ok.avatar || '') };
    if (st.session) Object.assign(st.session, st.user);
    ready();
  }

  // ---------- rooms ----------

  // joinRoom joins session.room: the first time, after a reconnect, or
  // again after a gap. In a room with history a rejoin sends since, the
  // position of the last message seen, and the server replays what came
  // after it before its ok, which says whether that was everything.
  async function joinRoom(afterGap) {
    const s = st.session;
    const rejoin = st.everJoined;
    const req = { op: 'join', room: s.room, name: s.name, avatar: s.avatar };
    if (rejoin && st.position) req.since = st.position;
    st.joining = true;
    st.recovered = 0;
    let ok;
    try {
      ok = await request(req);
    } catch (err) {
      st.joining = false;
      if (s !== st.session) return;
      if (err.code === 'offline' || err.code === 'disconnected') return; // retried after the reconnect
      if (!rejoin) {
        showJoin(`Could not join #${s.room}: ${err.code}${err.message && err.message !== err.code ? ' (' + err.message + ')' : ''}`);
        st.session = null;
      } else {
        system(`Could not rejoin #${s.room}: ${err.message}`, 'error');
      }
      return;
    }
    st.joining = false;
    if (s !== st.session) return; // the user left meanwhile
    st.joined = true;
    st.everJoined = true;
    if (ok.epoch && !st.position) st.position = { offset: ok.offset || 0, epoch: ok.epoch };
    updateComposer();
    if (!rejoin) system(`You joined #${s.room}`);
    else if (ok.recovered === true) {
      const n = st.recovered;
      const what = n === 0 ? 'nothing was missed' : `recovered ${n} missed message${n === 1 ? '' : 's'}`;
      system(afterGap ? `Back in order: ${what}` : `Reconnected, back in #${s.room}: ${what}`, 'good');
    } else {
      const why = RECOVERY_TEXT[ok.reason] || 'this room keeps no history';
      system(`${afterGap ? 'Messages were lost' : `Reconnected, back in #${s.room}`}: messages sent meanwhile could not be recovered (${why})`, 'warn');
    }
    if (afterGap) return;
    // Ourselves at once; the member list proper follows.
    st.members.set(st.conn, { conn: st.conn, name: s.name, avatar: s.avatar, node: st.node });
    renderMembers();
    await refreshMembers();
  }

  async function refreshMembers() {
    const s = st.session;
    let reply;
    try {
      reply = await request({ op: 'members', room: s.room });
    } catch (err) {
      if (s === st.session && err.code !== 'disconnected' && err.code !== 'offline') {
        system(`Could not list members: ${err.message}`, 'error');
      }
      return;
    }
    if (s !== st.session) return;
    st.members = new Map();
    for (const m of Array.isArray(reply.members) ? reply.members : []) {
      if (m && m.conn != null) st.members.set(String(m.conn), normMember(m));
    }
    renderMembers();
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

  // onGap: the server lost messages of the room on their way here. In a
  // room with history, joining again with since recovers them.
  function onGap() {
    if (!st.position) {
      system('Some messages were lost on the way (this room keeps no history)', 'warn');
      return;
    }
    joinRoom(true);
  }

  async function leaveRoom() {
    const s = st.session;
    if (!s) return;
    st.session = null;
    const wasJoined = st.joined;
    st.joined = false;
    st.everJoined = false;
    st.position = null;
    if (wasJoined && isOnline()) {
      try { await request({ op: 'leave', room: s.room }); } catch { /* leaving anyway */ }
    }
    showJoin('');
  }

  // ---------- messages ----------

  function onMessage(msg) {
    const whisper = msg.room == null;
    if (!whisper && !inRoom(msg.room) && !(st.joining && st.session && msg.room === st.session.room)) return;
    if (!whisper && typeof msg.epoch === 'string' && msg.epoch) {
      const p = st.position;
      if (p && p.epoch === msg.epoch && msg.offset <= p.offset) return; // had it already
      st.position = { offset: msg.offset, epoch: msg.epoch };
      if (st.joining) st.recovered++;
    }
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
  }

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
      const me = m.conn === st.conn;
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
    ui.meConn.textContent = st.conn ? st.conn : 'not connected';
    ui.meConn.title = st.conn ? `connection ${st.conn} on node ${st.node}` : '';
  }

  // ---------- composer ----------

  function updateComposer() {
    const ready = isOnline() && st.joined;
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
    if (!text || !st.session) return;
    if (!(isOnline() && st.joined)) return;

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
        await request({ op: 'whisper', to: target.conn, data: body });
        addMessage({ from: st.conn, name: s.name, avatar: s.avatar, data: body, own: true, whisper: true, to: target.name });
      } else {
        await request({ op: 'send', room: s.room, data: body, echo: true });
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
    const q = new URLSearchParams(location.search);
    let saved = {};
    try { saved = JSON.parse(localStorage.getItem('tether.join') || '{}') || {}; } catch { /* none */ }
    const name = q.get('name') || saved.name || '';
    const room = q.get('room') || saved.room || 'lobby';
    const avatar = q.get('avatar') || saved.avatar || '';
    st.token = q.get('token') || ''; // never stored: a token is a password
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
    st.joined = false;
    st.everJoined = false;
    st.position = null;
    if (st.authed && st.user) Object.assign(st.session, st.user);
    showChat();
    if (isOnline() && st.auth && !st.authed) authenticate();
    else if (isOnline() && (st.authed || !st.auth)) joinRoom();
    else if (!st.ws) reconnectNow(); // a new attempt, kicked or refused before
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
  ui.leave.addEventListener('click', leaveRoom);
  ui.reconnect.addEventListener('click', reconnectNow);
  ui.membersToggle.addEventListener('click', () => (ui.sidebar.classList.contains('open') ? closeSidebar() : openSidebar()));
  ui.scrim.addEventListener('click', closeSidebar);
  $('sidebar-close').addEventListener('click', () => { closeSidebar(); ui.membersToggle.focus(); });
  document.addEventListener('keydown', (ev) => { if (ev.key === 'Escape') closeSidebar(); });

  document.addEventListener('visibilitychange', () => {
    if (!document.hidden && st.unread) { st.unread = 0; updateTitle(); }
  });
  window.addEventListener('offline', () => {
    if (!st.ws) { clearRetry(); setState('offline', 'offline', 'the browser is offline'); }
  });
  window.addEventListener('online', () => {
    if (!st.ws && !st.kicked) reconnectNow();
  });

  prefill();
  connect();
})();

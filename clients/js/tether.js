// tether.js: the JavaScript client of tether's chat protocol (see
// README.md beside this file). One ES module without dependencies, for
// browsers and for Node.js versions that have a global WebSocket (22, or
// 20 with --experimental-websocket); every WebSocket listener of a tether
// node serves this file at /tether.js.
//
// A TetherClient keeps one connection alive: it sends its own heartbeat
// and notices a server gone silent, reconnects with exponential backoff
// and jitter, authenticates again and joins its rooms again, resuming the
// rooms with history from the last message it saw. Requests are promises;
// what the server says unasked comes as events.

// Close codes of the server (README, "Close reasons") and of WebSocket.
const CLOSE_REASONS = {
  1000: 'closed', 1001: 'server_shutdown', 1002: 'bad_frame', 1005: 'closed',
  1006: 'connection lost', 1007: 'bad_frame', 1009: 'frame_too_large',
  1011: 'server error', 1015: 'TLS error',
  4000: 'idle', 4001: 'no_pong', 4002: 'slow_consumer', 4003: 'write_timeout', 4004: 'kicked',
  4005: 'memory_limit', 4006: 'unauthorized', 4007: 'token_expired', 4008: 'rate_limited',
};

// After these the server meant it (kicked, unauthorized, token_expired):
// reconnecting by itself would only be refused again, so the client
// stops until the application asks (connect, auth).
const FINAL_CODES = new Set([4004, 4006, 4007]);

// TetherError is how every request fails: code is the server's error code
// (bad_request, not_in_room, forbidden, unauthorized, ...) or the client's
// own: timeout (no answer within requestTimeout), disconnected (the
// connection was not there, or went away before the answer), closed (the
// client stopped), left (leave came before the join's answer), superseded
// (a newer join of the same room).
export class TetherError extends Error {
  constructor(code, message) {
    super(message || code);
    this.name = 'TetherError';
    this.code = code;
  }
}

export class TetherClient {
  // url is the listener's WebSocket URL (ws://host:9502/ws). A token in it
  // (?token=) authenticates every connection in the upgrade; otherwise a
  // token in options is sent as the auth request after the welcome.
  constructor(url, options = {}) {
    const o = {
      token: '',
      requestTimeout: 10000, // for an answer, and for the welcome after connecting
      backoffMin: 500, // the first retry waits this long, each next one twice as long,
      backoffMax: 15000, // at most this, each ±20% so that clients spread out
      stableAfter: 10000, // a connection that lived this long starts the backoff over
      reconnect: true,
      WebSocket: globalThis.WebSocket,
      ...options,
    };
    if (typeof o.WebSocket !== 'function') {
      throw new TypeError('no WebSocket: pass options.WebSocket (Node.js before 22 needs --experimental-websocket)');
    }
    this._url = new URL(url);
    this._tokenInURL = this._url.searchParams.has('token');
    this._token = this._tokenInURL ? this._url.searchParams.get('token') : o.token;
    this._o = o;
    this._listeners = new Map(); // event type → Set of functions
    this._state = 'idle';
    this._ws = null;
    this._welcome = null;
    this.user = null; // the identity of the last successful auth or refresh
    this._nextId = 1;
    this._pending = new Map(); // request id → {resolve, reject, timer}
    this._authWaiters = []; // auth() calls waiting for the next authentication
    this._refusal = null; // the auth error of this connection, for the closed state
    this._awaitingURLAuth = false; // the server's answer to ?token= is still to come
    this._rooms = new Map(); // room → {name, avatar, position, joined, joining, replayed, first}
    this._attempt = 0;
    this._openedAt = 0;
    this._lastSent = 0;
    this._lastRecv = 0;
    this._pingEvery = 20000;
    this._retryTimer = 0;
    this._welcomeTimer = 0;
    this._beatTimer = 0;
  }

  // state is idle (before connect), connecting (until welcomed and
  // authenticated), unauthenticated (the listener wants a token and the
  // client has none: call auth), connected, reconnecting (waiting to
  // retry), or closed (stopped: close(), a final close code, or
  // reconnect: false).
  get state() { return this._state; }
  get conn() { return this._welcome ? String(this._welcome.conn) : ''; }
  get node() { return this._welcome ? String(this._welcome.node) : ''; }
  // welcome is this connection's welcome: conn, node, heartbeat, auth.
  get welcome() { return this._welcome; }
  get rooms() { return [...this._rooms.keys()]; }

  // position is the room's place in its history ({offset, epoch} of the
  // last message seen, or of the join), or null: the room keeps none, or
  // it is not joined.
  position(room) {
    const r = this._rooms.get(room);
    return r && r.position ? { ...r.position } : null;
  }

  // on calls fn with each event of type; it returns the function that
  // stops that. Types: state, message, joined, left, presence, gap,
  // rejoin, error.
  on(type, fn) {
    let set = this._listeners.get(type);
    if (!set) this._listeners.set(type, (set = new Set()));
    set.add(fn);
    return () => set.delete(fn);
  }

  // connect connects now: the first time, or after the client stopped,
  // or, while it waits to reconnect, without waiting any longer.
  connect() {
    if (this._ws) return;
    this._attempt = 0;
    this._open();
  }

  // close closes the connection and stops reconnecting. The rooms stay
  // remembered: connect() joins them again.
  close() {
    if (this._state === 'closed') return;
    const ws = this._ws;
    this._detach();
    if (ws) ws.close(1000);
    this._stop(1000, 'client_closed', null);
  }

  // auth sets the token and authenticates with it: at once when the
  // listener is waiting for one, otherwise on the next connection, which
  // it opens now if there is none (stopped, or waiting to retry). It
  // resolves with the server's ok (user, name, avatar, expires). Every
  // later connection uses the token. On a connected client it is the
  // auth request as it is, which an authenticated connection refuses
  // (bad_request: refresh is for that).
  auth(token) {
    this._token = String(token);
    if (this._tokenInURL) this._url.searchParams.set('token', this._token);
    if (this._state === 'connected') return this._call({ op: 'auth', token: this._token });
    const p = new Promise((resolve, reject) => this._authWaiters.push({ resolve, reject }));
    if (this._state === 'unauthenticated') this._authenticate();
    else if (!this._ws) this.connect();
    return p;
  }

  // refresh extends the live connection with a new token of the same
  // user; later connections authenticate with it.
  async refresh(token) {
    const ok = await this.request({ op: 'refresh', token: String(token) });
    this._token = String(token);
    if (this._tokenInURL) this._url.searchParams.set('token', this._token);
    this.user = identity(ok);
    return ok;
  }

  // join joins room now, or as soon as the client is connected, and
  // resolves with {room, offset, epoch, recovered, reason, replayed} once
  // the server answers ok. since ({offset, epoch}) resumes a room with
  // history: the server first replays (as message events) the messages
  // after it. Until leave(), the client joins the room again after every
  // reconnect, with since, and says how that went in a rejoin event. An
  // error answer (forbidden, ...) forgets the room.
  join(room, { name, avatar, since } = {}) {
    const old = this._rooms.get(room);
    if (old && old.first) old.first.reject(new TetherError('superseded', `joined ${room} again`));
    const r = {
      name, avatar, position: since || (old && old.position) || null,
      joined: false, joining: false, replayed: 0, first: null,
    };
    const p = new Promise((resolve, reject) => { r.first = { resolve, reject }; });
    this._rooms.set(room, r);
    if (this._state === 'connected') this._join(room, r);
    return p;
  }

  // leave leaves room and forgets it.
  leave(room) {
    const r = this._rooms.get(room);
    this._rooms.delete(room);
    if (r && r.first) r.first.reject(new TetherError('left', `left ${room} before its join was answered`));
    if (this._state !== 'connected') return Promise.resolve(null); // the server has forgotten us already
    return this._call({ op: 'leave', room });
  }

  // send sends data (any JSON value) to the room's other members, and
  // with echo to this client too.
  send(room, data, { echo } = {}) {
    return this.request({ op: 'send', room, data, echo: echo || undefined });
  }

  whisper(to, data) { return this.request({ op: 'whisper', to, data }); }

  // members resolves with the room's members on every node:
  // [{conn, name, avatar, node}].
  async members(room) {
    const reply = await this.request({ op: 'members', room });
    return Array.isArray(reply.members) ? reply.members : [];
  }

  // history resolves with {messages, offset, epoch}: the room's last
  // limit messages (all it keeps without a limit), oldest first.
  history(room, { limit } = {}) { return this.request({ op: 'history', room, limit }); }

  ping() { return this.request({ op: 'ping' }); }

  // request sends any request (a fresh id is added) on a connected
  // client and resolves with its answer, or rejects with a TetherError.
  request(obj) {
    if (this._state !== 'connected') return Promise.reject(new TetherError('disconnected', 'not connected'));
    return this._call(obj);
  }

  // ---------- the connection ----------

  _open() {
    clearTimeout(this._retryTimer);
    const ws = new this._o.WebSocket(this._url.href);
    this._ws = ws;
    this._refusal = null;
    ws.onopen = () => {
      if (ws !== this._ws) return;
      this._openedAt = this._lastSent = this._lastRecv = Date.now();
    };
    ws.onmessage = (ev) => { if (ws === this._ws) this._receive(ev.data); };
    ws.onclose = (ev) => { if (ws === this._ws) this._dropped(ev.code, ev.reason); };
    // Browsers follow an error with a close (1006), but Node 20's
    // WebSocket leaves a failed connect at that: the error is the end.
    ws.onerror = () => { if (ws === this._ws) this._abandon(1006, ''); };
    this._welcomeTimer = setTimeout(() => this._abandon(0, 'no welcome from the server'), this._o.requestTimeout);
    this._setState('connecting', { attempt: this._attempt });
  }

  // _abandon closes a connection that failed or that the server stopped
  // talking on, and treats it as lost.
  _abandon(code, reason) {
    const ws = this._ws;
    this._ws = null; // its close event, whenever it comes, is not news
    ws.close();
    this._dropped(code, reason);
  }

  // _detach forgets the connection: its timers, its requests (rejected
  // disconnected) and which rooms it had joined.
  _detach() {
    this._ws = null;
    this._welcome = null;
    this._awaitingURLAuth = false;
    clearTimeout(this._retryTimer);
    clearTimeout(this._welcomeTimer);
    clearTimeout(this._beatTimer);
    for (const p of this._pending.values()) {
      clearTimeout(p.timer);
      p.reject(new TetherError('disconnected', 'the connection was lost before the answer'));
    }
    this._pending.clear();
    for (const r of this._rooms.values()) r.joined = r.joining = false;
  }

  _dropped(code, reason) {
    const lived = this._openedAt ? Date.now() - this._openedAt : 0;
    this._openedAt = 0;
    this._detach();
    const why = reason || CLOSE_REASONS[code] || (code ? `code ${code}` : 'connection lost');
    if (FINAL_CODES.has(code) || !this._o.reconnect) {
      this._stop(code, why, this._refusal);
      return;
    }
    if (lived >= this._o.stableAfter) this._attempt = 0;
    const base = Math.min(this._o.backoffMax, this._o.backoffMin * 2 ** Math.min(this._attempt, 20));
    const delay = Math.min(this._o.backoffMax, Math.round(base * (0.8 + Math.random() * 0.4)));
    this._attempt++;
    this._retryTimer = setTimeout(() => this._open(), delay);
    this._setState('reconnecting', { code, reason: why, delay, attempt: this._attempt });
  }

  // _stop ends the client's attempts; what waits for a connection fails
  // with closed, and rooms never joined are forgotten.
  _stop(code, reason, error) {
    const closed = () => new TetherError('closed', `connection closed: ${reason}`);
    for (const w of this._authWaiters.splice(0)) w.reject(closed());
    for (const [room, r] of this._rooms) {
      if (!r.first) continue;
      this._rooms.delete(room);
      r.first.reject(closed());
    }
    this._setState('closed', { code, reason, error });
  }

  _send(obj) {
    if (!this._ws || this._ws.readyState !== 1) return false; // 1: OPEN
    this._ws.send(JSON.stringify(obj));
    this._lastSent = Date.now();
    return true;
  }

  // _call sends obj with a fresh id; the answer with that id settles it.
  _call(obj) {
    return new Promise((resolve, reject) => {
      const id = this._nextId++;
      if (!this._send({ ...obj, id })) {
        reject(new TetherError('disconnected', 'not connected'));
        return;
      }
      const timer = setTimeout(() => {
        this._pending.delete(id);
        reject(new TetherError('timeout', `no answer to ${obj.op} within ${this._o.requestTimeout}ms`));
      }, this._o.requestTimeout);
      this._pending.set(id, { resolve, reject, timer });
    });
  }

  // _heartbeat runs while welcomed: it pings when the client has sent
  // nothing for a third of the server's idle timeout, and drops a
  // connection silent for two pings and then some (the server answers
  // every ping: silence is a half-open connection, or a stuck server).
  _heartbeat() {
    const now = Date.now();
    const deadAfter = this._pingEvery * 2 + 5000;
    if (now - this._lastRecv >= deadAfter) {
      this._abandon(0, 'no answer from the server');
      return;
    }
    if (now - this._lastSent >= this._pingEvery) this._send({ op: 'ping' });
    const next = Math.min(this._lastSent + this._pingEvery, this._lastRecv + deadAfter);
    this._beatTimer = setTimeout(() => this._heartbeat(), Math.max(0, next - Date.now()));
  }

  _receive(data) {
    this._lastRecv = Date.now();
    let msg;
    try { msg = JSON.parse(data); } catch { return; } // not the chat protocol (a relay's binary push): not ours
    if (!msg || typeof msg !== 'object') return;
    const p = msg.id != null ? this._pending.get(msg.id) : undefined;
    if (p) {
      this._pending.delete(msg.id);
      clearTimeout(p.timer);
      if (msg.op === 'error') p.reject(new TetherError(msg.code || 'error', msg.message));
      else p.resolve(msg);
      return;
    }
    switch (msg.op) {
      case 'welcome': this._welcomed(msg); break;
      case 'ping': this._send(msg.id != null ? { op: 'pong', id: msg.id } : { op: 'pong' }); break;
      case 'ok':
      case 'error':
        if (msg.id == null && this._awaitingURLAuth) { // the answer to ?token=
          this._awaitingURLAuth = false;
          if (msg.op === 'ok') this._authed(msg);
          else this._refused(new TetherError(msg.code || 'error', msg.message));
        } else if (msg.op === 'error') {
          this._emit('error', new TetherError(msg.code || 'error', msg.message));
        }
        break;
      case 'message': this._message(msg); break;
      case 'gap': this._gap(msg); break;
      case 'joined': case 'left': case 'presence': this._emit(msg.op, msg); break;
      default: break; // pong, and ops added later
    }
  }

  _welcomed(msg) {
    clearTimeout(this._welcomeTimer);
    this._welcome = msg;
    const idle = Number(msg.heartbeat && msg.heartbeat.idle_timeout_ms) || 0;
    this._pingEvery = idle > 0 ? Math.max(1000, Math.floor(idle / 3)) : 20000;
    this._heartbeat();
    if (msg.auth) this._authenticate();
    else this._ready();
  }

  // _authenticate answers a listener that wants authentication: with the
  // token, or, on a proxy listener, even without one (the backend may
  // know the client by a cookie).
  _authenticate() {
    if (this._tokenInURL) {
      this._awaitingURLAuth = true;
      return;
    }
    if (!this._token && this._welcome.auth === 'token') {
      this._setState('unauthenticated', { auth: this._welcome.auth });
      return;
    }
    this._call({ op: 'auth', token: this._token }).then((ok) => this._authed(ok), (err) => this._refused(err));
  }

  _authed(ok) {
    this.user = identity(ok);
    for (const w of this._authWaiters.splice(0)) w.resolve(ok);
    this._ready();
  }

  // _refused: the server refused the token and closes the connection
  // (unauthorized), which stops the client with this error.
  _refused(err) {
    if (err.code === 'disconnected') return; // lost before the answer: the next connection asks again
    this._refusal = err;
    for (const w of this._authWaiters.splice(0)) w.reject(err);
  }

  // _ready joins the rooms before it says connected, so that a send made
  // on that news reaches a room after its join.
  _ready() {
    for (const [room, r] of this._rooms) this._join(room, r, 'reconnect');
    this._setState('connected', { conn: this.conn, node: this.node });
  }

  // _join sends the join of a remembered room: with since where the
  // client knows the room's position, so that the server replays what
  // came after it. cause (reconnect, gap) is what a rejoin event says.
  _join(room, r, cause) {
    const req = { op: 'join', room, name: r.name, avatar: r.avatar };
    if (r.position) req.since = r.position;
    r.joining = true;
    r.replayed = 0;
    this._call(req).then((ok) => {
      if (this._rooms.get(room) !== r) return; // left, or joined anew, meanwhile
      r.joining = false;
      r.joined = true;
      r.position = ok.epoch ? { offset: ok.offset || 0, epoch: ok.epoch } : null; // no epoch: no history
      const res = {
        room, offset: ok.offset, epoch: ok.epoch,
        recovered: ok.recovered === true, reason: ok.reason, replayed: r.replayed,
      };
      if (r.first) {
        r.first.resolve(res);
        r.first = null;
      } else {
        this._emit('rejoin', { ...res, cause });
      }
    }, (err) => {
      if (this._rooms.get(room) !== r) return;
      r.joining = false;
      if (err.code === 'disconnected') return; // joined again on the next connection
      this._rooms.delete(room);
      if (r.first) r.first.reject(err);
      else this._emit('rejoin', { room, cause, error: err });
    });
  }

  // _message tracks the position of rooms with history and drops what
  // was seen already (a replay can overlap what arrived live).
  _message(msg) {
    const r = msg.room != null ? this._rooms.get(msg.room) : undefined;
    if (r && typeof msg.epoch === 'string' && msg.epoch) {
      const p = r.position;
      if (p && p.epoch === msg.epoch && msg.offset <= p.offset) return;
      r.position = { offset: msg.offset, epoch: msg.epoch };
      if (r.joining) r.replayed++;
    }
    this._emit('message', msg);
  }

  // _gap: the server lost messages of the room on their way here. Where
  // the room has history, joining again with since gets them back.
  _gap(msg) {
    this._emit('gap', msg);
    const r = this._rooms.get(msg.room);
    if (r && r.joined && !r.joining && r.position) this._join(msg.room, r, 'gap');
  }

  _setState(state, detail) {
    const previous = this._state;
    this._state = state;
    this._emit('state', { state, previous, ...detail });
  }

  // _emit calls the listeners; one that throws does not stop the others
  // or the client, and its error is thrown again where it is reported.
  _emit(type, detail) {
    const set = this._listeners.get(type);
    if (!set) return;
    for (const fn of [...set]) {
      try {
        fn(detail);
      } catch (err) {
        setTimeout(() => { throw err; });
      }
    }
  }
}

function identity(ok) {
  return { user: ok.user, name: ok.name || ok.user, avatar: ok.avatar || '', expires: ok.expires || 0 };
}

// The client against real tether nodes, which TestJSClientWithNode
// (test/jsclient_test.go) starts and describes in TETHER_* variables:
//   go test ./test -run TestJSClientWithNode -v
// Tests run one after the other: some stop and start the node.
import { test as nodeTest } from 'node:test';
import assert from 'node:assert/strict';
import { TetherClient, TetherError } from '../tether.js';

// test is node's, with a deadline: a promise that never settles fails.
const test = (name, fn) => nodeTest(name, { timeout: 20000 }, fn);

function env(name) {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set: run these tests with go test ./test -run TestJSClientWithNode`);
  return v;
}
const WS = env('TETHER_WS'); // main node, idle timeout 2s
const WS_TOKEN = env('TETHER_WS_TOKEN'); // main node, auth.mode token
const WS_OTHER = env('TETHER_WS_OTHER'); // another node, up while main restarts
const ADMIN = env('TETHER_ADMIN'); // main node's admin API
const CONTROL = env('TETHER_CONTROL'); // the Go test: /stop, /start, /token

async function control(method, path) {
  const res = await fetch(CONTROL + path, { method });
  const body = await res.text();
  if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${body}`);
  return body;
}

function token(user, name, { ttl = '1h', key } = {}) {
  const q = new URLSearchParams({ user, name, ttl });
  if (key) q.set('key', key);
  return control('GET', '/token?' + q);
}

// until polls cond until it returns something truthy, and returns that.
async function until(what, cond, ms = 5000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = cond();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`waited ${ms}ms for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

// client makes a client with quick backoff that records every event (so
// that a test can wait for one that came before it looked) and closes
// when the test ends.
function client(t, url, options = {}) {
  const c = new TetherClient(url, { backoffMin: 50, backoffMax: 400, ...options });
  c.events = [];
  for (const type of ['state', 'message', 'joined', 'left', 'presence', 'gap', 'rejoin', 'error']) {
    c.on(type, (detail) => c.events.push({ type, detail }));
  }
  t.after(() => c.close());
  return c;
}

const of = (c, type) => c.events.filter((e) => e.type === type).map((e) => e.detail);
const states = (c) => of(c, 'state').map((s) => s.state);
const texts = (c, room) => of(c, 'message').filter((m) => m.room === room).map((m) => m.data);

async function connected(t, url, options) {
  const c = client(t, url, options);
  c.connect();
  await until(`${url} to connect`, () => c.state === 'connected');
  return c;
}

// staysClosed checks that a stopped client makes no attempt of its own
// for longer than its longest backoff.
async function staysClosed(c) {
  const seen = c.events.length;
  await new Promise((resolve) => setTimeout(resolve, 1000));
  assert.equal(c.state, 'closed');
  assert.deepEqual(c.events.slice(seen).filter((e) => e.type === 'state'), []);
}

test('connects, is welcomed, and answers requests or errors with codes', async (t) => {
  const c = await connected(t, WS);
  assert.ok(c.node, 'the welcome names the node');
  assert.ok(c.conn.startsWith(c.node + '.'), `connection id ${c.conn} names node ${c.node}`);
  assert.deepEqual(states(c), ['connecting', 'connected']);
  assert.equal((await c.ping()).op, 'pong');
  await assert.rejects(c.request({ op: 'nope' }), { name: 'TetherError', code: 'unknown_op' });
  await assert.rejects(c.send('nowhere', 'x'), (err) => err instanceof TetherError && err.code === 'not_in_room');
  await assert.rejects(c.join('no spaces'), { code: 'bad_request' });
  assert.deepEqual(c.rooms, [], 'a refused join is forgotten');
});

test('two clients join, talk, whisper, list members and leave', async (t) => {
  const ann = await connected(t, WS);
  const bob = await connected(t, WS);
  const joined = await ann.join('lobby', { name: 'ann', avatar: '🦊' });
  assert.equal(joined.room, 'lobby');
  await bob.join('lobby', { name: 'bob' });
  await until('ann to see bob join', () => of(ann, 'joined').find((j) => j.conn === bob.conn && j.name === 'bob'));

  await bob.send('lobby', { text: 'hi', n: 1 });
  const m = await until('ann to get the message', () => of(ann, 'message')[0]);
  assert.equal(m.room, 'lobby');
  assert.equal(m.from, bob.conn);
  assert.equal(m.name, 'bob');
  assert.deepEqual(m.data, { text: 'hi', n: 1 });
  await bob.send('lobby', 'echoed', { echo: true });
  await until('bob to get his echo', () => texts(bob, 'lobby').includes('echoed'));
  assert.deepEqual(texts(bob, 'lobby'), ['echoed'], 'without echo a sender gets nothing back');

  await ann.whisper(bob.conn, 'psst');
  const w = await until('bob to get the whisper', () => of(bob, 'message').find((x) => x.data === 'psst'));
  assert.equal(w.room, undefined);
  assert.equal(w.from, ann.conn);

  const members = await ann.members('lobby');
  assert.deepEqual(members.map((x) => x.name).sort(), ['ann', 'bob']);

  await ann.leave('lobby');
  assert.deepEqual(ann.rooms, []);
  const left = await until('bob to see ann leave', () => of(bob, 'left').find((l) => l.conn === ann.conn));
  assert.equal(left.reason, 'left');
});

test('a request without an answer times out', async (t) => {
  const c = await connected(t, WS, { requestTimeout: 300 });
  await assert.rejects(c.request({ op: 'test_silent' }), { code: 'timeout' });
  assert.equal(c.state, 'connected');
});

test('its heartbeat keeps an idle connection past the idle timeout', async (t) => {
  const c = await connected(t, WS);
  const idle = c.welcome.heartbeat.idle_timeout_ms;
  assert.ok(idle > 0 && idle <= 2000, `the listener's idle timeout is ${idle}ms`);
  const conn = c.conn;
  await new Promise((resolve) => setTimeout(resolve, idle * 2.5));
  assert.equal(c.conn, conn);
  assert.deepEqual(states(c), ['connecting', 'connected']);
});

test('a server gone silent is dropped and the client reconnects', async (t) => {
  const c = await connected(t, WS);
  const conn = c.conn;
  c.request({ op: 'test_mute' }).catch(() => {}); // never answered: the server is stuck from now on
  // Pings every 1s (a third of 2s, at least 1s) and dead after two and 5s.
  const drop = await until('the silent connection to be dropped', () => of(c, 'state').find((s) => s.state === 'reconnecting'), 10000);
  assert.equal(drop.reason, 'no answer from the server');
  await until('a new connection', () => c.state === 'connected' && c.conn !== conn);
});

test('authenticates with a token from options, from ?token=, or from auth()', async (t) => {
  const ann = await connected(t, WS_TOKEN, { token: await token('u-ann', 'Ann') });
  assert.equal(ann.user.user, 'u-ann');
  assert.equal(ann.user.name, 'Ann');
  await ann.join('auth', { name: 'mallory' });
  assert.deepEqual((await ann.members('auth')).map((m) => m.name), ['Ann'], "the token's name, whatever the join says");

  const bea = await connected(t, WS_TOKEN + '?token=' + encodeURIComponent(await token('u-bea', 'Bea')));
  assert.equal(bea.user.user, 'u-bea');

  const cid = client(t, WS_TOKEN);
  cid.connect();
  await until('the listener to ask for a token', () => cid.state === 'unauthenticated');
  assert.equal(cid.welcome.auth, 'token');
  const ok = await cid.auth(await token('u-cid', 'Cid'));
  assert.equal(ok.user, 'u-cid');
  assert.equal(cid.state, 'connected');

  // refresh: a later expiry for the same user; another user's token is
  // refused and changes nothing.
  const before = ann.user.expires;
  const refreshed = await ann.refresh(await token('u-ann', 'Ann', { ttl: '2h' }));
  assert.ok(refreshed.expires > before, `expires ${refreshed.expires} after ${before}`);
  assert.equal(ann.user.expires, refreshed.expires);
  await assert.rejects(ann.refresh(await token('u-bea', 'Bea')), { code: 'unauthorized' });
  assert.equal(ann.state, 'connected');
  assert.equal(ann.user.user, 'u-ann');
});

test('a refused token stops the client until auth() brings a good one', async (t) => {
  const c = client(t, WS_TOKEN, { token: await token('u-dan', 'Dan', { key: 'other' }) });
  const join = c.join('refused');
  c.connect();
  await assert.rejects(join, { code: 'closed' });
  const closed = of(c, 'state').at(-1);
  assert.equal(closed.state, 'closed');
  assert.equal(closed.code, 4006);
  assert.equal(closed.reason, 'unauthorized');
  assert.equal(closed.error.code, 'unauthorized');
  assert.deepEqual(c.rooms, [], 'a join that never happened is forgotten');
  await staysClosed(c);

  await c.auth(await token('u-dan', 'Dan'));
  assert.equal(c.state, 'connected');
  await c.join('refused');
});

test('an expired token stops the client; auth() resumes its rooms', async (t) => {
  const eve = await connected(t, WS_TOKEN, { token: await token('u-eve', 'Eve', { ttl: '2s' }) });
  await eve.join('news:exp');
  const fay = await connected(t, WS);
  await fay.join('news:exp', { name: 'fay' });
  const closed = await until('the token to expire', () => of(eve, 'state').find((s) => s.state === 'closed'), 5000);
  assert.equal(closed.code, 4007);
  assert.equal(closed.reason, 'token_expired');
  await fay.send('news:exp', 'while away');
  await staysClosed(eve);

  await eve.auth(await token('u-eve', 'Eve'));
  const rejoin = await until('the rejoin', () => of(eve, 'rejoin')[0]);
  assert.equal(rejoin.room, 'news:exp');
  assert.equal(rejoin.cause, 'reconnect');
  assert.equal(rejoin.recovered, true);
  assert.equal(rejoin.replayed, 1);
  assert.deepEqual(texts(eve, 'news:exp'), ['while away']);
});

test('a kicked client stays away until connect(), then resumes its room with since', async (t) => {
  const ann = await connected(t, WS);
  const bob = await connected(t, WS);
  await ann.join('news:kick', { name: 'ann' });
  await bob.join('news:kick', { name: 'bob' });
  await bob.send('news:kick', 'one');
  await until('ann to get one', () => texts(ann, 'news:kick').length === 1);
  const seen = ann.position('news:kick');
  assert.ok(seen && seen.epoch, 'a room with history has a position');

  const res = await fetch(ADMIN + '/api/kick', { method: 'POST', body: JSON.stringify({ conn: ann.conn }) });
  assert.equal(res.status, 200, await res.text());
  const closed = await until('ann to be kicked', () => of(ann, 'state').find((s) => s.state === 'closed'));
  assert.equal(closed.code, 4004);
  assert.equal(closed.reason, 'kicked');
  await bob.send('news:kick', 'two');
  await bob.send('news:kick', 'three');
  await staysClosed(ann);
  assert.deepEqual(ann.rooms, ['news:kick'], 'a kicked client keeps its rooms');

  ann.connect();
  const rejoin = await until('the rejoin', () => of(ann, 'rejoin')[0]);
  assert.equal(rejoin.recovered, true);
  assert.equal(rejoin.replayed, 2);
  assert.ok(rejoin.offset > seen.offset && rejoin.epoch === seen.epoch, `position ${rejoin.offset}/${rejoin.epoch} after ${seen.offset}/${seen.epoch}`);
  assert.deepEqual(texts(ann, 'news:kick'), ['one', 'two', 'three']);
  assert.deepEqual(ann.position('news:kick'), { offset: rejoin.offset, epoch: rejoin.epoch });
});

test('a gap makes it join again with since', async (t) => {
  const c = await connected(t, WS);
  await c.join('news:gap');
  await c.request({ op: 'test_gap', room: 'news:gap' });
  assert.deepEqual(of(c, 'gap'), [{ op: 'gap', room: 'news:gap' }]);
  const rejoin = await until('the rejoin', () => of(c, 'rejoin')[0]);
  assert.equal(rejoin.cause, 'gap');
  assert.equal(rejoin.recovered, true, 'since was sent: nothing was missed');
});

test('reconnects with growing, jittered delays while the node is down, then resumes', async (t) => {
  const min = 100;
  const ann = await connected(t, WS, { backoffMin: min, backoffMax: 5000 });
  const bob = await connected(t, WS_OTHER);
  await ann.join('news:restart', { name: 'ann' });
  await bob.join('news:restart', { name: 'bob' });
  await bob.send('news:restart', 'before');
  await until('ann to get before', () => texts(ann, 'news:restart').length === 1);
  const conn = ann.conn;

  await control('POST', '/stop');
  for (let i = 1; i <= 3; i++) await bob.send('news:restart', `missed ${i}`);
  const retries = await until('four failed attempts', () => {
    const r = of(ann, 'state').filter((s) => s.state === 'reconnecting');
    return r.length >= 4 && r;
  }, 10000);
  assert.equal(retries[0].reason, 'server_shutdown');
  retries.slice(0, 4).forEach((r, i) => {
    const base = min * 2 ** i;
    assert.equal(r.attempt, i + 1);
    assert.ok(r.delay >= base * 0.8 - 1 && r.delay <= base * 1.2 + 1, `retry ${i + 1} after ${r.delay}ms, want ${base}ms ±20%`);
  });

  await control('POST', '/start');
  const rejoin = await until('the rejoin', () => of(ann, 'rejoin')[0], 10000);
  assert.notEqual(ann.conn, conn);
  assert.equal(rejoin.recovered, true);
  assert.equal(rejoin.replayed, 3);
  assert.deepEqual(texts(ann, 'news:restart'), ['before', 'missed 1', 'missed 2', 'missed 3']);
});

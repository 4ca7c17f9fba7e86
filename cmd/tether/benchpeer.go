package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"tether/bench/sio"
	"tether/client"
)

// runBenchPeer measures tether against a Socket.IO 4 server
// (bench/peer/server.js) in one run (see its help in commands.go), with
// the same worker processes, the same clients' work and the same
// figures: idle memory per connection (the server process's RSS),
// connects per second (and the server's CPU per connect), and one room's
// fan-out (the server's CPU per delivery, send to last member p50/p99,
// deliveries per second). Every figure comes with its ratio tether /
// Socket.IO: these machines are shared, and only what is measured in the
// same run compares.
func runBenchPeer(c *call) error {
	peerDir = c.String("peer-dir")
	o := peerBench{
		scenarios: c.String("scenario"),
		tetherURL: c.String("tether"), tetherPID: c.Int("tether-pid"),
		peerURL: c.String("peer"), peerPID: c.Int("peer-pid"),
		procs: c.Int("procs"), conns: c.Int("conns"), baseline: c.Duration("baseline"), settle: c.Duration("settle"),
		connects: c.Int("connects"), parallel: c.Int("parallel"), rounds: c.Int("rounds"),
		room: roomBench{members: c.Int("members"), messages: c.Int("messages"), rate: c.Int("rate"), size: c.Int("size")},
		out:  c.String("out"),
	}
	return o.run(c.ctx(), c.out)
}

type peerBench struct {
	scenarios          string
	tetherURL, peerURL string
	tetherPID, peerPID int
	procs, conns       int
	baseline, settle   time.Duration
	connects, parallel int
	rounds             int
	room               roomBench
	out                string
}

// peerSide is the name of the peer in reports.
const peerSide = "socket.io"

func (o *peerBench) run(ctx context.Context, out io.Writer) error {
	if o.tetherPID == 0 {
		return errors.New("--tether-pid: tether's process id (from `tether status`)")
	}
	if o.peerURL == "" {
		s, err := sio.StartServer(peerDir)
		if err != nil {
			return err
		}
		defer s.Stop()
		o.peerURL, o.peerPID = s.URL, s.PID
		fmt.Fprintf(progressOut, "started the Socket.IO server: %s, pid %d\n", s.URL, s.PID)
	} else if o.peerPID == 0 {
		return errors.New("--peer-pid: the Socket.IO server's process id")
	}
	fmt.Fprintf(out, "tether %s (pid %d) against Socket.IO %s (pid %d)\n", o.tetherURL, o.tetherPID, o.peerURL, o.peerPID)
	fmt.Fprintf(out, "machine: %s\n", machine().describe())
	for _, sc := range strings.Split(o.scenarios, ",") {
		var res *benchResult
		var err error
		switch strings.TrimSpace(sc) {
		case "idle":
			res, err = o.idle(ctx, out)
		case "connect":
			res, err = o.connect(ctx)
		case "room":
			res, err = o.fanOut(ctx)
		default:
			return fmt.Errorf("--scenario: unknown %q (idle, connect, room)", sc)
		}
		if res != nil {
			fmt.Fprintln(out)
			res.writeTable(out)
			if serr := res.save(o.out); serr != nil && err == nil {
				err = serr
			}
		}
		if err != nil {
			return fmt.Errorf("%s: %w", sc, err)
		}
	}
	return nil
}

func (o *peerBench) params(more map[string]any) map[string]any {
	p := map[string]any{"tether": o.tetherURL, "peer": o.peerURL, "procs": o.procs}
	for k, v := range more {
		p[k] = v
	}
	return p
}

// idle holds the same idle WebSocket connections on each server in turn
// (tether's: a chat ping every 20 s from the client and the server's
// WebSocket ping every 25 s; Socket.IO's: its ping every 25 s, answered)
// and compares the growth of the servers' RSS, made as bench idle makes
// it: the lowest at rest against the lowest held, with the noise.
func (o *peerBench) idle(ctx context.Context, out io.Writer) (*benchResult, error) {
	res := newResult("peer", "idle", peerSide, o.params(map[string]any{"conns": o.conns, "baseline": o.baseline.String(), "settle": o.settle.String()}))
	t, err := holdIdle(ctx, "tether idle", o.tetherPID, o.procs, o.conns, o.baseline, o.settle, "idle", "--addr", o.tetherURL, "--heartbeat", "20s")
	if err != nil {
		return nil, fmt.Errorf("tether: %w", err)
	}
	p, err := holdIdle(ctx, "socket.io idle", o.peerPID, o.procs, o.conns, o.baseline, o.settle, "sio-idle", "--url", o.peerURL)
	if err != nil {
		return nil, fmt.Errorf("socket.io: %w", err)
	}
	for _, h := range []struct {
		side string
		h    *idleHold
	}{{"tether", t}, {peerSide, p}} {
		if f := h.h.fig; !f.measurable() {
			fmt.Fprintf(out, "%s: RSS per connection not measurable with %d connections: the RSS grew %.2f MiB, and a figure wants %.2f MiB (it moved %.2f MiB by itself): use more connections\n",
				h.side, f.conns, mib(f.after-f.before), mib(f.threshold()), mib(f.noise))
		}
	}
	tf, pf := t.fig, p.fig
	res.add("RSS per connection", "bytes", tf.perConn(), pf.perConn(), "lower")
	res.add("noise per connection (±)", "bytes", float64(tf.noise)/float64(tf.conns), float64(pf.noise)/float64(pf.conns), "")
	res.add("RSS at rest", "MiB", mib(tf.before), mib(pf.before), "")
	res.add("RSS held", "MiB", mib(tf.after), mib(pf.after), "")
	res.add("connections", "", float64(t.conns), float64(p.conns), "")
	res.add("connect time", "s", t.connectTime.Seconds(), p.connectTime.Seconds(), "lower")
	res.Series["tether"].RSS, res.Series[peerSide].RSS = t.samples, p.samples
	return res, nil
}

// connect: rounds of connects, tether's then the peer's, each client
// dialing, upgrading, waiting until the connection is usable (tether's
// welcome; Socket.IO's open packet and namespace connect) and closing.
func (o *peerBench) connect(ctx context.Context) (*benchResult, error) {
	res := newResult("peer", "connect", peerSide, o.params(map[string]any{"connects": o.connects, "parallel": o.parallel, "rounds": o.rounds}))
	per := strconv.Itoa((o.connects + o.procs - 1) / o.procs)
	var tRate, tCPU, pRate, pCPU []float64
	for i := range o.rounds {
		r, c, err := connectRound(ctx, fmt.Sprintf("tether connect %d/%d", i+1, o.rounds), o.procs, o.tetherPID,
			[]string{"connect", "--url", o.tetherURL, "--conns", per, "--parallel", strconv.Itoa(o.parallel)})
		if err != nil {
			return nil, fmt.Errorf("tether: %w", err)
		}
		tRate, tCPU = append(tRate, r), append(tCPU, c)
		r, c, err = connectRound(ctx, fmt.Sprintf("socket.io connect %d/%d", i+1, o.rounds), o.procs, o.peerPID,
			[]string{"connect", "--url", o.peerURL, "--conns", per, "--parallel", strconv.Itoa(o.parallel)})
		if err != nil {
			return nil, fmt.Errorf("socket.io: %w", err)
		}
		pRate, pCPU = append(pRate, r), append(pCPU, c)
	}
	res.add("connects/s (median of rounds)", "1/s", median(tRate), median(pRate), "higher")
	res.add("server CPU per connect", "µs", median(tCPU), median(pCPU), "lower")
	res.Params["tether_rates"], res.Params["peer_rates"] = tRate, pRate
	res.Params["tether_cpu_us"], res.Params["peer_cpu_us"] = tCPU, pCPU
	return res, nil
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// fanOut runs the room bench's scenario on tether (the room bench's own
// measure) and on the peer (measurePeer): the same members in the same
// worker processes, the same messages at the same rate.
func (o *peerBench) fanOut(ctx context.Context) (*benchResult, error) {
	rb := &o.room
	rb.procs, rb.room, rb.url = o.procs, "bench", o.tetherURL
	rb.sent, rb.label = new(atomic.Int64), "tether room"
	res := newResult("peer", "room", peerSide, o.params(map[string]any{"members": rb.members, "messages": rb.messages, "rate": rb.rate, "size": rb.size}))
	t, err := rb.measure(ctx, o.tetherURL, o.tetherURL, o.tetherPID)
	if err != nil {
		return nil, fmt.Errorf("tether: %w", err)
	}
	rb.sent.Store(0)
	rb.label = "socket.io room"
	p, err := measurePeer(ctx, rb, o.peerURL, o.peerPID)
	if err != nil {
		return nil, fmt.Errorf("socket.io: %w", err)
	}
	addRoomRows(res, t, p)
	res.Series["tether"].LatencyMs, res.Series[peerSide].LatencyMs = t.lastMember[""], p.lastMember[""]
	want := rb.members * rb.messages
	if t.delivered != want || p.delivered != want {
		return res, fmt.Errorf("deliveries missing: tether %d, socket.io %d of %d", want-t.delivered, want-p.delivered, want)
	}
	return res, nil
}

// addRoomRows adds the figures of two room runs.
func addRoomRows(res *benchResult, t, p *roomResult) {
	lat := func(r *roomResult, q float64) float64 { return r.latency(q) }
	res.add("server CPU per delivery", "µs", t.cpuPerDelivery()*1e6, p.cpuPerDelivery()*1e6, "lower")
	res.add("send to last member p50", "ms", lat(t, 0.50), lat(p, 0.50), "lower")
	res.add("send to last member p99", "ms", lat(t, 0.99), lat(p, 0.99), "lower")
	res.add("send to last member max", "ms", lat(t, 1), lat(p, 1), "lower")
	rate := func(r *roomResult) float64 { return float64(r.delivered) / r.elapsed.Seconds() }
	res.add("deliveries/s", "1/s", rate(t), rate(p), "higher")
	res.add("deliveries", "", float64(t.delivered), float64(p.delivered), "")
}

// measurePeer runs o's room scenario against a Socket.IO server: members
// in worker processes join room o.room (each waiting for its join's ack);
// a sender joins too and emits "send" events at the rate, each carrying
// its send time; the server's CPU is read from /proc like tether's.
func measurePeer(ctx context.Context, o *roomBench, url string, pid int) (*roomResult, error) {
	return o.measureOn(ctx, peerRoom{}, url, url, pid)
}

// peerRoom is the Socket.IO server of bench/peer.
type peerRoom struct{}

func (peerRoom) worker() string { return "sio-room" }

func (peerRoom) joinSender(ctx context.Context, url, room string) (func(string) error, *client.Position, io.Closer, error) {
	dctx, dcancel := context.WithTimeout(ctx, 10*time.Second)
	sender, err := sio.Dial(dctx, url, sio.Options{})
	dcancel()
	if err != nil {
		return nil, nil, nil, err
	}
	if _, err := sender.Call("join", room, 10*time.Second); err != nil {
		sender.Close()
		return nil, nil, nil, err
	}
	go func() { // answers the server's pings
		for {
			if _, err := sender.Read(); err != nil {
				return
			}
		}
	}()
	send := func(data string) error {
		return sender.WriteRaw([]byte(`42["send",{"room":"` + room + `","data":` + data + `}]`))
	}
	return send, nil, sender, nil
}

// connectPeer is one connect of the connect bench to a Socket.IO server:
// the WebSocket upgrade, the open packet, the namespace connect, and the
// socket closed with nothing said first, as the bench's tether clients
// close theirs.
func connectPeer(ctx context.Context, url string, local net.IP) error {
	c, err := sio.Dial(ctx, url, sio.Options{Local: local})
	if err != nil {
		return err
	}
	return c.Conn().Close()
}

// runSioIdleWorker holds idle Socket.IO connections, answering the
// server's pings, until killed.
func runSioIdleWorker(c *call) error {
	url, conns, worker := c.String("url"), c.Int("conns"), c.Int("worker")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var n atomic.Int64
	reportProgress(worker, &n, nil)
	for i := range conns {
		sc, err := sio.Dial(ctx, url, sio.Options{Local: sourceIP(worker, i), Timeout: 30 * time.Second})
		if err != nil {
			return fail(worker, fmt.Errorf("connection %d: %w", i, err))
		}
		go func() {
			for {
				if _, err := sc.Read(); err != nil {
					return
				}
			}
		}()
		n.Add(1)
	}
	report(workerReport{Worker: worker, Event: "connected", Conns: conns})
	select {} // until the parent kills us
}

// runSioRoomWorker holds members of the room bench on a Socket.IO server.
func runSioRoomWorker(c *call) error {
	return runMemberWorker(c, func(url, room string, worker, i int, rec *recorder) (func(), error) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		c, err := sio.Dial(ctx, url, sio.Options{Local: sourceIP(worker, i), Timeout: 30 * time.Second})
		if err != nil {
			return nil, err
		}
		// The join's ack: the member is in the room before the parent's
		// sender joins and sends.
		if _, err := c.Call("join", room, 30*time.Second); err != nil {
			return nil, fmt.Errorf("join: %w", err)
		}
		return func() { rec.peerMember(c) }, nil
	})
}

var peerMessage = []byte(`42["message",`)

// peerMember reads one Socket.IO member's packets until it has every
// message (pings answered by Read), recording each one's latency; like
// recorder.member, it parses only the two numbers it needs.
func (r *recorder) peerMember(c *sio.Conn) {
	_ = c.Conn().SetReadDeadline(time.Now().Add(5 * time.Minute))
	for got := 0; got < len(r.maxNanos); {
		p, err := c.Read()
		if err != nil {
			return
		}
		now := time.Now().UnixNano()
		if !bytes.HasPrefix(p, peerMessage) {
			continue
		}
		if r.note(p, now) {
			got++
		}
	}
}

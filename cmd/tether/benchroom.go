package main

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"fmt"
	"io"
	"maps"
	"math"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"

	"tether/client"
)

// runBenchRoom measures one room's fan-out (see its help in commands.go):
// members WebSocket clients in worker processes join one room; the parent
// sends messages at a fixed rate, each carrying its send time; every
// worker records, per message, when its last member had it. With the
// cluster's flags (--pids, --metrics, --kill-pid, --out: benchcluster.go)
// it also takes the figures of a cluster.
func runBenchRoom(c *call) error {
	cl := clusterOpts{
		pids: c.String("pids"), metrics: c.String("metrics"), killPID: c.Int("kill-pid"),
		killURL: c.String("kill-url"), deadline: c.Duration("kill-wait"), out: c.String("out"),
	}
	pid := 0
	if cl.pids == "" { // the cluster's figures name their processes
		pid = benchServer(c)
	}
	o := roomBench{
		url: c.String("url"), sendURL: c.String("send-url"), room: c.String("room"),
		historyRoom: c.String("history-room"), pid: pid, floor: c.Bool("floor"),
		members: c.Int("members"), procs: c.Int("procs"),
		messages: c.Int("messages"), rate: c.Int("rate"), size: c.Int("size"),
		sent: new(atomic.Int64),
	}
	return o.runCluster(c.ctx(), c.out, &cl)
}

type roomBench struct {
	url, sendURL, room   string
	historyRoom          string
	pid                  int
	floor                bool
	members, procs       int
	messages, rate, size int

	label        string                      // of the progress line; default "room"
	sent         *atomic.Int64               // messages sent so far (progress); nil: not counted
	beforeSend   func() error                // run just before the first send
	afterMeasure func(res *roomResult) error // run at the end of a measure, the members still joined
}

// roomResult is one run's figures.
type roomResult struct {
	delivered  int
	elapsed    time.Duration        // first send to last delivery
	lastMember map[string][]float64 // per node URL ("" the whole room): per message, ms until its last member had it
	cpu        float64              // the server's CPU seconds over the run; <0 unknown
	joinTime   time.Duration
	sendTime   time.Duration
	sendURL    string
	start      *client.Position // a history room's position before the first message
}

func (r *roomResult) cpuPerDelivery() float64 { return r.cpu / float64(r.delivered) }

func (r *roomResult) latency(p float64) float64 {
	lat := slices.Clone(r.lastMember[""])
	slices.Sort(lat)
	return percentile(lat, p)
}

func (o *roomBench) run(ctx context.Context, out io.Writer) error {
	var floor *roomResult
	if o.floor {
		url, pid, stop, err := startFloor()
		if err != nil {
			return err
		}
		floor, err = o.measure(ctx, url, url, pid)
		stop()
		if err != nil {
			return fmt.Errorf("floor: %w", err)
		}
		fmt.Fprintln(out, "floor (a bare server: encode once, one write(2) per delivery):")
		o.print(out, floor)
		fmt.Fprintln(out)
		fmt.Fprintln(out, "tether:")
	}
	urls := strings.Split(o.url, ",")
	if o.sendURL == "" {
		o.sendURL = urls[0]
	}
	res, err := o.measure(ctx, o.url, o.sendURL, o.pid)
	if err != nil {
		return err
	}
	o.print(out, res)
	if floor != nil {
		fmt.Fprintln(out)
		fmt.Fprintf(out, "tether / floor      CPU per delivery %.2fx, send to last member p50 %.2fx, p99 %.2fx\n",
			res.cpuPerDelivery()/floor.cpuPerDelivery(), res.latency(0.50)/floor.latency(0.50), res.latency(0.99)/floor.latency(0.99))
	}
	if res.delivered != o.members*o.messages {
		return fmt.Errorf("%d deliveries missing", o.members*o.messages-res.delivered)
	}
	if o.historyRoom != "" {
		return o.runHistory(ctx, out, res)
	}
	return nil
}

// runHistory runs the scenario again in the history room, compares it
// with the plain room's run, and times the replay of its messages.
func (o *roomBench) runHistory(ctx context.Context, out io.Writer, plain *roomResult) error {
	h := *o
	h.room = o.historyRoom
	res, err := h.measure(ctx, o.url, o.sendURL, o.pid)
	if err != nil {
		return fmt.Errorf("history room: %w", err)
	}
	fmt.Fprintln(out)
	fmt.Fprintf(out, "room with history (%s):\n", h.room)
	h.print(out, res)
	fmt.Fprintf(out, "history adds        send to last member p50 %+.3f ms, p99 %+.3f ms\n",
		res.latency(0.50)-plain.latency(0.50), res.latency(0.99)-plain.latency(0.99))
	if res.delivered != o.members*o.messages {
		return fmt.Errorf("history room: %d deliveries missing", o.members*o.messages-res.delivered)
	}
	if res.start == nil {
		return fmt.Errorf("room %s has no history: its join gave no position", h.room)
	}
	took, got, err := replay(ctx, o.sendURL, h.room, res.start)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "replay              %d missed messages to a client joining with since in %s (join to ok)\n", got, took.Round(10*time.Microsecond))
	if got != o.messages {
		return fmt.Errorf("replay: %d messages of %d", got, o.messages)
	}
	return nil
}

// replay joins room at url with since and returns how long the join took
// to be answered and how many messages came before its ok.
func replay(ctx context.Context, url, room string, since *client.Position) (time.Duration, int, error) {
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	c, err := client.DialWebSocket(dctx, url)
	if err != nil {
		return 0, 0, err
	}
	defer c.Close()
	start := time.Now()
	if err := c.Send(client.Request{Op: "join", ID: 1, Room: room, Name: "replay", Since: since}); err != nil {
		return 0, 0, err
	}
	for got := 0; ; {
		ev, err := c.Recv()
		if err != nil {
			return 0, got, err
		}
		switch ev.Op {
		case "message":
			got++
		case "ok":
			if ev.Recovered == nil || !*ev.Recovered {
				return 0, got, fmt.Errorf("replay: not recovered (%s)", ev.Reason)
			}
			return time.Since(start), got, nil
		case "error":
			return 0, got, fmt.Errorf("replay: %s: %s", ev.Code, ev.Message)
		}
	}
}

// startFloor runs the floor server in a process of its own and returns
// its URL and pid.
func startFloor() (url string, pid int, stop func(), err error) {
	return startHelper("bench", "floor")
}

// measure runs the scenario once against url.
func (o *roomBench) measure(ctx context.Context, url, sendURL string, pid int) (*roomResult, error) {
	return o.measureOn(ctx, tetherRoom{}, url, sendURL, pid)
}

// roomServer is a server the room bench measures: the worker command
// that holds its members, and how the parent's sender joins and sends.
type roomServer interface {
	worker() string
	// joinSender connects a sender to url and joins room. It returns the
	// send of one message's data, and the room's history position when
	// it has one.
	joinSender(ctx context.Context, url, room string) (send func(data string) error, start *client.Position, closer io.Closer, err error)
}

// tetherRoom is tether's chat protocol.
type tetherRoom struct{}

func (tetherRoom) worker() string { return "room" }

func (tetherRoom) joinSender(ctx context.Context, url, room string) (func(string) error, *client.Position, io.Closer, error) {
	dctx, dcancel := context.WithTimeout(ctx, 10*time.Second)
	sender, err := client.DialWebSocket(dctx, url)
	dcancel()
	if err != nil {
		return nil, nil, nil, err
	}
	ok, err := sender.Call(client.Request{Op: "join", Room: room, Name: "sender"})
	if err != nil {
		sender.Close()
		return nil, nil, nil, err
	}
	var start *client.Position
	if ok.Epoch != "" {
		start = &client.Position{Offset: ok.Offset, Epoch: ok.Epoch}
	}
	go func() { // the sender reads nothing of interest; keep its queue empty
		for {
			if _, err := sender.RecvRaw(); err != nil {
				return
			}
		}
	}()
	send := func(data string) error {
		return sender.SendRaw([]byte(`{"op":"send","room":"` + room + `","data":` + data + `}`))
	}
	return send, start, sender, nil
}

// measureOn runs the scenario once against srv at url.
func (o *roomBench) measureOn(ctx context.Context, srv roomServer, url, sendURL string, pid int) (*roomResult, error) {
	res := &roomResult{cpu: -1, sendURL: sendURL}
	per := (o.members + o.procs - 1) / o.procs
	w, err := startWorkers(o.procs, srv.worker(), "--url", url, "--members", strconv.Itoa(per), "--room", o.room,
		"--messages", strconv.Itoa(o.messages))
	if err != nil {
		return nil, err
	}
	defer w.stop()
	defer showProgress(cmp.Or(o.label, "room"), o.members, w, o.sent)()
	joinStart := time.Now()
	wctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	if _, err := w.waitAll(wctx, "connected"); err != nil {
		return nil, err
	}
	res.joinTime = time.Since(joinStart)

	send, start, sender, err := srv.joinSender(ctx, sendURL, o.room)
	if err != nil {
		return nil, err
	}
	defer sender.Close()
	res.start = start
	cpuBefore := 0.0
	if pid != 0 {
		if cpuBefore, err = cpuSeconds(pid); err != nil {
			return nil, err
		}
	}
	if o.beforeSend != nil {
		if err := o.beforeSend(); err != nil {
			return nil, err
		}
	}
	first, err := o.pace(send)
	if err != nil {
		return nil, err
	}
	res.sendTime = time.Since(first)
	results, err := w.waitAll(wctx, "result")
	if err != nil {
		return nil, err
	}
	if pid != 0 {
		after, err := cpuSeconds(pid)
		if err != nil {
			return nil, err
		}
		res.cpu = after - cpuBefore
	}
	o.collect(res, results, first)
	if o.afterMeasure != nil { // with the members still there
		if err := o.afterMeasure(res); err != nil {
			return nil, err
		}
	}
	return res, nil
}

// pace sends the run's messages at the rate, each a JSON object with its
// sequence number and send time (data), and returns when it started.
func (o *roomBench) pace(send func(data string) error) (time.Time, error) {
	pad := strings.Repeat("x", max(0, o.size-len(`{"seq":0000,"t":0000000000000000000,"pad":""}`)))
	// Pace in steps of a millisecond: at 10,000/s a sleep per message
	// would overshoot; each step sends what the rate owes by then.
	first := time.Now()
	for seq := 0; seq < o.messages; {
		owed := min(o.messages, int(time.Since(first).Seconds()*float64(o.rate))+1)
		for ; seq < owed; seq++ {
			if err := send(fmt.Sprintf(`{"seq":%d,"t":%d,"pad":"%s"}`, seq, time.Now().UnixNano(), pad)); err != nil {
				return first, err
			}
			if o.sent != nil {
				o.sent.Add(1)
			}
		}
		time.Sleep(time.Millisecond)
	}
	return first, nil
}

// collect adds the workers' results to res: per node and for the whole
// room, per message, when its last member had it.
func (o *roomBench) collect(res *roomResult, results []workerReport, first time.Time) {
	res.lastMember = map[string][]float64{"": make([]float64, o.messages)}
	lastRecv := int64(0)
	for _, r := range results {
		res.delivered += r.Received
		lastRecv = max(lastRecv, r.LastRecv)
		if res.lastMember[r.URL] == nil {
			res.lastMember[r.URL] = make([]float64, o.messages)
		}
		for i, l := range r.Latencies {
			res.lastMember[""][i] = max(res.lastMember[""][i], l)
			res.lastMember[r.URL][i] = max(res.lastMember[r.URL][i], l)
		}
	}
	res.elapsed = time.Duration(lastRecv - first.UnixNano())
}

func (o *roomBench) print(out io.Writer, res *roomResult) {
	fmt.Fprintf(out, "members             %d in one room (%d worker processes; joined in %s)\n", o.members, o.procs, res.joinTime.Round(time.Millisecond))
	fmt.Fprintf(out, "messages            %d x %d bytes of data at %d/s (sent in %s, from %s)\n", o.messages, o.size, o.rate, res.sendTime.Round(time.Millisecond), res.sendURL)
	fmt.Fprintf(out, "deliveries          %d of %d\n", res.delivered, o.members*o.messages)
	for _, url := range slices.Sorted(maps.Keys(res.lastMember)) {
		lat := slices.Clone(res.lastMember[url])
		slices.Sort(lat)
		what := "whole room"
		if url != "" {
			what = "members at " + url
		}
		fmt.Fprintf(out, "send to last member p50 %.3f ms, p99 %.3f ms, max %.3f ms  (%s)\n",
			percentile(lat, 0.50), percentile(lat, 0.99), lat[len(lat)-1], what)
	}
	fmt.Fprintf(out, "delivered/s         %.0f (deliveries / time from first send to last delivery, %s)\n",
		float64(res.delivered)/res.elapsed.Seconds(), res.elapsed.Round(time.Millisecond))
	if res.cpu >= 0 {
		fmt.Fprintf(out, "server CPU          %.2f s, %.2f µs per delivery\n", res.cpu, res.cpuPerDelivery()*1e6)
	}
}

// percentile of sorted values (nearest rank).
func percentile(sorted []float64, p float64) float64 {
	if len(sorted) == 0 {
		return math.NaN()
	}
	i := int(math.Ceil(p*float64(len(sorted)))) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

// runRoomWorker holds members of the room bench.
func runRoomWorker(c *call) error {
	return runMemberWorker(c, func(url, room string, worker, i int, rec *recorder) (func(), error) {
		nc, r, err := joinMember(url, room, worker, i)
		if err != nil {
			return nil, err
		}
		return func() { rec.member(nc, r) }, nil
	})
}

// runMemberWorker holds members of the room bench: join connects member
// i and joins it to the room, and returns what reads its messages into
// rec until it has them all.
func runMemberWorker(c *call, join func(url, room string, worker, i int, rec *recorder) (read func(), err error)) error {
	var (
		room              = c.String("room")
		members, messages = c.Int("members"), c.Int("messages")
		worker            = c.Int("worker")
		urls              = strings.Split(c.String("url"), ",")
		url               = urls[worker%len(urls)] // the workers are spread over the nodes
	)
	rec := newRecorder(messages)
	var done sync.WaitGroup
	var joined atomic.Int64
	reportProgress(worker, &joined, &rec.received)
	for i := range members {
		read, err := join(url, room, worker, i, rec)
		if err != nil {
			return fail(worker, fmt.Errorf("member %d: %w", i, err))
		}
		joined.Add(1)
		done.Add(1)
		go func() { defer done.Done(); read() }()
	}
	report(workerReport{Worker: worker, Event: "connected", Conns: members})
	done.Wait()
	report(workerReport{Worker: worker, Event: "result", URL: url, Latencies: rec.latencies(), Received: int(rec.received.Load()), LastRecv: rec.lastRecv.Load()})
	select {} // until the parent kills us
}

// joinMember connects one member from its own source address and joins.
// The reader returned holds what the handshake read past the response.
func joinMember(url, room string, worker, i int) (net.Conn, io.Reader, error) {
	d := ws.Dialer{
		Timeout: 30 * time.Second,
		NetDial: func(ctx context.Context, network, addr string) (net.Conn, error) {
			nd := net.Dialer{LocalAddr: &net.TCPAddr{IP: sourceIP(worker, i)}}
			return nd.DialContext(ctx, network, addr)
		},
	}
	c, br, _, err := d.Dial(context.Background(), url)
	if err != nil {
		return nil, nil, err
	}
	var r io.Reader = c
	if br != nil {
		r = io.MultiReader(br, c)
	}
	req := fmt.Sprintf(`{"op":"join","id":1,"room":%q,"name":"m%d-%d"}`, room, worker, i)
	if err := wsutil.WriteClientText(c, []byte(req)); err != nil {
		return nil, nil, err
	}
	return c, r, nil
}

// recorder collects, per message, the latest latency seen by any member
// of this worker (milliseconds; -1 for none), and the deliveries.
type recorder struct {
	maxNanos []atomic.Int64
	received atomic.Int64
	lastRecv atomic.Int64
}

func newRecorder(messages int) *recorder {
	r := &recorder{maxNanos: make([]atomic.Int64, messages)}
	for i := range r.maxNanos {
		r.maxNanos[i].Store(-1)
	}
	return r
}

var (
	seqKey = []byte(`"seq":`)
	tKey   = []byte(`"t":`)
)

// member reads one member's frames until it has every message, answering
// pings, and records each message's latency. It parses only the two
// numbers it needs: the clients share the machine with the server, and
// must cost it as little as possible.
func (r *recorder) member(c net.Conn, in io.Reader) {
	br := bufio.NewReaderSize(in, 4096)
	buf := make([]byte, 0, 1024)
	got := 0
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Minute))
	for got < len(r.maxNanos) {
		h, err := ws.ReadHeader(br)
		if err != nil {
			return
		}
		if int64(cap(buf)) < h.Length {
			buf = make([]byte, h.Length)
		}
		p := buf[:h.Length]
		if _, err := io.ReadFull(br, p); err != nil {
			return
		}
		now := time.Now().UnixNano()
		if h.OpCode == ws.OpPing {
			_ = wsutil.WriteClientMessage(c, ws.OpPong, p)
			continue
		}
		if h.OpCode != ws.OpText || !bytes.HasPrefix(p, []byte(`{"op":"message"`)) {
			continue
		}
		if r.note(p, now) {
			got++
		}
	}
}

// note records the delivery at now of the message in p, by the seq and
// t (its send time) of its data; false if p has none.
func (r *recorder) note(p []byte, now int64) bool {
	seq, okS := number(p, seqKey)
	sent, okT := number(p, tKey)
	if !okS || !okT || seq < 0 || seq >= int64(len(r.maxNanos)) {
		return false
	}
	r.record(seq, now-sent, now)
	return true
}

// record notes one delivery of message seq, lat nanoseconds after its
// send, at now.
func (r *recorder) record(seq, lat, now int64) {
	for {
		old := r.maxNanos[seq].Load()
		if lat <= old || r.maxNanos[seq].CompareAndSwap(old, lat) {
			break
		}
	}
	r.received.Add(1)
	for {
		old := r.lastRecv.Load()
		if now <= old || r.lastRecv.CompareAndSwap(old, now) {
			break
		}
	}
}

// number reads the integer after key in p.
func number(p, key []byte) (int64, bool) {
	i := bytes.Index(p, key)
	if i < 0 {
		return 0, false
	}
	j := i + len(key)
	k := j
	for k < len(p) && p[k] >= '0' && p[k] <= '9' {
		k++
	}
	v, err := strconv.ParseInt(string(p[j:k]), 10, 64)
	return v, err == nil
}

func (r *recorder) latencies() []float64 {
	out := make([]float64, len(r.maxNanos))
	for i := range out {
		out[i] = float64(r.maxNanos[i].Load()) / 1e6
		if r.maxNanos[i].Load() < 0 {
			out[i] = -1
		}
	}
	return out
}

package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// runBenchEcho measures request and answer over TCP with the length
// framing (a 4-byte big-endian length, then the body: tether's `N`,
// body_offset 4): every client sends a chat `ping` of --size bytes and
// waits for its `pong`, over and over, for --duration. The same clients
// in the same worker processes then do the same against a bare Go server
// of the bench's own (`tether bench echo-server`, a process of its own)
// that speaks just that much of the chat protocol: it reads a frame,
// decodes its JSON (op and id, as tether's one decode per request does)
// and writes the pong in one write(2), from one goroutine per
// connection. The figures: messages (round trips) a second, the server's
// CPU per message, and the round trip's p50/p99, with tether / bare.
//
// Why ping and pong, and not an echo of the bytes: the ping is the one
// request of tether's chat protocol that goes to no room and no other
// connection, so it measures the path every request takes (read, frame,
// decode, answer, write) and nothing else; the relay app would echo
// bytes, but through a worker process over NATS, which is another
// bench. The bare server must then do the same work, a JSON decode and
// an answer per frame, or the comparison would be tether's protocol
// against no protocol at all.
func runBenchEcho(c *call) error {
	o := echoBench{
		addr: c.String("addr"), pid: benchServer(c), bareAddr: c.String("bare"), barePID: c.Int("bare-pid"),
		conns: c.Int("conns"), procs: c.Int("procs"), size: c.Int("size"),
		duration: c.Duration("duration"), ramp: c.Duration("ramp"), rounds: c.Int("rounds"), out: c.String("out"),
	}
	return o.run(c.ctx(), c.out)
}

type echoBench struct {
	addr, bareAddr     string
	pid, barePID       int
	conns, procs, size int
	duration, ramp     time.Duration
	rounds             int
	out                string
}

// echoRun is one side's figures of one round.
type echoRun struct {
	messages int
	cpu      float64 // the server's CPU seconds over the window; <0 unknown
	lat      []float64
}

func (o *echoBench) run(ctx context.Context, out io.Writer) error {
	if o.bareAddr == "" {
		line, pid, stop, err := startHelper("bench", "echo-server")
		if err != nil {
			return err
		}
		defer stop()
		o.bareAddr, o.barePID = line, pid
	}
	fmt.Fprintf(out, "tether %s (pid %d) against the bare server %s (pid %d)\n", o.addr, o.pid, o.bareAddr, o.barePID)
	fmt.Fprintf(out, "machine: %s\n", machine().describe())
	res := newResult("echo", "echo", "bare", map[string]any{
		"tether": o.addr, "bare": o.bareAddr, "conns": o.conns, "procs": o.procs, "size": o.size,
		"duration": o.duration.String(), "rounds": o.rounds,
	})
	var t, b []*echoRun
	for i := range o.rounds {
		r, err := o.measure(ctx, fmt.Sprintf("tether echo %d/%d", i+1, o.rounds), o.addr, o.pid)
		if err != nil {
			return fmt.Errorf("tether: %w", err)
		}
		t = append(t, r)
		r, err = o.measure(ctx, fmt.Sprintf("bare echo %d/%d", i+1, o.rounds), o.bareAddr, o.barePID)
		if err != nil {
			return fmt.Errorf("bare: %w", err)
		}
		b = append(b, r)
	}
	addEchoRows(res, t, b, o.duration)
	fmt.Fprintln(out)
	res.writeTable(out)
	return res.save(o.out)
}

// addEchoRows adds the rounds' figures: medians of rounds, latencies of
// all rounds together.
func addEchoRows(res *benchResult, t, b []*echoRun, d time.Duration) {
	rates := func(runs []*echoRun) (r, cpu []float64, lat []float64) {
		for _, x := range runs {
			r = append(r, float64(x.messages)/d.Seconds())
			if x.cpu >= 0 && x.messages > 0 {
				cpu = append(cpu, x.cpu/float64(x.messages)*1e6)
			}
			lat = append(lat, x.lat...)
		}
		return r, cpu, lat
	}
	tr, tc, tl := rates(t)
	br, bc, bl := rates(b)
	res.add("messages/s (median of rounds)", "1/s", median(tr), median(br), "higher")
	if len(tc) > 0 && len(bc) > 0 {
		res.add("server CPU per message", "µs", median(tc), median(bc), "lower")
	}
	pct := func(l []float64, p float64) float64 {
		s := slices.Clone(l)
		slices.Sort(s)
		return percentile(s, p)
	}
	res.add("round trip p50", "ms", pct(tl, 0.50), pct(bl, 0.50), "lower")
	res.add("round trip p99", "ms", pct(tl, 0.99), pct(bl, 0.99), "lower")
	res.Params["tether_rates"], res.Params["bare_rates"] = tr, br
	res.Series["tether"].LatencyMs, res.Series["bare"].LatencyMs = tl, bl
}

// measure runs the clients against addr for the duration: the workers
// connect, wait for the start time, then ping until its end.
func (o *echoBench) measure(ctx context.Context, label, addr string, pid int) (*echoRun, error) {
	start := time.Now().Add(o.ramp)
	per := (o.conns + o.procs - 1) / o.procs
	w, err := startWorkers(o.procs, "echo", "--addr", addr, "--conns", strconv.Itoa(per), "--size", strconv.Itoa(o.size),
		"--start", strconv.FormatInt(start.UnixNano(), 10), "--duration", o.duration.String())
	if err != nil {
		return nil, err
	}
	defer w.stop()
	defer showProgress(label, per*o.procs, w, nil)()
	run := &echoRun{cpu: -1}
	time.Sleep(time.Until(start))
	var before float64
	if pid != 0 {
		if before, err = cpuSeconds(pid); err != nil {
			return nil, err
		}
	}
	time.Sleep(o.duration)
	if pid != 0 {
		after, err := cpuSeconds(pid)
		if err != nil {
			return nil, err
		}
		run.cpu = after - before
	}
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	results, err := w.waitAll(wctx, "result")
	if err != nil {
		return nil, err
	}
	for _, r := range results {
		run.messages += r.Received
		run.lat = append(run.lat, r.Latencies...)
	}
	return run, nil
}

// startHelper runs `tether args...` (a server of the bench's own) in a
// process of its own, and returns the first line it prints (where it
// listens) and its pid.
func startHelper(args ...string) (line string, pid int, stop func(), err error) {
	self, err := os.Executable()
	if err != nil {
		return "", 0, nil, err
	}
	cmd := exec.Command(self, args...)
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return "", 0, nil, err
	}
	if err := cmd.Start(); err != nil {
		return "", 0, nil, err
	}
	stop = func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }
	line, err = bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		stop()
		return "", 0, nil, fmt.Errorf("%s: %w", strings.Join(args, " "), err)
	}
	return strings.TrimSpace(line), cmd.Process.Pid, stop, nil
}

// runEchoWorker holds conns clients that, from the start time and for
// the duration, send a ping and wait for its pong, over and over. It
// reports the pongs had in the window and a sample of round trips.
func runEchoWorker(c *call) error {
	var (
		addr                = c.String("addr")
		conns, size, worker = c.Int("conns"), c.Int("size"), c.Int("worker")
		duration            = c.Duration("duration")
	)
	startNanos, err := strconv.ParseInt(c.String("start"), 10, 64)
	if err != nil {
		return fail(worker, fmt.Errorf("--start: %w", err))
	}
	start := time.Unix(0, startNanos)
	end := start.Add(duration)
	ping := pingFrame(size)
	var connected, done atomic.Int64
	reportProgress(worker, &connected, &done)
	cs := make([]*echoClient, conns)
	for i := range cs {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: sourceIP(worker, i)}, Timeout: 10 * time.Second}
		nc, err := d.Dial("tcp", addr)
		if err != nil {
			return fail(worker, fmt.Errorf("connection %d: %w", i, err))
		}
		cs[i] = &echoClient{c: nc, r: bufio.NewReaderSize(nc, 4096), sample: newReservoir(20000 / max(1, conns))}
		if _, err := cs[i].readFrame(); err != nil { // the welcome
			return fail(worker, fmt.Errorf("connection %d: welcome: %w", i, err))
		}
		connected.Add(1)
	}
	if time.Now().After(start) {
		return fail(worker, fmt.Errorf("connected %d clients after the start; give --ramp more", conns))
	}
	report(workerReport{Worker: worker, Event: "connected", Conns: conns})
	time.Sleep(time.Until(start))
	var wg sync.WaitGroup
	errs := make(chan error, conns)
	for _, ec := range cs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := ec.loop(ping, end, &done); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return fail(worker, err)
	}
	var lat []float64
	for _, ec := range cs {
		lat = append(lat, ec.sample.values...)
	}
	report(workerReport{Worker: worker, Event: "result", Conns: conns, Received: int(done.Load()), Latencies: lat})
	select {} // until the parent kills us
}

// pingFrame is a length-framed chat ping whose body is size bytes (at
// least the ping itself).
func pingFrame(size int) []byte {
	body := `{"op":"ping","id":1}`
	if pad := size - len(`{"op":"ping","id":1,"data":""}`); pad > 0 {
		body = `{"op":"ping","id":1,"data":"` + strings.Repeat("x", pad) + `"}`
	}
	return appendLengthFrame(nil, []byte(body))
}

func appendLengthFrame(b, body []byte) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(body)))
	return append(b, body...)
}

type echoClient struct {
	c      net.Conn
	r      *bufio.Reader
	buf    []byte
	sample *reservoir
}

// readFrame reads one length-framed body.
func (c *echoClient) readFrame() ([]byte, error) {
	var h [4]byte
	if _, err := io.ReadFull(c.r, h[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(h[:])
	if n > 1<<20 {
		return nil, fmt.Errorf("frame of %d bytes", n)
	}
	if uint32(cap(c.buf)) < n {
		c.buf = make([]byte, n)
	}
	p := c.buf[:n]
	_, err := io.ReadFull(c.r, p)
	return p, err
}

var pongPrefix = []byte(`{"op":"pong"`)

func (c *echoClient) loop(ping []byte, end time.Time, done *atomic.Int64) error {
	defer c.c.Close()
	_ = c.c.SetDeadline(end.Add(10 * time.Second))
	for time.Now().Before(end) {
		t0 := time.Now()
		if _, err := c.c.Write(ping); err != nil {
			return err
		}
		for {
			p, err := c.readFrame()
			if err != nil {
				return err
			}
			if len(p) >= len(pongPrefix) && string(p[:len(pongPrefix)]) == string(pongPrefix) {
				break
			}
			// Anything else (a server ping) is not the answer.
		}
		c.sample.add(float64(time.Since(t0).Nanoseconds()) / 1e6)
		done.Add(1)
	}
	return nil
}

// reservoir keeps a uniform sample of at most n of the values added.
type reservoir struct {
	n      int
	seen   int
	values []float64
}

func newReservoir(n int) *reservoir { return &reservoir{n: max(1, n)} }

func (r *reservoir) add(v float64) {
	r.seen++
	if len(r.values) < r.n {
		r.values = append(r.values, v)
		return
	}
	if i := rand.IntN(r.seen); i < r.n {
		r.values[i] = v
	}
}

// runBenchEchoServer is the bare server of the echo bench: TCP, length
// framing N (body_offset 4), a welcome on connect like tether's, and for
// every frame a JSON decode of its op and id and, for a ping, the pong
// in one write(2). One goroutine per connection.
func runBenchEchoServer(c *call) error {
	ln, err := net.Listen("tcp", c.String("addr"))
	if err != nil {
		return err
	}
	fmt.Fprintln(c.out, ln.Addr().String()) // the parent reads where from the first line
	return serveEcho(ln)
}

// serveEcho serves the bare echo protocol on ln until it fails.
func serveEcho(ln net.Listener) error {
	for n := 1; ; n++ {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		go echoConn(c, n)
	}
}

func echoConn(nc net.Conn, n int) {
	defer nc.Close()
	c := &echoClient{c: nc, r: bufio.NewReaderSize(nc, 4096)}
	welcome := appendLengthFrame(nil, []byte(`{"op":"welcome","conn":"bare.`+strconv.Itoa(n)+`","node":"bare","heartbeat":{}}`))
	if _, err := nc.Write(welcome); err != nil {
		return
	}
	out := make([]byte, 0, 64)
	for {
		p, err := c.readFrame()
		if err != nil {
			return
		}
		var req struct {
			Op string          `json:"op"`
			ID json.RawMessage `json:"id"`
		}
		if json.Unmarshal(p, &req) != nil || req.Op != "ping" {
			continue
		}
		body := `{"op":"pong"}`
		if req.ID != nil {
			body = `{"op":"pong","id":` + string(req.ID) + `}`
		}
		out = appendLengthFrame(out[:0], []byte(body))
		if _, err := nc.Write(out); err != nil {
			return
		}
	}
}

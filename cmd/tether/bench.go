package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The bench commands run load against a running node from worker
// processes: one process may hold at most 20,000 descriptors here, so tens
// of thousands of clients are spread over several, each dialing from its
// own 127.x.y.z source addresses. Workers are this binary (`tether bench
// worker ...`) and report to the parent in JSON lines on stdout.

// workerReport is one line a worker prints.
type workerReport struct {
	Worker    int       `json:"worker"`
	Event     string    `json:"event"` // connected | result | error
	Conns     int       `json:"conns,omitempty"`
	Error     string    `json:"error,omitempty"`
	Latencies []float64 `json:"latencies,omitempty"` // milliseconds, one per message (room bench)
	Received  int       `json:"received,omitempty"`
	LastRecv  int64     `json:"last_recv,omitempty"` // unix nanoseconds of the last delivery
	URL       string    `json:"url,omitempty"`       // the node the worker's members are on
	Started   int64     `json:"started,omitempty"`   // unix nanoseconds the worker's first connect began (connect bench)
	Back      []int64   `json:"back,omitempty"`      // unix nanoseconds each client was back on the other node (storm bench)
	Hinted    int       `json:"hinted,omitempty"`    // clients that came back with a reconnect hint (storm bench)

}

// workers starts n worker processes with args (plus --worker i) and
// delivers their reports on the returned channel until they all exit.
type workers struct {
	cmds    []*exec.Cmd
	reports chan workerReport
	wg      sync.WaitGroup
	prog    []workerProgress // the latest progress report of each worker
}

func startWorkers(n int, args ...string) (*workers, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	w := &workers{reports: make(chan workerReport, 64), prog: make([]workerProgress, n)}
	for i := range n {
		cmd := exec.Command(self, append([]string{"bench", "worker"}, append(args, "--worker", strconv.Itoa(i))...)...)
		cmd.Stderr = os.Stderr
		out, err := cmd.StdoutPipe()
		if err != nil {
			return nil, err
		}
		if err := cmd.Start(); err != nil {
			w.stop()
			return nil, err
		}
		w.cmds = append(w.cmds, cmd)
		w.wg.Add(1)
		go func(i int, out io.Reader) {
			defer w.wg.Done()
			sc := bufio.NewScanner(out)
			sc.Buffer(make([]byte, 1<<20), 256<<20)
			for sc.Scan() {
				var r workerReport
				if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
					r = workerReport{Worker: i, Event: "error", Error: "bad report: " + sc.Text()}
				}
				if r.Event == "progress" || r.Event == "connected" {
					w.prog[i].note(r)
				}
				if r.Event == "progress" {
					continue
				}
				w.reports <- r
			}
		}(i, out)
	}
	go func() { w.wg.Wait(); close(w.reports) }()
	return w, nil
}

// waitAll waits until every worker reported event, failing on an error
// report or a worker that exits first.
func (w *workers) waitAll(ctx context.Context, event string) ([]workerReport, error) {
	var got []workerReport
	for len(got) < len(w.cmds) {
		select {
		case r, ok := <-w.reports:
			if !ok {
				return got, fmt.Errorf("workers exited; %d of %d reported %s", len(got), len(w.cmds), event)
			}
			if r.Event == "error" {
				return got, fmt.Errorf("worker %d: %s", r.Worker, r.Error)
			}
			if r.Event == event {
				got = append(got, r)
			}
		case <-ctx.Done():
			return got, fmt.Errorf("%d of %d workers reported %s: %w", len(got), len(w.cmds), event, ctx.Err())
		}
	}
	return got, nil
}

func (w *workers) stop() {
	for _, c := range w.cmds {
		_ = c.Process.Kill()
		_ = c.Wait()
	}
}

// rssBytes reads a process's resident set size from /proc.
func rssBytes(pid int) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("no VmRSS for pid %d", pid)
}

func runBenchIdle(c *call) error {
	var (
		addr, ca          = c.String("addr"), c.String("ca")
		conns, procs      = c.Int("conns"), c.Int("procs")
		heartbeat, settle = c.Duration("heartbeat"), c.Duration("settle")
		baseline          = c.Duration("baseline")
	)
	out := c.out
	pid, from, err := serverPID(c)
	if err != nil {
		return fmt.Errorf("the server's RSS cannot be measured: %w", err)
	}
	fmt.Fprintf(out, "server              pid %d (%s)\n", pid, from)
	h, err := holdIdle(c.ctx(), "idle", pid, procs, conns, baseline, settle, "idle", "--addr", addr, "--ca", ca, "--heartbeat", heartbeat.String())
	if err != nil {
		return err
	}
	total, connectTime, f := h.conns, h.connectTime, h.fig
	fmt.Fprintf(out, "connections         %d (in %s, %d worker processes)\n", total, connectTime.Round(time.Millisecond), procs)
	fmt.Fprintf(out, "server RSS before   %.1f MiB (lowest over %s at rest; it moved %.2f MiB by itself)\n", mib(f.before), baseline, mib(f.noise))
	fmt.Fprintf(out, "server RSS after    %.1f MiB (lowest over the last %s of %s)\n", mib(f.after), settle/2, settle)
	if !f.measurable() {
		fmt.Fprintf(out, "RSS per connection  not measurable with %d connections: the RSS grew %.2f MiB, and a figure wants %.2f MiB (1 MiB at least, 4 times the %.2f MiB it moved by itself): use more connections\n",
			total, mib(f.after-f.before), mib(f.threshold()), mib(f.noise))
		return nil
	}
	fmt.Fprintf(out, "RSS per connection  %.0f bytes (%.2f KiB), ± %.0f bytes\n", f.perConn(), f.perConn()/1024, float64(f.noise)/float64(f.conns))
	return nil
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

// idleHold is one hold of idle connections.
type idleHold struct {
	conns       int
	connectTime time.Duration
	fig         rssFigure
	samples     [][2]float64 // connections, RSS bytes: at rest, as the workers report connecting, then held
}

// holdIdle watches the server's RSS at rest for baseline, starts procs
// workers with args and --conns (a worker command holding idle
// connections until killed: conns in all), lets the server settle once
// they are all connected, and makes the figure of its RSS. label names
// it in the progress line.
func holdIdle(ctx context.Context, label string, pid, procs, conns int, baseline, settle time.Duration, args ...string) (*idleHold, error) {
	h := &idleHold{}
	// The server at rest: its RSS moves by itself (a collection, memory
	// returned to the system in the background), and that is the noise
	// every figure after carries.
	rest, err := sampleRSS(ctx, pid, baseline, baseline/20)
	if err != nil {
		return nil, err
	}
	h.samples = append(h.samples, [2]float64{0, float64(slices.Min(rest))})
	start := time.Now()
	w, err := startWorkers(procs, append(args, "--conns", strconv.Itoa((conns+procs-1)/procs))...)
	if err != nil {
		return nil, err
	}
	defer w.stop()
	defer showProgress(label, conns, w, nil)()
	// While connecting, a reading whenever the workers' count moved.
	stopSampling := every(100*time.Millisecond, func() {
		if n := w.connected(); n > int(h.samples[len(h.samples)-1][0]) {
			if rss, err := rssBytes(pid); err == nil {
				h.samples = append(h.samples, [2]float64{float64(n), float64(rss)})
			}
		}
	})
	wctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	reports, err := w.waitAll(wctx, "connected")
	stopSampling()
	if err != nil {
		return nil, err
	}
	for _, r := range reports {
		h.conns += r.Conns
	}
	h.connectTime = time.Since(start)
	// Let the server settle with heartbeats flowing, then take the lowest
	// RSS seen over the last half: the steady state, not a moment of
	// garbage before a collection.
	if err := sleepCtx(ctx, settle-settle/2); err != nil {
		return nil, err
	}
	held, err := sampleRSS(ctx, pid, settle/2, time.Second)
	if err != nil {
		return nil, err
	}
	for _, rss := range held {
		h.samples = append(h.samples, [2]float64{float64(h.conns), float64(rss)})
	}
	h.fig = measureRSS(rest, held, h.conns)
	return h, nil
}

// rssFigure is what bench idle makes of the server's RSS: before, the
// lowest at rest (what the server needs without the connections); after,
// the lowest with them held (the steady state); and the noise, the most
// the RSS moved by itself in either window.
type rssFigure struct {
	before, after, noise int64
	conns                int
}

// measureRSS makes the figure of the RSS samples at rest and held (with
// conns connections).
func measureRSS(rest, held []int64, conns int) rssFigure {
	lo0, hi0 := slices.Min(rest), slices.Max(rest)
	lo1, hi1 := slices.Min(held), slices.Max(held)
	return rssFigure{before: lo0, after: lo1, noise: max(hi0-lo0, hi1-lo1), conns: conns}
}

// minGrowth is the least growth of the RSS bench idle makes a figure of:
// below it, pages and the heap's room to spare (memory the server had
// already, which takes the first connections) say more than the
// connections do.
const minGrowth = 1 << 20

// threshold is the growth a figure wants: minGrowth, and four times what
// the RSS moved by itself, so that the noise is at most a quarter of it.
func (f rssFigure) threshold() int64 { return max(minGrowth, 4*f.noise) }

// measurable reports whether the connections made the RSS grow enough:
// otherwise the growth, even its sign, is noise.
func (f rssFigure) measurable() bool {
	return f.conns > 0 && f.after-f.before >= f.threshold()
}

func (f rssFigure) perConn() float64 { return float64(f.after-f.before) / float64(f.conns) }

// sampleRSS reads pid's RSS every interval over d (at least once).
func sampleRSS(ctx context.Context, pid int, d, interval time.Duration) ([]int64, error) {
	interval = max(interval, 100*time.Millisecond)
	var samples []int64
	for end := time.Now().Add(d); ; {
		rss, err := rssBytes(pid)
		if err != nil {
			return nil, err
		}
		samples = append(samples, rss)
		if time.Now().Add(interval).After(end) {
			return samples, nil
		}
		if err := sleepCtx(ctx, interval); err != nil {
			return nil, err
		}
	}
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// serverPID is the process a bench measures: --pid, or the node the
// configuration names, found as stop finds it. from says which.
//
// benchServer is serverPID for a bench whose server figures are extras:
// it says which process it measures, or why none, and returns 0 then.
func benchServer(c *call) int {
	pid, from, err := serverPID(c)
	if err != nil {
		fmt.Fprintln(c.out, "server CPU          not measured:", err)
		return 0
	}
	fmt.Fprintf(c.out, "server              pid %d (%s)\n", pid, from)
	return pid
}

func serverPID(c *call) (pid int, from string, err error) {
	if pid := c.Int("pid"); pid != 0 {
		return pid, "--pid", nil
	}
	n, err := findNode(c)
	if err != nil {
		return 0, "", fmt.Errorf("--pid not given, and the configuration names no running node: %w", err)
	}
	if n.missing != "" {
		return n.pid, fmt.Sprintf("the node answering at %s: %s", n.cfg.HTTP.Address, n.missing), nil
	}
	return n.pid, "from " + n.cfg.PIDFile, nil
}

package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
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

}

// workers starts n worker processes with args (plus --worker i) and
// delivers their reports on the returned channel until they all exit.
type workers struct {
	cmds    []*exec.Cmd
	reports chan workerReport
	wg      sync.WaitGroup
}

func startWorkers(n int, args ...string) (*workers, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	w := &workers{reports: make(chan workerReport, 64)}
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
		pid               = c.Int("pid")
		heartbeat, settle = c.Duration("heartbeat"), c.Duration("settle")
	)
	out := c.out
	if pid == 0 {
		return fmt.Errorf("--pid: the server's process id (from `tether status`)")
	}
	before, err := rssBytes(pid)
	if err != nil {
		return err
	}
	start := time.Now()
	per := (conns + procs - 1) / procs
	w, err := startWorkers(procs, "idle", "--addr", addr, "--ca", ca, "--conns", strconv.Itoa(per), "--heartbeat", heartbeat.String())
	if err != nil {
		return err
	}
	defer w.stop()
	ctx, cancel := context.WithTimeout(c.ctx(), 10*time.Minute)
	defer cancel()
	reports, err := w.waitAll(ctx, "connected")
	if err != nil {
		return err
	}
	total := 0
	for _, r := range reports {
		total += r.Conns
	}
	connectTime := time.Since(start)
	// Let the server settle with heartbeats flowing, then take the lowest
	// RSS seen over the last part: the steady state, not a moment of
	// garbage before a collection.
	deadline := time.Now().Add(settle)
	var after int64 = -1
	for time.Now().Before(deadline) {
		time.Sleep(time.Second)
		rss, err := rssBytes(pid)
		if err != nil {
			return err
		}
		if time.Until(deadline) < settle/2 && (after < 0 || rss < after) {
			after = rss
		}
	}
	fmt.Fprintf(out, "connections         %d (in %s, %d worker processes)\n", total, connectTime.Round(time.Millisecond), procs)
	fmt.Fprintf(out, "server RSS before   %.1f MiB\n", float64(before)/(1<<20))
	fmt.Fprintf(out, "server RSS after    %.1f MiB (lowest over the last %s of %s)\n", float64(after)/(1<<20), settle/2, settle)
	fmt.Fprintf(out, "RSS per connection  %.0f bytes (%.2f KiB)\n", float64(after-before)/float64(total), float64(after-before)/float64(total)/1024)
	return nil
}

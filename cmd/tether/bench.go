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

	"github.com/spf13/cobra"
)

// bench runs load against a running node from worker processes: one
// process may hold at most 20,000 descriptors here, so tens of thousands
// of clients are spread over several, each dialing from its own 127.x.y.z
// source addresses. Workers are this binary (`tether bench worker ...`)
// and report to the parent in JSON lines on stdout.
func benchCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "generate load against a running node and report figures for BENCHMARKS.md",
	}
	cmd.AddCommand(benchIdleCmd(), benchRoomCmd(), benchConnectCmd(), benchFloorCmd(), benchWorkerCmd(),
		benchPeerCmd(), benchEchoCmd(), benchEchoServerCmd())
	return cmd
}

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

func benchIdleCmd() *cobra.Command {
	var (
		addr      string
		ca        string
		conns     int
		procs     int
		pid       int
		heartbeat time.Duration
		settle    time.Duration
	)
	cmd := &cobra.Command{
		Use:   "idle",
		Short: "hold many idle TCP or WebSocket connections (heartbeats on) and report the server's RSS per connection",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			out := cmd.OutOrStdout()
			if pid == 0 {
				return fmt.Errorf("--pid: the server's process id (from `tether status`)")
			}
			h, err := holdIdle(cmd.Context(), "idle", pid, procs, conns, settle, "idle", "--addr", addr, "--ca", ca, "--heartbeat", heartbeat.String())
			if err != nil {
				return err
			}
			total, connectTime, before, after := h.conns, h.connectTime, h.before, h.after
			fmt.Fprintf(out, "connections         %d (in %s, %d worker processes)\n", total, connectTime.Round(time.Millisecond), procs)
			fmt.Fprintf(out, "server RSS before   %.1f MiB\n", float64(before)/(1<<20))
			fmt.Fprintf(out, "server RSS after    %.1f MiB (lowest over the last %s of %s)\n", float64(after)/(1<<20), settle/2, settle)
			fmt.Fprintf(out, "RSS per connection  %.0f bytes (%.2f KiB)\n", float64(after-before)/float64(total), float64(after-before)/float64(total)/1024)
			return nil
		},
	}
	cmd.Flags().StringVar(&addr, "addr", "127.0.0.1:9501", "TCP listener (length-prefix framing; tls://host:port over TLS), or a WebSocket listener's ws:// or wss:// URL")
	cmd.Flags().StringVar(&ca, "ca", "", "PEM file of the CA to trust over TLS (default: the system's roots)")
	cmd.Flags().IntVar(&conns, "conns", 19000, "connections in all")
	cmd.Flags().IntVar(&procs, "procs", 4, "worker processes")
	cmd.Flags().IntVar(&pid, "pid", 0, "the server's process id, whose RSS is measured")
	cmd.Flags().DurationVar(&heartbeat, "heartbeat", 20*time.Second, "each client sends a ping this often")
	cmd.Flags().DurationVar(&settle, "settle", 30*time.Second, "how long to hold the connections before measuring")
	return cmd
}

// idleHold is one hold of idle connections.
type idleHold struct {
	conns         int
	connectTime   time.Duration
	before, after int64        // the server's RSS before the first connect; the lowest over the last half of the settle
	samples       [][2]float64 // connections, RSS bytes: before, as the workers report connecting, every second settling
}

// holdIdle starts procs workers with args and --conns (a worker command
// holding idle connections until killed: conns in all), lets the server
// settle once they are all connected, and reads the server's RSS
// meanwhile. label names it in the progress line.
func holdIdle(ctx context.Context, label string, pid, procs, conns int, settle time.Duration, args ...string) (*idleHold, error) {
	h := &idleHold{}
	var err error
	if h.before, err = rssBytes(pid); err != nil {
		return nil, err
	}
	start := time.Now()
	w, err := startWorkers(procs, append(args, "--conns", strconv.Itoa((conns+procs-1)/procs))...)
	if err != nil {
		return nil, err
	}
	defer w.stop()
	defer showProgress(label, conns, w, nil)()
	sample := func() error {
		rss, err := rssBytes(pid)
		h.samples = append(h.samples, [2]float64{float64(w.connected()), float64(rss)})
		return err
	}
	// While connecting, a reading whenever the workers' count moved.
	h.samples = append(h.samples, [2]float64{0, float64(h.before)})
	stopSampling := every(100*time.Millisecond, func() {
		if n := w.connected(); n > int(h.samples[len(h.samples)-1][0]) {
			_ = sample()
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
	// Let the server settle with heartbeats flowing, then take the
	// lowest RSS seen over the last part: the steady state, not a
	// moment of garbage before a collection.
	deadline := time.Now().Add(settle)
	h.after = -1
	for time.Now().Before(deadline) {
		time.Sleep(time.Second)
		if err := sample(); err != nil {
			return nil, err
		}
		h.samples[len(h.samples)-1][0] = float64(h.conns)
		rss := int64(h.samples[len(h.samples)-1][1])
		if time.Until(deadline) < settle/2 && (h.after < 0 || rss < h.after) {
			h.after = rss
		}
	}
	if h.after < 0 {
		return nil, fmt.Errorf("settle %s: no reading", settle)
	}
	return h, nil
}

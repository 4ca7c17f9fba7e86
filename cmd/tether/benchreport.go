package main

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// What the bench commands show while they run and write when they end:
// a progress line on stderr once a second, a summary table (tether,
// the other server, their ratio) on stdout, and with --out the same
// figures and the raw series (latencies, RSS against connections) in
// JSON or CSV for bench/charts.py.

// workerProgress is the latest progress report of one worker.
type workerProgress struct {
	conns, received atomic.Int64
}

func (p *workerProgress) note(r workerReport) {
	p.conns.Store(int64(r.Conns))
	p.received.Store(int64(r.Received))
}

// connected is how many connections the workers hold or have made, by
// their latest progress reports.
func (w *workers) connected() int {
	n := int64(0)
	for i := range w.prog {
		n += w.prog[i].conns.Load()
	}
	return int(n)
}

// received is how many messages the workers have had, by their latest
// progress reports.
func (w *workers) received() int64 {
	n := int64(0)
	for i := range w.prog {
		n += w.prog[i].received.Load()
	}
	return n
}

// progressOut is where progress lines go.
var progressOut io.Writer = os.Stderr

// everySecond calls f once a second until the returned stop is called;
// stop returns once f is no longer running.
func everySecond(f func()) (stop func()) { return every(time.Second, f) }

// every calls f every d until the returned stop is called; stop returns
// once f is no longer running.
func every(d time.Duration, f func()) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(d)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				f()
			}
		}
	}()
	var once sync.Once
	return func() { once.Do(func() { close(done); wg.Wait() }) }
}

// showProgress prints a progress line on stderr once a second until
// stopped: what runs, for how long, the workers' connections (of total,
// when known) and messages, and sent (when not nil).
func showProgress(label string, total int, w *workers, sent *atomic.Int64) (stop func()) {
	start := time.Now()
	return everySecond(func() {
		fmt.Fprintln(progressOut, progressLine(label, time.Since(start), w.connected(), total, w.received(), sent))
	})
}

func progressLine(label string, elapsed time.Duration, conns, total int, received int64, sent *atomic.Int64) string {
	line := fmt.Sprintf("[%s] %6.1fs  connected %d", label, elapsed.Seconds(), conns)
	if total > 0 {
		line += "/" + strconv.Itoa(total)
	}
	if sent != nil {
		line += fmt.Sprintf("  sent %d", sent.Load())
	}
	if received > 0 || sent != nil {
		line += fmt.Sprintf("  received %d", received)
	}
	return line
}

// reportProgress, in a worker, reports its connections and messages to
// the parent four times a second until the process ends (the idle bench
// reads the server's RSS against them).
func reportProgress(worker int, conns, received *atomic.Int64) {
	go func() {
		for {
			time.Sleep(250 * time.Millisecond)
			r := workerReport{Worker: worker, Event: "progress", Conns: int(conns.Load())}
			if received != nil {
				r.Received = int(received.Load())
			}
			report(r)
		}
	}()
}

// benchResult is what a comparing bench found: its summary rows and,
// for charts, the raw series of each side.
type benchResult struct {
	Bench    string             `json:"bench"`    // peer, echo
	Scenario string             `json:"scenario"` // idle, connect, room, echo
	Sides    [2]string          `json:"sides"`    // tether and what it is compared with: socket.io, bare
	Params   map[string]any     `json:"params"`
	Machine  machineInfo        `json:"machine"`
	Time     time.Time          `json:"time"`
	Rows     []summaryRow       `json:"rows"`
	Series   map[string]*series `json:"series"` // by side
}

// summaryRow is one figure of both sides. Ratio is tether / the other.
type summaryRow struct {
	Metric string  `json:"metric"`
	Unit   string  `json:"unit"`
	Tether float64 `json:"tether"`
	Other  float64 `json:"other"`
	Ratio  float64 `json:"ratio"`
	Better string  `json:"better,omitempty"` // lower | higher
}

// series are one side's raw figures.
type series struct {
	LatencyMs []float64    `json:"latency_ms,omitempty"` // per message (room: send to last member; echo: a sample of round trips)
	RSS       [][2]float64 `json:"rss,omitempty"`        // connections, server RSS bytes
}

func newResult(bench, scenario, other string, params map[string]any) *benchResult {
	return &benchResult{
		Bench: bench, Scenario: scenario, Sides: [2]string{"tether", other}, Params: params,
		Machine: machine(), Time: time.Now().UTC().Round(time.Second),
		Series: map[string]*series{"tether": {}, other: {}},
	}
}

// add appends a row; better says which way is better (lower or higher).
func (r *benchResult) add(metric, unit string, tether, other float64, better string) {
	ratio := tether / other
	if other == 0 {
		ratio = 0
	}
	r.Rows = append(r.Rows, summaryRow{Metric: metric, Unit: unit, Tether: tether, Other: other, Ratio: ratio, Better: better})
}

// writeTable prints the summary: one row per figure, aligned columns.
func (r *benchResult) writeTable(w io.Writer) {
	header := []string{r.Scenario, "unit", r.Sides[0], r.Sides[1], r.Sides[0] + "/" + r.Sides[1], ""}
	rows := [][]string{header}
	for _, s := range r.Rows {
		note := ""
		if s.Better != "" {
			note = s.Better + " is better"
		}
		ratio := "-"
		if s.Other != 0 {
			ratio = fmt.Sprintf("%.2fx", s.Ratio)
		}
		rows = append(rows, []string{s.Metric, s.Unit, figure(s.Tether), figure(s.Other), ratio, note})
	}
	widths := make([]int, len(header))
	for _, row := range rows {
		for i, c := range row {
			widths[i] = max(widths[i], len([]rune(c)))
		}
	}
	for j, row := range rows {
		var b strings.Builder
		for i, c := range row {
			pad := strings.Repeat(" ", widths[i]-len([]rune(c)))
			switch {
			case i == 0 || i == 1 || i == len(row)-1: // text: left aligned
				b.WriteString(c + pad)
			default: // figures: right aligned
				b.WriteString(pad + c)
			}
			if i < len(row)-1 {
				b.WriteString("  ")
			}
		}
		fmt.Fprintln(w, strings.TrimRight(b.String(), " "))
		if j == 0 {
			total := 2 * (len(widths) - 1)
			for _, wd := range widths {
				total += wd
			}
			fmt.Fprintln(w, strings.Repeat("-", total-widths[len(widths)-1]))
		}
	}
}

// figure writes a number with three significant digits at least, and
// thousands apart: 0.0123, 1.23, 123, 12,345.
func figure(x float64) string {
	switch {
	case x != x: // NaN
		return "-"
	case x == 0:
		return "0"
	case x < 0:
		return "-" + figure(-x)
	case x < 0.01:
		return strconv.FormatFloat(x, 'g', 3, 64)
	case x < 10:
		return strconv.FormatFloat(x, 'f', 2, 64)
	case x < 100:
		return strconv.FormatFloat(x, 'f', 1, 64)
	}
	s := strconv.FormatFloat(x, 'f', 0, 64)
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

// save writes the result to each of paths (comma separated): JSON (the
// whole of it), or CSV (the summary rows, one line per figure) for a
// path ending in .csv. An existing JSON file holding a list gets the
// result appended, and an existing CSV file its rows, so that a
// script's runs gather in one file.
func (r *benchResult) save(paths string) error {
	for _, path := range strings.Split(paths, ",") {
		if path == "" {
			continue
		}
		if err := r.saveTo(path); err != nil {
			return err
		}
	}
	return nil
}

func (r *benchResult) saveTo(path string) error {
	if strings.HasSuffix(path, ".csv") {
		return r.saveCSV(path)
	}
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	return appendRawJSON(path, b)
}

// appendRawJSON appends b to the JSON list in path (none: a new list).
func appendRawJSON(path string, b []byte) error {
	var all []json.RawMessage
	if old, err := os.ReadFile(path); err == nil && len(bytes.TrimSpace(old)) > 0 {
		if err := json.Unmarshal(old, &all); err != nil {
			return fmt.Errorf("%s: not a JSON list of results: %w", path, err)
		}
	}
	all = append(all, b)
	out, err := json.MarshalIndent(all, "", " ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(out, '\n'), 0o644)
}

var csvHeader = []string{"time", "bench", "scenario", "other", "metric", "unit", "tether", "other_value", "ratio"}

func (r *benchResult) saveCSV(path string) error {
	_, err := os.Stat(path)
	fresh := err != nil
	f, err := os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	w := csv.NewWriter(f)
	if fresh {
		_ = w.Write(csvHeader)
	}
	for _, s := range r.Rows {
		_ = w.Write([]string{r.Time.Format(time.RFC3339), r.Bench, r.Scenario, r.Sides[1], s.Metric, s.Unit,
			strconv.FormatFloat(s.Tether, 'g', 6, 64), strconv.FormatFloat(s.Other, 'g', 6, 64), strconv.FormatFloat(s.Ratio, 'f', 3, 64)})
	}
	w.Flush()
	return w.Error()
}

// machineInfo says where a result was measured.
type machineInfo struct {
	CPUs     int     `json:"cpus"`
	CPU      string  `json:"cpu"`
	Kernel   string  `json:"kernel"`
	Go       string  `json:"go"`
	Node     string  `json:"node,omitempty"`
	SocketIO string  `json:"socket_io,omitempty"`
	Load1    float64 `json:"load1"` // load average at the end of the run
}

// peerDir is where the Socket.IO peer lives (bench/peer), for its version.
var peerDir = "bench/peer"

func machine() machineInfo {
	m := machineInfo{CPUs: runtime.NumCPU(), Go: runtime.Version()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		if f := strings.Fields(string(b)); len(f) > 0 {
			m.Load1, _ = strconv.ParseFloat(f[0], 64)
		}
	}
	if out, err := exec.Command("node", "--version").Output(); err == nil {
		m.Node = strings.TrimSpace(string(out))
	}
	var pkg struct {
		Version string `json:"version"`
	}
	if b, err := os.ReadFile(filepath.Join(peerDir, "node_modules", "socket.io", "package.json")); err == nil && json.Unmarshal(b, &pkg) == nil {
		m.SocketIO = pkg.Version
	}
	return m
}

// describe is the machine in one line, for the top of a report.
func (m machineInfo) describe() string {
	s := fmt.Sprintf("%d cores %s, Linux %s, %s, load %.1f", m.CPUs, m.CPU, m.Kernel, m.Go, m.Load1)
	if m.Node != "" {
		s += ", node " + m.Node
	}
	if m.SocketIO != "" {
		s += ", socket.io " + m.SocketIO
	}
	return s
}

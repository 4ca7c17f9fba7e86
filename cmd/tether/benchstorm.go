package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"gopkg.in/yaml.v3"

	"tether/client"
	"tether/config"
)

// runBenchStorm measures what a node's clients coming back at once cost
// the node they come to, against the same clients drained (see its help
// in commands.go). The node under test, B, is the one the configuration
// names; the bench runs the node they leave, A, itself, once per arm,
// on B's NATS.
func runBenchStorm(c *call) error {
	cfg, err := c.config()
	if err != nil {
		return err
	}
	o := &stormBench{
		cfg: cfg, url: c.String("url"), listener: c.String("listener"), pid: benchServer(c),
		conns: c.Int("conns"), procs: c.Int("procs"), drainRate: c.Int("drain-rate"), room: c.String("room"),
		probeMembers: c.Int("probe-members"), probeRate: c.Int("probe-rate"), out: c.out,
	}
	return o.run(c.ctx())
}

type stormBench struct {
	cfg                     *config.Config // B's
	url                     string         // B's WebSocket listener, where the clients come back
	listener                string
	pid                     int
	conns, procs, drainRate int
	room                    string
	probeMembers, probeRate int
	out                     io.Writer
}

// stormArm is one way of stopping A: all at once, or drained.
type stormArm struct {
	name     string
	shutdown config.Shutdown
}

// stormResult is one arm's figures.
type stormResult struct {
	back          []time.Duration // per client, from A's stop until it was back on B
	queue, kernel int             // peak of B's accept queue, and of its listen socket's backlog
	cpu           float64         // B's CPU seconds from A's stop until the last was back; <0 unknown
	probe         []float64       // ms, per delivery of the probe room's messages sent meanwhile
	hinted        int
}

func (o *stormBench) run(ctx context.Context) error {
	if o.cfg.Listener(o.listener) == nil {
		return fmt.Errorf("--listener %s: the configuration has no listener of that name", o.listener)
	}
	natsURL, err := o.natsURL()
	if err != nil {
		return err
	}
	arms := []stormArm{
		{name: "storm: all at once", shutdown: config.Shutdown{Timeout: config.Duration(2 * time.Minute), DrainBatch: 0, DrainInterval: config.Duration(time.Second)}},
		{name: fmt.Sprintf("drain: %d/s", o.drainRate), shutdown: config.Shutdown{
			Timeout: config.Duration(time.Duration(o.conns/max(1, o.drainRate))*time.Second + 2*time.Minute), DrainBatch: o.drainRate,
			DrainInterval: config.Duration(time.Second), RetryJitter: config.Duration(time.Second),
		}},
	}
	probe, err := startProbe(o.url, o.probeMembers, o.probeRate)
	if err != nil {
		return fmt.Errorf("probe room: %w", err)
	}
	defer probe.stop()
	fmt.Fprintf(o.out, "clients             %d WebSocket clients (%d worker processes) on a node A that the bench runs on B's NATS; they come back to B, %s\n", o.conns, o.procs, o.url)
	fmt.Fprintf(o.out, "probe               a room of %d members on B, %d messages a second: its delivery latency while they come back\n", o.probeMembers, o.probeRate)
	var results []*stormResult
	for _, arm := range arms {
		res, err := o.arm(ctx, natsURL, arm, probe)
		if err != nil {
			return fmt.Errorf("%s: %w", arm.name, err)
		}
		results = append(results, res)
		o.print(arm, res)
	}
	fmt.Fprintln(o.out)
	fmt.Fprintf(o.out, "%-22s %24s %18s %14s %10s %22s\n", "", "all back (p50, p99)", "peak accept queue", "kernel backlog", "B's CPU", "probe p50 / p99 / max")
	for i, arm := range arms {
		r := results[i]
		fmt.Fprintf(o.out, "%-22s %24s %18d %14d %10s %22s\n", arm.name,
			fmt.Sprintf("%s (%s, %s)", dur(r.pct(1)), dur(r.pct(0.5)), dur(r.pct(0.99))), r.queue, r.kernel, cpuText(r.cpu),
			fmt.Sprintf("%.1f / %.1f / %.1f ms", percentile(r.probe, 0.5), percentile(r.probe, 0.99), percentile(r.probe, 1)))
	}
	return nil
}

func (r *stormResult) pct(p float64) time.Duration {
	if len(r.back) == 0 {
		return 0
	}
	i := min(len(r.back)-1, max(0, int(float64(len(r.back))*p+0.999999)-1))
	return r.back[i]
}

func dur(d time.Duration) string { return d.Round(10 * time.Millisecond).String() }

func cpuText(cpu float64) string {
	if cpu < 0 {
		return "unknown"
	}
	return fmt.Sprintf("%.2f s", cpu)
}

func (o *stormBench) print(arm stormArm, r *stormResult) {
	fmt.Fprintln(o.out)
	fmt.Fprintf(o.out, "%s\n", arm.name)
	fmt.Fprintf(o.out, "  back on B         all %s after A's stop (p50 %s, p99 %s); %d of %d with a hint\n", dur(r.pct(1)), dur(r.pct(0.5)), dur(r.pct(0.99)), r.hinted, len(r.back))
	fmt.Fprintf(o.out, "  accept queue      peak %d on B (tether_accept_queue), %d in its listen socket's backlog\n", r.queue, r.kernel)
	fmt.Fprintf(o.out, "  B's CPU           %s meanwhile\n", cpuText(r.cpu))
	fmt.Fprintf(o.out, "  probe room        %d deliveries meanwhile: p50 %.1f ms, p99 %.1f ms, max %.1f ms\n", len(r.probe),
		percentile(r.probe, 0.5), percentile(r.probe, 0.99), percentile(r.probe, 1))
}

// natsURL is where A finds B's NATS, with B's credentials.
func (o *stormBench) natsURL() (string, error) {
	n := o.cfg.NATS
	if n.URL != "" {
		return n.URL, nil
	}
	if n.User == "" && n.Token == "" {
		return "", errors.New("B's embedded NATS requires a password generated per boot, which the bench's node cannot know: set nats.user and nats.password (or nats.token) in B's configuration")
	}
	if n.Embedded.Port <= 0 {
		return "", fmt.Errorf("B's nats.embedded.port is %d: give it a fixed port, where the bench's node connects", n.Embedded.Port)
	}
	return fmt.Sprintf("nats://%s", net.JoinHostPort(n.Embedded.Host, strconv.Itoa(n.Embedded.Port))), nil
}

// arm runs one arm: A up with the clients on it, then stopped as the arm
// says, while B is watched until every client is back on it.
func (o *stormBench) arm(ctx context.Context, natsURL string, arm stormArm, probe *probeRoom) (*stormResult, error) {
	a, err := o.startA(ctx, natsURL, arm.shutdown)
	if err != nil {
		return nil, err
	}
	defer a.kill()
	per := (o.conns + o.procs - 1) / o.procs
	w, err := startWorkers(o.procs, "storm", "--urls", a.url+","+o.url, "--conns", strconv.Itoa(per), "--room", o.room)
	if err != nil {
		return nil, err
	}
	defer w.stop()
	wctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	connectStart := time.Now()
	if _, err := w.waitAll(wctx, "connected"); err != nil {
		return nil, err
	}
	fmt.Fprintf(o.out, "\n%s: %d clients on A in %s; stopping A\n", arm.name, per*o.procs, time.Since(connectStart).Round(time.Millisecond))

	res := &stormResult{cpu: -1}
	watch := o.watchB(wctx)
	cpuBefore := 0.0
	if o.pid != 0 {
		if cpuBefore, err = cpuSeconds(o.pid); err != nil {
			return nil, err
		}
	}
	probe.mark()
	stopped := time.Now()
	if err := a.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		return nil, err
	}
	reports, err := w.waitAll(wctx, "result")
	if err != nil {
		return nil, err
	}
	if o.pid != 0 {
		after, err := cpuSeconds(o.pid)
		if err != nil {
			return nil, err
		}
		res.cpu = after - cpuBefore
	}
	res.probe = probe.since()
	res.queue, res.kernel = watch()
	for _, r := range reports {
		res.hinted += r.Hinted
		for _, at := range r.Back {
			res.back = append(res.back, time.Duration(at-stopped.UnixNano()))
		}
	}
	slices.Sort(res.back)
	// The clients leave B before the next arm: B back at rest.
	w.stop()
	if err := o.waitQuiet(wctx); err != nil {
		return nil, err
	}
	return res, nil
}

// stormNode is A: a tether serve process of the bench's.
type stormNode struct {
	cmd *exec.Cmd
	dir string
	url string
}

func (a *stormNode) kill() {
	if a.cmd.ProcessState == nil {
		_ = a.cmd.Process.Kill()
		_ = a.cmd.Wait()
	}
	_ = os.RemoveAll(a.dir)
}

// startA runs A: B's configuration with one listener, B's --listener on
// a port of its own, on B's NATS, stopping as shutdown says.
func (o *stormBench) startA(ctx context.Context, natsURL string, shutdown config.Shutdown) (*stormNode, error) {
	dir, err := os.MkdirTemp("", "tether-storm-")
	if err != nil {
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	httpPort, err := freePort()
	if err != nil {
		return nil, err
	}
	acfg := *o.cfg
	acfg.Node.Name = "storm-a"
	acfg.Node.AcceptsPerSecond = 0
	acfg.PIDFile = filepath.Join(dir, "a.pid")
	acfg.Log = config.Log{Level: "warn", Format: "json"}
	acfg.HTTP = config.HTTP{Address: fmt.Sprintf("127.0.0.1:%d", httpPort)}
	acfg.NATS.URL = natsURL
	l := *o.cfg.Listener(o.listener)
	l.Address, l.PublicURL = fmt.Sprintf("127.0.0.1:%d", port), ""
	acfg.Listeners = []config.Listener{l}
	acfg.Shutdown = shutdown
	body, err := yaml.Marshal(&acfg)
	if err != nil {
		return nil, err
	}
	path := filepath.Join(dir, "a.yaml")
	if err := os.WriteFile(path, body, 0o600); err != nil {
		return nil, err
	}
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	a := &stormNode{dir: dir, url: fmt.Sprintf("ws://127.0.0.1:%d%s", port, l.Path)}
	a.cmd = exec.Command(self, "serve", "-c", path)
	a.cmd.Stderr = os.Stderr
	if err := a.cmd.Start(); err != nil {
		return nil, err
	}
	// Ready: its listener answers, and it knows B (for its hints).
	deadline := time.Now().Add(time.Minute)
	for {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/readyz", httpPort))
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return a, nil
			}
		}
		if time.Now().After(deadline) {
			a.kill()
			return nil, fmt.Errorf("node A (%s) not ready within a minute", path)
		}
		if err := sleepCtx(ctx, 100*time.Millisecond); err != nil {
			a.kill()
			return nil, err
		}
	}
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// watchB samples, every 20ms until the returned function is called, B's
// accept queue (its /metrics) and its listen socket's backlog (the
// kernel's accept queue, /proc/net/tcp), and returns their peaks.
func (o *stormBench) watchB(ctx context.Context) func() (queue, kernel int) {
	port := 0
	if u, err := url.Parse(o.url); err == nil {
		port, _ = strconv.Atoi(u.Port())
	}
	metrics := "http://" + dialable(o.cfg.HTTP.Address) + "/metrics"
	var q, k atomic.Int64
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		for {
			if v, err := scrapeGauge(ctx, metrics, "tether_accept_queue"); err == nil && int64(v) > q.Load() {
				q.Store(int64(v))
			}
			if v, err := listenBacklog(port); err == nil && int64(v) > k.Load() {
				k.Store(int64(v))
			}
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	return func() (int, int) {
		close(done)
		<-stopped
		return int(q.Load()), int(k.Load())
	}
}

// waitQuiet waits until B holds no more than the probe's connections.
func (o *stormBench) waitQuiet(ctx context.Context) error {
	metrics := "http://" + dialable(o.cfg.HTTP.Address) + "/metrics"
	for {
		v, err := scrapeGauge(ctx, metrics, "tether_connections")
		if err == nil && int(v) <= o.probeMembers+1 {
			return nil
		}
		if err := sleepCtx(ctx, 200*time.Millisecond); err != nil {
			return fmt.Errorf("B still holds %v connections: %w", v, err)
		}
	}
}

// scrapeGauge sums the series of one metric of a /metrics page.
func scrapeGauge(ctx context.Context, url, name string) (float64, error) {
	sum, found := 0.0, false
	err := httpGet(ctx, url, func(body io.Reader) error {
		sc := bufio.NewScanner(body)
		for sc.Scan() {
			line := sc.Text()
			if !strings.HasPrefix(line, name+" ") && !strings.HasPrefix(line, name+"{") {
				continue
			}
			v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
			if err == nil {
				sum, found = sum+v, true
			}
		}
		return sc.Err()
	})
	if err == nil && !found {
		err = fmt.Errorf("%s: no %s", url, name)
	}
	return sum, err
}

// listenBacklog is how many connections wait in the kernel's accept queue
// of the listening socket on port (the rx_queue of its LISTEN line in
// /proc/net/tcp and tcp6).
func listenBacklog(port int) (int, error) {
	total, found := 0, false
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n")[1:] {
			fields := strings.Fields(line)
			if len(fields) < 5 || fields[3] != "0A" { // 0A: LISTEN
				continue
			}
			local := fields[1]
			p, err := strconv.ParseInt(local[strings.LastIndexByte(local, ':')+1:], 16, 32)
			if err != nil || int(p) != port {
				continue
			}
			queues := fields[4] // tx_queue:rx_queue
			rx, err := strconv.ParseInt(queues[strings.IndexByte(queues, ':')+1:], 16, 64)
			if err == nil {
				total, found = total+int(rx), true
			}
		}
	}
	if !found {
		return 0, fmt.Errorf("no listening socket on port %d", port)
	}
	return total, nil
}

// probeRoom is a room of B's that the bench watches while the clients
// come back: members, and a sender at a steady rate.
type probeRoom struct {
	sender  *client.Client
	members []*client.Client
	stopped chan struct{}

	mu   sync.Mutex
	from int64     // unix nanos: deliveries of messages sent from then on count
	lat  []float64 // ms, per delivery since from
}

func startProbe(wsURL string, members, rate int) (*probeRoom, error) {
	p := &probeRoom{stopped: make(chan struct{}), from: time.Now().UnixNano()}
	const room = "storm-probe"
	dial := func() (*client.Client, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c, err := client.DialWebSocket(ctx, wsURL)
		if err != nil {
			return nil, err
		}
		if _, err := c.Call(client.Request{Op: "join", Room: room, Name: "probe"}); err != nil {
			c.Close()
			return nil, err
		}
		return c, nil
	}
	for range members {
		c, err := dial()
		if err != nil {
			p.stop()
			return nil, err
		}
		p.members = append(p.members, c)
		go p.member(c)
	}
	sender, err := dial()
	if err != nil {
		p.stop()
		return nil, err
	}
	p.sender = sender
	go func() {
		for {
			if _, err := sender.RecvRaw(); err != nil {
				return
			}
		}
	}()
	go func() {
		tick := time.NewTicker(time.Second / time.Duration(max(1, rate)))
		defer tick.Stop()
		for {
			select {
			case <-p.stopped:
				return
			case <-tick.C:
			}
			data := fmt.Sprintf(`{"t":%d}`, time.Now().UnixNano())
			if sender.SendRaw([]byte(`{"op":"send","room":"`+room+`","data":`+data+`}`)) != nil {
				return
			}
		}
	}()
	return p, nil
}

func (p *probeRoom) member(c *client.Client) {
	for {
		b, err := c.RecvRaw()
		if err != nil {
			return
		}
		now := time.Now().UnixNano()
		sent, ok := number(b, tKey)
		if !ok {
			continue
		}
		p.mu.Lock()
		if sent >= p.from {
			p.lat = append(p.lat, float64(now-sent)/1e6)
		}
		p.mu.Unlock()
	}
}

// mark starts counting the deliveries of messages sent from now on.
func (p *probeRoom) mark() {
	p.mu.Lock()
	p.from, p.lat = time.Now().UnixNano(), nil
	p.mu.Unlock()
}

// since is the latencies since mark, sorted.
func (p *probeRoom) since() []float64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := slices.Clone(p.lat)
	slices.Sort(out)
	return out
}

func (p *probeRoom) stop() {
	select {
	case <-p.stopped:
	default:
		close(p.stopped)
	}
	if p.sender != nil {
		p.sender.Close()
	}
	for _, c := range p.members {
		c.Close()
	}
}

// runStormWorker holds clients of the storm bench: Reconnecting clients
// on A (the first of --urls), which come back on B when A stops; it
// reports when each of them was back.
func runStormWorker(c *call) error {
	var (
		urls          = strings.Split(c.String("urls"), ",")
		conns, worker = c.Int("conns"), c.Int("worker")
		room          = c.String("room")
	)
	back := make([]int64, conns)
	var moved, hinted atomic.Int64
	all := make(chan struct{})
	next := make(chan int, conns)
	for i := range conns {
		next <- i
	}
	close(next)
	errs := make(chan error, 1)
	var wg sync.WaitGroup
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if err := stormClient(urls, room, worker, i, func(rc *client.Reconnect) {
					if back[i] != 0 {
						return // it was back already
					}
					back[i] = rc.At.UnixNano()
					if rc.Hint != nil {
						hinted.Add(1)
					}
					if moved.Add(1) == int64(conns) {
						close(all)
					}
				}); err != nil {
					select {
					case errs <- fmt.Errorf("client %d: %w", i, err):
					default:
					}
					return
				}
			}
		}()
	}
	wg.Wait()
	select {
	case err := <-errs:
		return fail(worker, err)
	default:
	}
	report(workerReport{Worker: worker, Event: "connected", Conns: conns})
	<-all
	report(workerReport{Worker: worker, Event: "result", Back: back, Hinted: int(hinted.Load())})
	select {} // until the parent kills us
}

// stormClient connects one client of the storm bench from its own source
// address, joins room (if any), and reads until the process ends.
func stormClient(urls []string, room string, worker, i int, back func(*client.Reconnect)) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	r, err := client.Connect(ctx, client.ReconnectOptions{
		URLs: urls,
		Dial: func(ctx context.Context, url string) (*client.Client, error) {
			return client.DialWebSocketWith(ctx, url, client.WebSocketOptions{Local: sourceIP(worker, i)})
		},
		// Under a storm a welcome may wait its turn in B's accept queue.
		DialTimeout: time.Minute,
		Ping:        20 * time.Second,
		OnReconnect: back,
	})
	if err != nil {
		return err
	}
	if room != "" {
		if _, err := r.Join(client.Request{Room: room, Name: fmt.Sprintf("s%d-%d", worker, i)}); err != nil {
			return err
		}
	}
	go func() {
		for {
			if _, err := r.Recv(); err != nil {
				return
			}
		}
	}()
	return nil
}

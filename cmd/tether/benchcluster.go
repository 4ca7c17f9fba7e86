package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"tether/actors/node"
)

// The room bench across a cluster (bench/cluster-90k): with --pids (one
// per node) the server CPU per delivery is summed over the nodes and
// each node's RSS reported; with --metrics (each node's admin server)
// the NATS messages a room message costs, from the nodes'
// tether_nats_published_total and tether_nats_received_total over the
// sends; with --kill-pid (a node of --url, --kill-url) that node is
// SIGKILLed once the figures are taken, its members still joined, and
// the bench measures how long until the room on every other node (its
// admin API, so --metrics too) no longer counts them.

// clusterOpts are bench room's flags for a cluster (commands.go).
type clusterOpts struct {
	pids     string        // --pids
	metrics  string        // --metrics
	killPID  int           // --kill-pid
	killURL  string        // --kill-url
	out      string        // --out
	deadline time.Duration // --kill-wait
}

func (c *clusterOpts) active() bool {
	return c.pids != "" || c.metrics != "" || c.killPID != 0 || c.out != ""
}

// clusterResult is what the cluster run found, as --out writes it.
type clusterResult struct {
	Bench            string             `json:"bench"` // cluster
	Time             time.Time          `json:"time"`
	Machine          machineInfo        `json:"machine"`
	Nodes            int                `json:"nodes"`
	Members          int                `json:"members"`
	Messages         int                `json:"messages"`
	Rate             int                `json:"rate"`
	Delivered        int                `json:"delivered"`
	P50Ms            float64            `json:"p50_ms"` // send to last member, whole room
	P99Ms            float64            `json:"p99_ms"`
	PerNodeP99Ms     map[string]float64 `json:"per_node_p99_ms"`
	CPUPerDeliveryUs float64            `json:"cpu_per_delivery_us"` // summed over the nodes
	CPUSeconds       []float64          `json:"cpu_seconds"`         // per node, over the sends
	RSSBytes         []int64            `json:"rss_bytes"`           // per node, at the end of the sends
	NATSPublished    map[string]float64 `json:"nats_published"`      // by kind, summed over the nodes, over the sends
	NATSReceived     map[string]float64 `json:"nats_received"`
	NATSPerMessage   [2]float64         `json:"nats_per_room_message"` // published, received
	KilledMembers    int                `json:"killed_members,omitempty"`
	GoneAfterMs      map[string]float64 `json:"gone_after_ms,omitempty"` // per surviving node: kill to its last left
	GoneEverywhereMs float64            `json:"gone_everywhere_ms,omitempty"`
	LatencyMs        []float64          `json:"latency_ms,omitempty"`
}

// runCluster runs the room bench with the cluster's figures.
func (o *roomBench) runCluster(ctx context.Context, out io.Writer, c *clusterOpts) error {
	if !c.active() {
		return o.run(ctx, out)
	}
	if o.floor || o.historyRoom != "" {
		return fmt.Errorf("--pids, --metrics, --kill-pid and --out take neither --floor nor --history-room")
	}
	var pids []int
	for _, s := range splitList(c.pids) {
		p, err := strconv.Atoi(s)
		if err != nil {
			return fmt.Errorf("--pids: %q", s)
		}
		pids = append(pids, p)
	}
	metrics := splitList(c.metrics)
	urls := splitList(o.url)
	if c.killPID != 0 && !slices.Contains(urls, c.killURL) {
		return fmt.Errorf("--kill-url %q: not one of --url", c.killURL)
	}
	if c.killPID != 0 && len(metrics) != len(urls) {
		return fmt.Errorf("--kill-pid needs --metrics: the admin servers of the --url nodes, in their order")
	}
	r := &clusterResult{Bench: "cluster", Nodes: len(urls), Members: o.members, Messages: o.messages, Rate: o.rate}
	var cpuBefore []float64
	var pubBefore, recvBefore map[string]float64
	o.beforeSend = func() error {
		var err error
		if cpuBefore, err = cpuOf(pids); err != nil {
			return err
		}
		pubBefore, recvBefore, err = natsCounts(ctx, metrics)
		return err
	}
	var last *roomResult
	o.afterMeasure = func(res *roomResult) error {
		last = res
		after, err := cpuOf(pids)
		if err != nil {
			return err
		}
		total := 0.0
		for i := range after {
			r.CPUSeconds = append(r.CPUSeconds, after[i]-cpuBefore[i])
			total += after[i] - cpuBefore[i]
		}
		if len(pids) > 0 {
			res.cpu = total // the room bench's own figure, summed over the nodes
		}
		for _, p := range pids {
			rss, err := rssBytes(p)
			if err != nil {
				return err
			}
			r.RSSBytes = append(r.RSSBytes, rss)
		}
		pub, recv, err := natsCounts(ctx, metrics)
		if err != nil {
			return err
		}
		r.NATSPublished, r.NATSReceived = diff(pub, pubBefore), diff(recv, recvBefore)
		if c.killPID != 0 {
			return o.killNode(ctx, c, urls, metrics, r)
		}
		return nil
	}
	err := o.run(ctx, out)
	if last == nil {
		return err
	}
	res := last
	r.Time, r.Machine = time.Now().UTC().Round(time.Second), machine()
	r.Delivered = res.delivered
	r.P50Ms, r.P99Ms = res.latency(0.50), res.latency(0.99)
	r.PerNodeP99Ms = map[string]float64{}
	for url, lat := range res.lastMember {
		if url != "" {
			s := slices.Clone(lat)
			slices.Sort(s)
			r.PerNodeP99Ms[url] = percentile(s, 0.99)
		}
	}
	r.LatencyMs = res.lastMember[""]
	if res.delivered > 0 && res.cpu >= 0 {
		r.CPUPerDeliveryUs = res.cpuPerDelivery() * 1e6
	}
	r.NATSPerMessage = [2]float64{sum(r.NATSPublished) / float64(o.messages), sum(r.NATSReceived) / float64(o.messages)}
	r.print(out)
	if serr := appendJSON(c.out, r); serr != nil && err == nil {
		err = serr
	}
	return err
}

func (r *clusterResult) print(out io.Writer) {
	fmt.Fprintln(out)
	fmt.Fprintf(out, "cluster             %d nodes, %d members in one room, %d messages at %d/s\n", r.Nodes, r.Members, r.Messages, r.Rate)
	fmt.Fprintf(out, "send to last member p50 %.3f ms, p99 %.3f ms (whole room)\n", r.P50Ms, r.P99Ms)
	if len(r.CPUSeconds) > 0 {
		fmt.Fprintf(out, "server CPU          %.2f µs per delivery, summed over %d nodes (%s s)\n", r.CPUPerDeliveryUs, len(r.CPUSeconds), joinFloats(r.CPUSeconds, "%.2f"))
	}
	if len(r.RSSBytes) > 0 {
		rss := make([]float64, len(r.RSSBytes))
		for i, b := range r.RSSBytes {
			rss[i] = mib(b)
		}
		fmt.Fprintf(out, "RSS per node        %s MiB\n", joinFloats(rss, "%.0f"))
	}
	if r.NATSPublished != nil {
		fmt.Fprintf(out, "NATS per room msg   %.2f published, %.2f received, summed over the nodes (published by kind: %s)\n",
			r.NATSPerMessage[0], r.NATSPerMessage[1], kinds(r.NATSPublished))
	}
	if r.KilledMembers > 0 {
		fmt.Fprintf(out, "node killed         its %d members gone from every other node after %.0f ms (per node: %s)\n",
			r.KilledMembers, r.GoneEverywhereMs, kindsMs(r.GoneAfterMs))
	}
}

// killNode SIGKILLs the node of c.killURL with its members joined, and
// times, on every other node, until the room there no longer counts
// them: its admin API's GET /api/rooms/{room}, the room's own view of
// its members per node (which the room keeps whether or not it tells its
// members of joins and leaves), polled every 20 ms until the killed
// node (its id from its /api/status) is not in it.
func (o *roomBench) killNode(ctx context.Context, c *clusterOpts, urls, admins []string, r *clusterResult) error {
	perWorker := (o.members + o.procs - 1) / o.procs
	for w := range o.procs {
		if urls[w%len(urls)] == c.killURL {
			r.KilledMembers += perWorker
		}
	}
	type peer struct{ url, admin string }
	var surviving []peer
	var killedID string
	for i, u := range urls {
		if u != c.killURL {
			surviving = append(surviving, peer{u, admins[i]})
			continue
		}
		var st struct {
			Node string `json:"node"`
		}
		if err := httpGet(ctx, strings.TrimSuffix(admins[i], "/")+"/api/status", func(body io.Reader) error {
			return json.NewDecoder(body).Decode(&st)
		}); err != nil {
			return err
		}
		killedID = st.Node
	}
	kill := time.Now()
	if err := syscall.Kill(c.killPID, syscall.SIGKILL); err != nil {
		return fmt.Errorf("kill %d: %w", c.killPID, err)
	}
	type gone struct {
		url string
		at  time.Time
		err error
	}
	results := make(chan gone, len(surviving))
	for _, n := range surviving {
		go func() {
			for {
				info, err := roomView(ctx, n.admin, o.room)
				switch {
				case err != nil:
					results <- gone{url: n.url, err: err}
					return
				case info.Nodes[killedID] == 0:
					results <- gone{url: n.url, at: time.Now()}
					return
				case time.Since(kill) > c.deadline:
					results <- gone{url: n.url, err: fmt.Errorf("still %d members of %s after %s", info.Nodes[killedID], killedID, c.deadline)}
					return
				}
				time.Sleep(20 * time.Millisecond) // the poll's period
			}
		}()
	}
	r.GoneAfterMs = map[string]float64{}
	for range surviving {
		g := <-results
		if g.err != nil {
			return fmt.Errorf("after the kill, at %s: %w", g.url, g.err)
		}
		ms := float64(g.at.Sub(kill).Microseconds()) / 1000
		r.GoneAfterMs[g.url] = ms
		r.GoneEverywhereMs = max(r.GoneEverywhereMs, ms)
	}
	return nil
}

// roomView is the room's members per node, as the node of the admin API
// at admin sees them.
func roomView(ctx context.Context, admin, room string) (*node.RoomInfo, error) {
	var info node.RoomInfo
	err := httpGet(ctx, strings.TrimSuffix(admin, "/")+"/api/rooms/"+url.PathEscape(room), func(body io.Reader) error {
		return json.NewDecoder(body).Decode(&info)
	})
	return &info, err
}

func splitList(s string) []string {
	var out []string
	for _, x := range strings.Split(s, ",") {
		if x = strings.TrimSpace(x); x != "" {
			out = append(out, x)
		}
	}
	return out
}

func cpuOf(pids []int) ([]float64, error) {
	out := make([]float64, len(pids))
	for i, p := range pids {
		s, err := cpuSeconds(p)
		if err != nil {
			return nil, err
		}
		out[i] = s
	}
	return out, nil
}

// natsCounts sums the nodes' NATS counters by kind.
func natsCounts(ctx context.Context, admins []string) (published, received map[string]float64, err error) {
	published, received = map[string]float64{}, map[string]float64{}
	for _, a := range admins {
		if err := scrapeNATS(ctx, strings.TrimSuffix(a, "/")+"/metrics", published, received); err != nil {
			return nil, nil, err
		}
	}
	return published, received, nil
}

func scrapeNATS(ctx context.Context, url string, published, received map[string]float64) error {
	return httpGet(ctx, url, func(body io.Reader) error { return parseNATSMetrics(body, published, received) })
}

// httpGet GETs url and hands read the body of a 200 answer.
func httpGet(ctx context.Context, url string, read func(body io.Reader) error) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", url, res.Status)
	}
	return read(res.Body)
}

// parseNATSMetrics adds the tether_nats_published_total and
// tether_nats_received_total series of a Prometheus text page to the
// maps, by kind.
func parseNATSMetrics(r io.Reader, published, received map[string]float64) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		var m map[string]float64
		switch {
		case strings.HasPrefix(line, "tether_nats_published_total{"):
			m = published
		case strings.HasPrefix(line, "tether_nats_received_total{"):
			m = received
		default:
			continue
		}
		_, rest, _ := strings.Cut(line, `kind="`)
		kind, rest, ok := strings.Cut(rest, `"}`)
		if !ok {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
		if err != nil {
			return fmt.Errorf("metrics line %q: %w", line, err)
		}
		m[kind] += v
	}
	return sc.Err()
}

func diff(after, before map[string]float64) map[string]float64 {
	out := map[string]float64{}
	for k, v := range after {
		if d := v - before[k]; d != 0 {
			out[k] = d
		}
	}
	return out
}

func sum(m map[string]float64) float64 {
	t := 0.0
	for _, v := range m {
		t += v
	}
	return t
}

func kinds(m map[string]float64) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%s %.0f", k, m[k]))
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}

func kindsMs(m map[string]float64) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%s %.0f ms", k, m[k]))
	}
	return strings.Join(parts, ", ")
}

func joinFloats(xs []float64, format string) string {
	parts := make([]string, len(xs))
	for i, x := range xs {
		parts[i] = fmt.Sprintf(format, x)
	}
	return strings.Join(parts, " ")
}

// appendJSON appends v to the JSON list in path (none: a new list).
func appendJSON(path string, v any) error {
	if path == "" {
		return nil
	}
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return appendRawJSON(path, b)
}

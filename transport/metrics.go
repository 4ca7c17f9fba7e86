package transport

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics are a node's Prometheus metrics (DESIGN.md section 8), served at
// /metrics. Each node has its own registry, so nodes started in one test
// process do not share counters.
type Metrics struct {
	Registry *prometheus.Registry

	Connections     *prometheus.GaugeVec   // open connections by listener, protocol
	Accepts         *prometheus.CounterVec // accepted sockets by listener
	Rejects         *prometheus.CounterVec // sockets closed at accept by listener, why
	Closes          *prometheus.CounterVec // closed connections by listener, reason
	FramesIn        *prometheus.CounterVec
	FramesOut       *prometheus.CounterVec
	BytesIn         *prometheus.CounterVec
	BytesOut        *prometheus.CounterVec
	Queued          *prometheus.GaugeVec   // outbound bytes not yet taken by the kernel
	Dropped         *prometheus.CounterVec // messages dropped on a full queue (on_full: drop)
	RateLimited     *prometheus.CounterVec // messages refused past limits.messages_per_second
	Pings           *prometheus.CounterVec // server pings sent
	Panics          *prometheus.CounterVec // connection actor panics
	Rooms           prometheus.Gauge       // rooms with a local member
	RoomMembers     prometheus.Gauge       // local room memberships
	NATSOut         *prometheus.CounterVec // publications by kind
	NATSIn          *prometheus.CounterVec // messages received by kind
	NATSLost        prometheus.Counter     // publications that failed (NATS away, buffer full)
	NATSDisconnects prometheus.Counter     // NATS connection losses
	NodesAlive      prometheus.Gauge       // other nodes heard from within cluster.dead_after
	NodesDown       prometheus.Counter     // nodes declared dead
	Delivery        prometheus.Histogram   // seconds from a room send to the fan-out's last write
	PartialBytes    prometheus.Gauge       // bytes of unfinished inbound frames held, node-wide
	RoomGaps        prometheus.Counter     // times a room found it had missed messages (members told: gap)
	RoomDropped     prometheus.Counter     // other nodes' room messages from members not (or no longer) known here
	RelayUnbound    *prometheus.CounterVec // relay connects no worker took, by listener
	RelayDropped    *prometheus.CounterVec // relay message events lost without a worker, by listener
	Draining        prometheus.Gauge       // 1 from the moment the node drains (tether drain, or a stop)
	AcceptQueue     prometheus.Gauge       // sockets waiting for their turn under node.accepts_per_second
	AcceptQueued    prometheus.Counter     // sockets that waited
	AcceptWait      prometheus.Histogram   // how long they waited
}

// NewMetrics registers a node's metrics, and Go runtime and process
// metrics beside them.
func NewMetrics() *Metrics {
	reg := prometheus.NewRegistry()
	f := func(c prometheus.Collector) { reg.MustRegister(c) }
	counter := func(name, help string, labels ...string) *prometheus.CounterVec {
		c := prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "tether", Name: name, Help: help}, labels)
		f(c)
		return c
	}
	gauge := func(name, help string, labels ...string) *prometheus.GaugeVec {
		g := prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: "tether", Name: name, Help: help}, labels)
		f(g)
		return g
	}
	m := &Metrics{
		Registry:        reg,
		Connections:     gauge("connections", "Open connections.", "listener", "protocol"),
		Accepts:         counter("accepts_total", "Accepted sockets.", "listener"),
		Rejects:         counter("rejects_total", "Sockets closed at accept because of a limit.", "listener", "why"),
		Closes:          counter("closes_total", "Closed connections by close reason.", "listener", "reason"),
		FramesIn:        counter("frames_in_total", "Frames received.", "listener"),
		FramesOut:       counter("frames_out_total", "Frames queued for sending.", "listener"),
		BytesIn:         counter("bytes_in_total", "Bytes received.", "listener"),
		BytesOut:        counter("bytes_out_total", "Bytes the kernel took for sending.", "listener"),
		Queued:          gauge("outbound_queued_bytes", "Outbound bytes queued and not yet taken by the kernel.", "listener"),
		Dropped:         counter("dropped_total", "Messages dropped on a full outbound queue.", "listener"),
		RateLimited:     counter("rate_limited_total", "Messages refused past limits.messages_per_second.", "listener"),
		Pings:           counter("pings_total", "Server pings sent.", "listener"),
		Panics:          counter("panics_total", "Panics while handling a connection's messages.", "listener"),
		Rooms:           prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "tether", Name: "rooms", Help: "Rooms with a member on this node."}),
		RoomMembers:     prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "tether", Name: "room_members", Help: "Room memberships of this node's connections."}),
		NATSOut:         counter("nats_published_total", "Messages published to NATS.", "kind"),
		NATSIn:          counter("nats_received_total", "Messages received from NATS.", "kind"),
		NATSLost:        prometheus.NewCounter(prometheus.CounterOpts{Namespace: "tether", Name: "nats_lost_total", Help: "Publications that failed while NATS was unreachable."}),
		NATSDisconnects: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "tether", Name: "nats_disconnects_total", Help: "Times the NATS connection was lost."}),
		NodesAlive:      prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "tether", Name: "cluster_nodes_alive", Help: "Other nodes heard from within cluster.dead_after."}),
		NodesDown:       prometheus.NewCounter(prometheus.CounterOpts{Namespace: "tether", Name: "cluster_nodes_down_total", Help: "Nodes declared dead after cluster.dead_after of silence."}),
		RelayUnbound:    counter("relay_unbound_total", "Relay connects no worker took (none listening, none answering in time, NATS away); each retry counts.", "listener"),
		RelayDropped:    counter("relay_dropped_total", "Relay message events lost: dropped while waiting for a worker, or sent to a worker that was gone.", "listener"),
		Delivery: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "tether", Name: "room_delivery_seconds",
			Help:    "Time from a room receiving a message to handing it to every local member.",
			Buckets: prometheus.ExponentialBuckets(0.00005, 2, 16),
		}),
	}
	m.PartialBytes = prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "tether", Name: "partial_frame_bytes",
		Help: "Bytes of unfinished inbound frames all connections hold (bounded by node.max_partial_bytes)."})
	f(m.PartialBytes)
	m.RoomGaps = prometheus.NewCounter(prometheus.CounterOpts{Namespace: "tether", Name: "room_gaps_total",
		Help: "Times a room found it had missed messages of other nodes (its members were told: gap)."})
	m.RoomDropped = prometheus.NewCounter(prometheus.CounterOpts{Namespace: "tether", Name: "room_dropped_total",
		Help: "Other nodes' room messages dropped: their senders were not members here (their node was thought dead)."})
	m.Draining = prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "tether", Name: "draining",
		Help: "1 from the moment the node drains (tether drain, or a stop): not ready, refusing new connections, closing its own in batches."})
	f(m.Draining)
	m.AcceptQueue = prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "tether", Name: "accept_queue",
		Help: "Accepted sockets waiting for their turn under node.accepts_per_second (at most node.accept_queue)."})
	m.AcceptQueued = prometheus.NewCounter(prometheus.CounterOpts{Namespace: "tether", Name: "accept_queued_total",
		Help: "Accepted sockets that waited in the accept queue (node.accepts_per_second) before their connection started."})
	m.AcceptWait = prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: "tether", Name: "accept_queue_wait_seconds",
		Help: "How long sockets waited in the accept queue.", Buckets: prometheus.ExponentialBuckets(0.001, 2, 16)})
	f(m.AcceptQueue)
	f(m.AcceptQueued)
	f(m.AcceptWait)
	f(m.RoomGaps)
	f(m.RoomDropped)
	f(m.Rooms)
	f(m.RoomMembers)
	f(m.NATSLost)
	f(m.NATSDisconnects)
	f(m.NodesAlive)
	f(m.NodesDown)
	f(m.Delivery)
	f(collectors.NewGoCollector())
	f(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Handler serves the metrics in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{Registry: m.Registry})
}

// ListenerMetrics are one listener's series, resolved once so that the
// per-frame path does no label lookups.
type ListenerMetrics struct {
	m           *Metrics
	listener    string
	Connections prometheus.Gauge
	FramesIn    prometheus.Counter
	FramesOut   prometheus.Counter
	BytesIn     prometheus.Counter
	BytesOut    prometheus.Counter
	Queued      prometheus.Gauge
	Dropped     prometheus.Counter
	RateLimited prometheus.Counter
	Pings       prometheus.Counter
	Panics      prometheus.Counter
	Accepts     prometheus.Counter
}

// Listener resolves the series of one listener.
func (m *Metrics) Listener(name, protocol string) *ListenerMetrics {
	return &ListenerMetrics{
		m: m, listener: name,
		Connections: m.Connections.WithLabelValues(name, protocol),
		FramesIn:    m.FramesIn.WithLabelValues(name),
		FramesOut:   m.FramesOut.WithLabelValues(name),
		BytesIn:     m.BytesIn.WithLabelValues(name),
		BytesOut:    m.BytesOut.WithLabelValues(name),
		Queued:      m.Queued.WithLabelValues(name),
		Dropped:     m.Dropped.WithLabelValues(name),
		RateLimited: m.RateLimited.WithLabelValues(name),
		Pings:       m.Pings.WithLabelValues(name),
		Panics:      m.Panics.WithLabelValues(name),
		Accepts:     m.Accepts.WithLabelValues(name),
	}
}

// Closed counts a close with its reason.
func (l *ListenerMetrics) Closed(reason string) { l.m.Closes.WithLabelValues(l.listener, reason).Inc() }

// Rejected counts a socket closed at accept, and why.
func (l *ListenerMetrics) Rejected(why string) { l.m.Rejects.WithLabelValues(l.listener, why).Inc() }

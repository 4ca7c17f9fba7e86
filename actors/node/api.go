package node

import (
	"encoding/json"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/nats-io/nats.go"

	"tether/actors/conn"
	"tether/transport"
)

// Status is what a node says about itself: GET /api/status, or a request
// on <prefix>.api.status over NATS.
type Status struct {
	Node         string           `json:"node"`
	Name         string           `json:"name"`
	Version      string           `json:"version"`
	PID          int              `json:"pid"`
	Started      time.Time        `json:"started"`
	NATS         string           `json:"nats"`
	EmbeddedNATS bool             `json:"embedded_nats"`
	HTTP         string           `json:"http,omitempty"`
	Listeners    []ListenerStatus `json:"listeners"`
}

// ListenerStatus is one listener in Status.
type ListenerStatus struct {
	Name     string `json:"name"`
	Protocol string `json:"protocol"`
	Address  string `json:"address"`
}

// Status reports the node's identity and what it listens on.
func (n *Node) Status() Status {
	st := Status{
		Node: n.id, Name: n.Config().Node.Name, Version: n.version, PID: pid,
		Started: n.started, NATS: n.NATSURL(), EmbeddedNATS: n.ns != nil,
		Listeners: []ListenerStatus{},
	}
	if a := n.HTTPAddr(); a != nil {
		st.HTTP = a.String()
	}
	for _, b := range n.listeners {
		if b.addr != nil {
			st.Listeners = append(st.Listeners, ListenerStatus{Name: b.cfg.Name, Protocol: b.cfg.Protocol, Address: b.addr.String()})
		}
	}
	return st
}

// infoTimeout bounds asking a connection actor for its info.
const infoTimeout = 2 * time.Second

// ConnInfo returns the info of one of this node's connections, live or
// recently closed (then with its close reason).
func (n *Node) ConnInfo(id string) (*conn.Info, bool) {
	if e := n.registry.Get(id); e != nil {
		res, err := n.system.Root.RequestFuture(e.PID, &conn.InfoRequest{}, infoTimeout).Result()
		if info, ok := res.(*conn.Info); ok && err == nil {
			return info, true
		}
		// It closed meanwhile: the registry has its final info.
	}
	return n.registry.ClosedInfo(id)
}

// apiQueue is the queue group of the NATS admin API: one node answers
// each request.
const apiQueue = "tether-api"

func (n *Node) serveNATSAPI() (*nats.Subscription, error) {
	subject := n.Config().NATS.SubjectPrefix + ".api.status"
	return n.nc.QueueSubscribe(subject, apiQueue, func(m *nats.Msg) {
		body, _ := json.Marshal(n.Status())
		if err := m.Respond(body); err != nil {
			n.log.Warn().Err(err).Str("subject", m.Subject).Msg("api reply failed")
		}
	})
}

func (n *Node) adminHandler() http.Handler {
	api := http.NewServeMux()
	api.HandleFunc("GET /api/status", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, n.Status())
	})
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok", "node": n.id})
	})
	mux.Handle("GET /metrics", n.metrics.Handler())
	mux.Handle("/api/", transport.RequireToken(n.Config().HTTP.Token, api))
	if n.Config().HTTP.Pprof {
		prof := http.NewServeMux()
		prof.HandleFunc("/debug/pprof/", pprof.Index)
		prof.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		prof.HandleFunc("/debug/pprof/profile", pprof.Profile)
		prof.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		prof.HandleFunc("/debug/pprof/trace", pprof.Trace)
		mux.Handle("/debug/pprof/", transport.RequireToken(n.Config().HTTP.Token, prof))
	}
	return mux
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

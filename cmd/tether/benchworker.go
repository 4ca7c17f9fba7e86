package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"tether/client"
)

// report prints one JSON line for the parent; stdout is used by nothing
// else in a worker.
var reportMu sync.Mutex

func report(r workerReport) {
	reportMu.Lock()
	defer reportMu.Unlock()
	b, _ := json.Marshal(r)
	fmt.Fprintln(os.Stdout, string(b))
}

func fail(worker int, err error) error {
	report(workerReport{Worker: worker, Event: "error", Error: err.Error()})
	return err
}

// sourceIP spreads a worker's connections over 127.<worker+2>.x.y, so that
// no source address runs out of ephemeral ports.
func sourceIP(worker, i int) net.IP {
	return net.IPv4(127, byte(2+worker), byte(1+i/250), byte(1+i%250))
}

// dialClient connects one bench client from its own source address: to a
// TCP listener at host:port (tls://host:port over TLS), or to a WebSocket
// listener at ws://... or wss://...; TLS trusts tlsConfig's roots.
func dialClient(ctx context.Context, addr string, tlsConfig *tls.Config, worker, i int) (*client.Client, error) {
	if strings.HasPrefix(addr, "ws://") || strings.HasPrefix(addr, "wss://") {
		return client.DialWebSocketWith(ctx, addr, client.WebSocketOptions{Local: sourceIP(worker, i), TLS: tlsConfig})
	}
	var o client.TCPOptions
	if rest, ok := strings.CutPrefix(addr, "tls://"); ok {
		addr, o.TLS = rest, tlsConfig
	}
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: sourceIP(worker, i)}}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	return client.Wrap(c, o, 30*time.Second)
}

// benchTLS is the TLS configuration of bench clients: the roots of the
// PEM file ca, or the system's when ca is empty.
func benchTLS(ca string) (*tls.Config, error) {
	if ca == "" {
		return &tls.Config{}, nil
	}
	pem, err := os.ReadFile(ca)
	if err != nil {
		return nil, err
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s: no PEM certificate", ca)
	}
	return &tls.Config{RootCAs: roots}, nil
}

// runIdleWorker holds idle clients for bench idle.
func runIdleWorker(c *call) error {
	var (
		addr, ca      = c.String("addr"), c.String("ca")
		conns, worker = c.Int("conns"), c.Int("worker")
		heartbeat     = c.Duration("heartbeat")
	)
	tlsConfig, err := benchTLS(ca)
	if err != nil {
		return fail(worker, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	clients := make([]*client.Client, conns)
	var n atomic.Int64
	reportProgress(worker, &n, nil)
	for i := range clients {
		cl, err := dialClient(ctx, addr, tlsConfig, worker, i)
		if err != nil {
			return fail(worker, fmt.Errorf("connection %d: %w", i, err))
		}
		clients[i] = cl
		n.Add(1)
	}
	for _, cl := range clients {
		go idleClient(cl, heartbeat)
	}
	report(workerReport{Worker: worker, Event: "connected", Conns: len(clients)})
	select {} // until the parent kills us
}

// idleClient pings every interval (first at a random offset, so that the
// server sees a steady trickle, not a wave) and reads what comes back.
func idleClient(c *client.Client, every time.Duration) {
	go func() {
		for {
			if _, err := c.Recv(); err != nil {
				return
			}
		}
	}()
	time.Sleep(rand.N(every))
	for {
		if err := c.Send(client.Request{Op: "ping"}); err != nil {
			return
		}
		time.Sleep(every)
	}
}

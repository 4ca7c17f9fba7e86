package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"tether/client"
)

// benchWorkerCmd is the hidden command a bench parent runs in each worker
// process.
func benchWorkerCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "worker", Hidden: true}
	cmd.AddCommand(idleWorkerCmd(), roomWorkerCmd(), connectWorkerCmd())
	return cmd
}

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
// TCP listener at host:port, or to a WebSocket listener at ws://...
func dialClient(ctx context.Context, addr string, worker, i int) (*client.Client, error) {
	if strings.HasPrefix(addr, "ws://") {
		return client.DialWebSocketFrom(ctx, addr, sourceIP(worker, i))
	}
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: sourceIP(worker, i)}}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	return client.Wrap(c, client.TCPOptions{}, 30*time.Second)
}

func idleWorkerCmd() *cobra.Command {
	var (
		addr      string
		conns     int
		worker    int
		heartbeat time.Duration
	)
	cmd := &cobra.Command{
		Use: "idle",
		RunE: func(*cobra.Command, []string) error {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			clients := make([]*client.Client, conns)
			for i := range clients {
				c, err := dialClient(ctx, addr, worker, i)
				if err != nil {
					return fail(worker, fmt.Errorf("connection %d: %w", i, err))
				}
				clients[i] = c
			}
			for _, c := range clients {
				go idleClient(c, heartbeat)
			}
			report(workerReport{Worker: worker, Event: "connected", Conns: len(clients)})
			select {} // until the parent kills us
		},
	}
	cmd.Flags().StringVar(&addr, "addr", "", "")
	cmd.Flags().IntVar(&conns, "conns", 0, "")
	cmd.Flags().IntVar(&worker, "worker", 0, "")
	cmd.Flags().DurationVar(&heartbeat, "heartbeat", 20*time.Second, "")
	return cmd
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

// Command relayworker is an example business worker for listeners with
// app: relay. It takes connections from a queue group on the listener's
// events, so that several workers share them, and keeps each one it took,
// as GatewayWorker's BusinessWorkers do: it answers a connect with a
// subject of its own, where it then gets that connection's messages and
// its close, in order. It answers every message by pushing "<worker
// name>: <message>" back to the connection that sent it, on whichever
// node holds it. Start two and stop one: the stopped one's connections
// move to the other.
//
//	relayworker -nats nats://tether:secret@127.0.0.1:4222 -listener game -name w1
//
// The URL carries the NATS credentials the nodes are configured with
// (nats.user and nats.password, or nats.token as nats://token@host:port):
// tether's embedded NATS requires them of every client.
//
// The wire format is in the documentation of tether/actors/relay.
package main

import (
	"context"
	"crypto/rand"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
)

func main() {
	url := flag.String("nats", nats.DefaultURL, "NATS URL of the tether cluster, with its credentials: nats://user:password@host:port")
	prefix := flag.String("prefix", "tether", "subject prefix (nats.subject_prefix)")
	listener := flag.String("listener", "tcp", "the relay listener whose connections to take")
	queue := flag.String("queue", "workers", "queue group: the workers that share the connections")
	name := flag.String("name", "worker", "this worker's name, put in its answers")
	verbose := flag.Bool("v", false, "log every event taken: event, connection, then the frame, remote address or reason, quoted")
	flag.Parse()

	nc, err := nats.Connect(*url, nats.Name("relayworker "+*name), nats.MaxReconnects(-1))
	if err != nil {
		log.Fatal(err)
	}
	defer nc.Drain() // on SIGTERM: the nodes notice, and offer this worker's connections again

	// Where this worker takes the events of the connections it took: a
	// subject no other worker has, subscribed before any connect is
	// answered, since a connection's events come as soon as it is.
	own := *prefix + ".worker." + *name + "-" + rand.Text()[:8]
	_, err = nc.Subscribe(own, func(m *nats.Msg) {
		if *verbose {
			logEvent(m)
		}
		if m.Header.Get("Tether-Event") == "message" {
			answer(nc, *prefix, *name, m)
		}
	})
	if err != nil {
		log.Fatal(err)
	}
	_, err = nc.QueueSubscribe(*prefix+".events."+*listener, *queue, func(m *nats.Msg) {
		if m.Header.Get("Tether-Event") != "connect" {
			return
		}
		if *verbose {
			logEvent(m)
		}
		r := nats.NewMsg(m.Reply)
		r.Header.Set("Tether-Worker", own)
		if err := m.RespondMsg(r); err != nil {
			log.Printf("take %s: %v", m.Header.Get("Tether-Conn"), err)
		}
	})
	if err != nil {
		log.Fatal(err)
	}
	if err := nc.Flush(); err != nil { // the subscriptions are in place
		log.Fatal(err)
	}
	fmt.Println("ready")
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	<-sigs
}

// answer pushes "<name>: <message>" to the connection that sent message
// event m, through the node that holds it.
func answer(nc *nats.Conn, prefix, name string, m *nats.Msg) {
	reply := nats.NewMsg(prefix + ".node." + m.Header.Get("Tether-Node"))
	reply.Header.Set("Tether-Kind", "deliver")
	reply.Header.Set("Tether-Conn", m.Header.Get("Tether-Conn"))
	reply.Data = fmt.Appendf(nil, "%s: %s", name, m.Data)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	answer, err := nc.RequestMsgWithContext(ctx, reply)
	if err != nil {
		log.Printf("answer to %s: %v", m.Header.Get("Tether-Conn"), err)
	} else if reason := answer.Header.Get("Tether-Reason"); reason != "" {
		log.Printf("answer to %s refused: %s", m.Header.Get("Tether-Conn"), reason)
	}
}

// logEvent logs an event as one line: event, connection, and what it
// carries (the frame, the remote address, the reason), quoted.
func logEvent(m *nats.Msg) {
	event, detail := m.Header.Get("Tether-Event"), ""
	switch event {
	case "connect":
		detail = m.Header.Get("Tether-Remote")
	case "message":
		detail = string(m.Data)
	case "close":
		detail = m.Header.Get("Tether-Reason")
	}
	log.Printf("%s %s %q", event, m.Header.Get("Tether-Conn"), detail)
}

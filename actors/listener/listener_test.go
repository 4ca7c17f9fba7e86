package listener

import (
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/rs/zerolog"

	"tether/actors/conn"
	"tether/config"
	"tether/transport"
)

// pair returns both ends of a real loopback TCP connection.
func pair(t *testing.T) (server, client net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server, err = ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close(); server.Close() })
	return server, client
}

// closedByServer waits for the server end of client's connection to close.
func closedByServer(client net.Conn, within time.Duration) error {
	_ = client.SetReadDeadline(time.Now().Add(within))
	buf := make([]byte, 256)
	for {
		_, err := client.Read(buf)
		if err == nil {
			continue // the welcome, a close frame
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return errors.New("still open")
		}
		if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || err != nil {
			return nil
		}
	}
}

// quietApp is an application that does nothing.
type quietApp struct{}

func (quietApp) Opened(*conn.Actor)               {}
func (quietApp) Frame(*conn.Actor, []byte)        {}
func (quietApp) Limited(*conn.Actor, []byte)      {}
func (quietApp) Receive(*conn.Actor, any)         {}
func (quietApp) Closing(*conn.Actor, conn.Reason) {}
func (quietApp) Closed(*conn.Actor, conn.Reason)  {}
func (quietApp) Describe(*conn.Info)              {}

func newListener(t *testing.T, system *actor.ActorSystem, sockets *transport.NodeSockets) (*Actor, *transport.Metrics) {
	t.Helper()
	lc := config.DefaultListener(config.ProtocolWebSocket)
	lc.Name = "ws"
	metrics := transport.NewMetrics()
	a, err := New(Options{
		System: system, Config: lc, Sockets: sockets, Node: "n", Registry: conn.NewRegistry(),
		Budget: conn.NewBudget(1<<20, metrics.PartialBytes), Metrics: metrics, Log: zerolog.Nop(),
		NewApp: func(*conn.Actor) conn.App { return quietApp{} },
	})
	if err != nil {
		t.Fatal(err)
	}
	return a, metrics
}

// TestSocketsHandedToAStoppingListenerAreClosed: a socket handed over
// while the listener stops (an upgrade finishing during shutdown) is
// adopted and closed with the rest, or closed by the inbox: never left
// open in a stopped actor's mailbox, and its place is given back.
func TestSocketsHandedToAStoppingListenerAreClosed(t *testing.T) {
	for round := range 20 {
		system := actor.NewActorSystem()
		sockets := transport.NewNodeSockets(1000)
		l, _ := newListener(t, system, sockets)
		pid, err := system.Root.SpawnNamed(actor.PropsFromProducer(func() actor.Actor { return l }), "ws")
		if err != nil {
			t.Fatal(err)
		}
		// Admitted before the stop, handed around it.
		var clients []net.Conn
		var admitted []*transport.Accepted
		for range 10 {
			server, client := pair(t)
			ticket, ok := l.Admission().Admit(server)
			if !ok {
				t.Fatal("not admitted")
			}
			clients = append(clients, client)
			admitted = append(admitted, &transport.Accepted{Conn: server, Ticket: ticket})
		}
		for i, s := range admitted {
			if i == 5 {
				system.Root.Stop(pid) // the rest race the stop
			}
			l.Hand(system, pid, s)
		}
		for i, c := range clients {
			if err := closedByServer(c, 5*time.Second); err != nil {
				t.Fatalf("round %d: socket %d handed around the stop: %v", round, i, err)
			}
		}
		deadline := time.Now().Add(5 * time.Second)
		for sockets.Count() != 0 {
			if time.Now().After(deadline) {
				t.Fatalf("round %d: %d places still taken", round, sockets.Count())
			}
			time.Sleep(5 * time.Millisecond)
		}
		system.Shutdown()
	}
}

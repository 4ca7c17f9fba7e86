package test

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"tether/actors/conn"
	"tether/client"
	"tether/config"
	"tether/test/check"
)

// peerNamespace is a network namespace made by the test, joined to the
// test's own namespace by a veth pair: a remote host whose cable can be
// pulled (link down: no FIN, no RST, packets just vanish).
type peerNamespace struct {
	name   string
	hostIf string // veth end in the test's namespace
	peerIf string // veth end inside the namespace
	hostIP string
	peerIP string
	t      *testing.T
}

// newPeerNamespace creates the namespace and the veth pair; it needs root.
func newPeerNamespace(t *testing.T) *peerNamespace {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("network namespaces need root (CI runs as root)")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Fatal("ip (iproute2) is missing; .ci/run installs it")
	}
	id := os.Getpid() % 250
	p := &peerNamespace{
		name: fmt.Sprintf("tether-test-%d", os.Getpid()), t: t,
		hostIf: fmt.Sprintf("tth%da", os.Getpid()%100000), peerIf: fmt.Sprintf("tth%db", os.Getpid()%100000),
		hostIP: fmt.Sprintf("10.231.%d.1", id), peerIP: fmt.Sprintf("10.231.%d.2", id),
	}
	t.Cleanup(func() {
		_ = exec.Command("ip", "netns", "del", p.name).Run() // takes the veth pair with it
		_ = exec.Command("ip", "link", "del", p.hostIf).Run()
	})
	p.run("ip", "netns", "add", p.name)
	p.run("ip", "link", "add", p.hostIf, "type", "veth", "peer", "name", p.peerIf)
	p.run("ip", "link", "set", p.peerIf, "netns", p.name)
	p.run("ip", "addr", "add", p.hostIP+"/30", "dev", p.hostIf)
	p.run("ip", "link", "set", p.hostIf, "up")
	p.run("ip", "netns", "exec", p.name, "ip", "addr", "add", p.peerIP+"/30", "dev", p.peerIf)
	p.run("ip", "netns", "exec", p.name, "ip", "link", "set", p.peerIf, "up")
	p.run("ip", "netns", "exec", p.name, "ip", "link", "set", "lo", "up")
	return p
}

func (p *peerNamespace) run(args ...string) {
	p.t.Helper()
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		p.t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// pullCable takes the namespace's end of the link down once the host's
// sockets on it have nothing unacknowledged (acked): the peer stops
// answering without a FIN or a reset. It returns when the cable was
// pulled.
func (p *peerNamespace) pullCable() time.Time {
	p.acked()
	pulled := time.Now()
	p.run("ip", "netns", "exec", p.name, "ip", "link", "set", p.peerIf, "down")
	return pulled
}

// acked waits until the host's sockets on the link have nothing
// unacknowledged, so that pulling the cable loses no client's last
// (delayed) ACK: data left unacknowledged is retransmitted for many
// minutes, and keepalive probes only an idle socket.
func (p *peerNamespace) acked() {
	p.t.Helper()
	check.For(p.t, 5*time.Second, 10*time.Millisecond, func() error {
		out, err := exec.Command("ss", "-tnH", "state", "established", "src", p.hostIP).Output()
		if err != nil {
			return err
		}
		for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			if f := strings.Fields(line); len(f) >= 2 && f[1] != "0" {
				return fmt.Errorf("unacknowledged: %s", line)
			}
		}
		return nil
	})
}

// dial connects a TCP client to addr from inside the namespace.
func (p *peerNamespace) dial(addr string) (*client.Client, error) {
	return p.inside(func(ctx context.Context) (*client.Client, error) {
		return client.DialTCP(ctx, addr, client.TCPOptions{})
	})
}

// dialWS connects a WebSocket client to url from inside the namespace.
func (p *peerNamespace) dialWS(url string) (*client.Client, error) {
	return p.inside(func(ctx context.Context) (*client.Client, error) { return client.DialWebSocket(ctx, url) })
}

// inside runs dial on a thread switched into the namespace: the socket it
// creates belongs to the namespace for good.
func (p *peerNamespace) inside(dial func(context.Context) (*client.Client, error)) (*client.Client, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	self, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		return nil, err
	}
	defer self.Close()
	target, err := os.Open("/var/run/netns/" + p.name)
	if err != nil {
		return nil, err
	}
	defer target.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		return nil, err
	}
	// Back to our own namespace before the thread is unlocked.
	defer func() {
		if err := unix.Setns(int(self.Fd()), unix.CLONE_NEWNET); err != nil {
			panic("cannot return to the test's network namespace: " + err.Error())
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return dial(ctx)
}

// The dead-peer tests' liveness settings: short, so that the kernel
// gives up on a silent peer within seconds, and when each must have.
const (
	deadIdle, deadInterval = time.Second, time.Second
	deadCount              = 2
	deadUserTimeout        = 2 * time.Second
	deadPingInterval       = time.Second

	keepaliveLimit   = deadIdle + deadInterval*deadCount + time.Second
	userTimeoutLimit = deadPingInterval + deadUserTimeout + time.Second
)

// deadPeerListener is a listener on the namespace's link without idle
// timeout: with OS keepalive, or else with TCP_USER_TIMEOUT and server
// pings (that never kick) to keep data in flight.
func deadPeerListener(ns *peerNamespace, name, protocol string, keepalive bool) config.Listener {
	l := config.DefaultListener(protocol)
	l.Name, l.Address = name, net.JoinHostPort(ns.hostIP, "0")
	l.Heartbeat.IdleTimeout = 0
	if keepalive {
		l.TCPKeepalive = config.TCPKeepalive{Enabled: true, Idle: config.Duration(deadIdle), Interval: config.Duration(deadInterval), Count: deadCount}
		return l
	}
	l.TCPKeepalive.Enabled = false
	l.TCPUserTimeout = config.Duration(deadUserTimeout)
	l.Heartbeat.PingInterval, l.Heartbeat.PingNotResponseLimit = config.Duration(deadPingInterval), 0
	return l
}

// TestDeadPeerWithoutFIN: a peer whose link goes down sends nothing more.
// On a listener with OS keepalive the kernel gives up after idle +
// interval*count and the node closes the connection as keepalive; on a
// listener with TCP_USER_TIMEOUT whose server keeps writing (pings), the
// unacknowledged data closes it as user_timeout, on TCP and on WebSocket
// (whose count of bytes sent must include the handshake's response, or
// the kernel's count of acknowledged bytes makes it look like keepalive).
func TestDeadPeerWithoutFIN(t *testing.T) {
	ns := newPeerNamespace(t)
	n := startNode(t, func(c *config.Config) {
		c.Listeners = []config.Listener{
			deadPeerListener(ns, "keepalive", config.ProtocolTCP, true),
			deadPeerListener(ns, "usertimeout", config.ProtocolTCP, false),
			deadPeerListener(ns, "ws", config.ProtocolWebSocket, false),
		}
	})
	kaClient, err := ns.dial(n.addr("keepalive"))
	if err != nil {
		t.Fatal(err)
	}
	defer kaClient.Close()
	utClient, err := ns.dial(n.addr("usertimeout"))
	if err != nil {
		t.Fatal(err)
	}
	defer utClient.Close()
	wsClient, err := ns.dialWS("ws://" + n.addr("ws") + "/ws")
	if err != nil {
		t.Fatal(err)
	}
	defer wsClient.Close()

	pulled := ns.pullCable()

	if r := n.closeReason(t, kaClient.ID(), keepaliveLimit+2*time.Second); r != conn.ReasonKeepalive {
		t.Errorf("keepalive listener: reason %s, want keepalive", r)
	}
	if info, _ := n.ConnInfo(kaClient.ID()); info.Closed.Sub(pulled) > keepaliveLimit {
		t.Errorf("keepalive closed %s after the cable was pulled, want within %s", info.Closed.Sub(pulled), keepaliveLimit)
	}

	for _, c := range []*client.Client{utClient, wsClient} {
		if r := n.closeReason(t, c.ID(), userTimeoutLimit+2*time.Second); r != conn.ReasonUserTimeout {
			t.Errorf("user timeout, %s: reason %s, want user_timeout", c.ID(), r)
		}
		if info, _ := n.ConnInfo(c.ID()); info.Closed.Sub(pulled) > userTimeoutLimit {
			t.Errorf("user timeout, %s: closed %s after the cable was pulled, want within %s", c.ID(), info.Closed.Sub(pulled), userTimeoutLimit)
		}
	}
}

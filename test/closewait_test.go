package test

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"tether/client"
	"tether/test/check"
)

// dialerEnv makes the test binary a client process: it opens connections
// and waits to be killed (see runDialer).
const dialerEnv = "TETHER_TEST_DIALER"

// runDialer is the client process of TestAbruptClientsLeaveNoCloseWait:
// "addr,count" in dialerEnv. It connects count clients, from 127.0.0.x
// source addresses so that no single address runs out of ports, reads
// each welcome, says "ready" and waits to be killed.
func runDialer(spec string) {
	addr, countStr, _ := strings.Cut(spec, ",")
	count, _ := strconv.Atoi(countStr)
	conns := make([]*client.Client, 0, count)
	for i := range count {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 1, byte(1+i%200))}}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		c, err := d.DialContext(ctx, "tcp", addr)
		cancel()
		if err != nil {
			fmt.Println("dial:", err)
			os.Exit(1)
		}
		cl, err := client.Wrap(c, client.TCPOptions{}, 10*time.Second)
		if err != nil {
			fmt.Println("welcome:", err)
			os.Exit(1)
		}
		conns = append(conns, cl)
	}
	held = conns // reachable, so no finalizer closes a socket before the kill
	fmt.Println("ready")
	select {} // until SIGKILL
}

// held keeps the dialer's clients alive until the process is killed.
var held []*client.Client

// closeWait counts sockets in CLOSE_WAIT on a local port, with ss.
func closeWait(t *testing.T, port int) int {
	t.Helper()
	out, err := exec.Command("ss", "-Htn", "state", "close-wait", fmt.Sprintf("( sport = :%d )", port)).Output()
	if err != nil {
		t.Fatalf("ss: %v", err)
	}
	return strings.Count(string(out), "\n")
}

// TestAbruptClientsLeaveNoCloseWait: 2,000 clients in another process
// vanish at once (SIGKILL); the node closes its side of every one, so no
// socket stays in CLOSE_WAIT and every connection is gone from the node.
func TestAbruptClientsLeaveNoCloseWait(t *testing.T) {
	if _, err := exec.LookPath("ss"); err != nil {
		t.Fatal("ss (iproute2) is missing; .ci/run installs it")
	}
	const clients = 2000
	n := startNode(t, nil)
	port := n.Addr("tcp").(*net.TCPAddr).Port

	dialer := exec.Command(os.Args[0], "-test.run=^$")
	dialer.Env = append(cleanEnv(), fmt.Sprintf("%s=%s,%d", dialerEnv, n.addr("tcp"), clients))
	out, err := dialer.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := dialer.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = dialer.Process.Kill(); _ = dialer.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || line != "ready\n" {
		t.Fatalf("dialer: %q %v", line, err)
	}
	if got := gaugeValue(t, n, "tether_connections"); got != clients {
		t.Fatalf("node holds %v connections, want %d", got, clients)
	}

	if err := dialer.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	check.For(t, 15*time.Second, 50*time.Millisecond, func() error {
		if cw := closeWait(t, port); cw != 0 {
			return fmt.Errorf("%d sockets in CLOSE_WAIT", cw)
		}
		if got := gaugeValue(t, n, "tether_connections"); got != 0 {
			return fmt.Errorf("node still holds %v connections", got)
		}
		return nil
	})
	if got := counterValue(t, n, `tether_closes_total{listener="tcp",reason="client_closed"}`); got != clients {
		t.Errorf("closes counted as client_closed: %v, want %d", got, clients)
	}
}

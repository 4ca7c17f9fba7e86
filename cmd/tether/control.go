package main

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"tether/actors/node"
	"tether/config"
)

func runStop(c *call) error {
	n, err := signalNode(c, syscall.SIGTERM)
	if err != nil {
		return err
	}
	wait := n.cfg.ShutdownTimeout.D() + 5*time.Second
	deadline := time.Now().Add(wait)
	for processAlive(n.pid) {
		if time.Now().After(deadline) {
			return fmt.Errorf("pid %d still running after %s", n.pid, wait)
		}
		time.Sleep(50 * time.Millisecond)
	}
	fmt.Fprintf(c.out, "stopped (pid %d)\n", n.pid)
	return nil
}

func runReload(c *call) error {
	n, err := signalNode(c, syscall.SIGHUP)
	if err != nil {
		return err
	}
	fmt.Fprintf(c.out, "reload requested (pid %d)\n", n.pid)
	return nil
}

func runStatus(c *call) error {
	n, err := findNode(c)
	out := c.out
	var refused *unauthorizedError
	switch {
	case n == nil:
		return err // the file is wrong: that is no answer about the node
	case errors.As(err, &refused):
		fmt.Fprintln(out, "state unknown:", err)
		return exitCode(4)
	case err != nil:
		fmt.Fprintln(out, "not running:", err)
		return exitCode(3)
	}
	st := n.status
	if st == nil {
		st, err = fetchStatus(n.cfg)
	}
	switch {
	case errors.As(err, &refused):
		fmt.Fprintf(out, "running (pid %d), state unknown: %v\n", n.pid, err)
		return exitCode(4)
	case err != nil:
		fmt.Fprintf(out, "running (pid %d); admin API not answering: %v\n", n.pid, err)
		return nil
	}
	fmt.Fprintf(out, "running (pid %d) node %s version %s since %s\n", n.pid, st.Node, st.Version, st.Started.Format(time.RFC3339))
	if n.missing != "" {
		fmt.Fprintf(out, "  found by its admin API at %s: %s\n", n.cfg.HTTP.Address, n.missing)
	}
	fmt.Fprintf(out, "  nats  %s %s (embedded: %v)\n", st.NATS, st.NATSState, st.EmbeddedNATS)
	fmt.Fprintf(out, "  http  %s\n", st.HTTP)
	for _, l := range st.Listeners {
		fmt.Fprintf(out, "  %-9s %-5s %s\n", l.Protocol, l.Name, l.Address)
	}
	return nil
}

// runningNode is the node stop, reload and status act on.
type runningNode struct {
	cfg     *config.Config
	pid     int
	status  *node.Status // its admin API's answer, when that is how the node was found
	missing string       // why the pid file did not name it, when it did not
}

// findNode loads the configuration and finds the node: the live process
// its pid file names or, failing that, the node whose admin API answers
// at http.address when that address is on this machine. It returns no
// node when the configuration cannot be read, and an error with the
// configuration when no node runs (an *unauthorizedError when the admin
// API refused the CLI: then whether one runs is unknown).
func findNode(c *call) (*runningNode, error) {
	cfg, err := c.config()
	if err != nil {
		return nil, err
	}
	n := &runningNode{cfg: cfg}
	if n.missing = pidFileProblem(cfg.PIDFile, &n.pid); n.missing == "" {
		return n, nil
	}
	addr := cfg.HTTP.Address
	if addr == "" || !onThisMachine(addr) {
		return n, errors.New(n.missing)
	}
	st, err := fetchStatus(cfg)
	var unreachable *url.Error
	switch {
	case errors.As(err, &unreachable):
		return n, fmt.Errorf("%s, and no admin API answers at %s", n.missing, addr)
	case err != nil:
		return n, fmt.Errorf("%s, and the admin API at %s: %w", n.missing, addr, err)
	case !processAlive(st.PID):
		return n, fmt.Errorf("%s, and the node whose admin API answers at %s says pid %d, which is not a process here", n.missing, addr, st.PID)
	}
	n.pid, n.status = st.PID, st
	return n, nil
}

// pidFileProblem reads the live pid from path into pid, and says what is
// wrong when it cannot.
func pidFileProblem(path string, pid *int) string {
	if path == "" {
		return "pid_file is empty"
	}
	p, err := readPIDFile(path)
	if err != nil {
		return fmt.Sprintf("no pid file %s", path)
	}
	if !processAlive(p) {
		return fmt.Sprintf("pid %d from %s is not running (stale pid file)", p, path)
	}
	*pid = p
	return ""
}

// signalNode finds the node and sends it sig. A node found by its admin
// API, not by its pid file, is signalled only if its pid is a `tether
// serve` here: the pid is the node's word, and another process
// namespace's pid, or a program that runs a node inside itself, must not
// get the signal.
func signalNode(c *call, sig syscall.Signal) (*runningNode, error) {
	n, err := findNode(c)
	if err != nil {
		return nil, err
	}
	if n.status != nil && !isServe(n.pid) {
		return nil, fmt.Errorf("%s; the admin API at %s answers for pid %d, which is not a tether serve process: signal it yourself", n.missing, n.cfg.HTTP.Address, n.pid)
	}
	if err := syscall.Kill(n.pid, sig); err != nil {
		return nil, fmt.Errorf("signal pid %d: %w", n.pid, err)
	}
	return n, nil
}

// isServe reports whether pid's command line has the argument serve.
func isServe(pid int) bool {
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return false
	}
	return slices.Contains(strings.Split(string(cmdline), "\x00")[1:], "serve")
}

// onThisMachine reports whether a listen address is one of this
// machine's: unspecified, loopback, or an address of an interface.
func onThisMachine(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "" {
		return true
	}
	ips := []net.IP{net.ParseIP(host)}
	if ips[0] == nil {
		if ips, err = net.LookupIP(host); err != nil {
			return false
		}
	}
	local, _ := net.InterfaceAddrs()
	for _, ip := range ips {
		if ip.IsLoopback() || ip.IsUnspecified() {
			return true
		}
		for _, a := range local {
			if n, ok := a.(*net.IPNet); ok && n.IP.Equal(ip) {
				return true
			}
		}
	}
	return false
}

func readPIDFile(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
}

// processAlive reports whether pid runs; a zombie (exited, not yet reaped
// by its parent) does not.
func processAlive(pid int) bool {
	if pid <= 0 || syscall.Kill(pid, 0) != nil {
		return false
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true // not Linux /proc: trust kill
	}
	// The state follows the parenthesised command name: "pid (comm) S ...".
	if i := strings.LastIndexByte(string(stat), ')'); i >= 0 && i+2 < len(stat) {
		return stat[i+2] != 'Z'
	}
	return true
}

func fetchStatus(cfg *config.Config) (*node.Status, error) {
	var st node.Status
	return &st, adminCall(cfg, http.MethodGet, "/api/status", nil, &st)
}

// dialable turns a listen address into one a client can dial: an
// unspecified host (0.0.0.0, ::, empty) becomes loopback.
func dialable(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}

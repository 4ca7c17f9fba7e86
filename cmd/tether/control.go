package main

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"tether/actors/node"
	"tether/config"
)

func runStop(c *call) error {
	cfg, pid, err := running(c)
	if err != nil {
		return err
	}
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		return fmt.Errorf("signal pid %d: %w", pid, err)
	}
	deadline := time.Now().Add(cfg.ShutdownTimeout.D() + 5*time.Second)
	for processAlive(pid) {
		if time.Now().After(deadline) {
			return fmt.Errorf("pid %d still running after %s", pid, cfg.ShutdownTimeout.D()+5*time.Second)
		}
		time.Sleep(50 * time.Millisecond)
	}
	fmt.Fprintf(c.out, "stopped (pid %d)\n", pid)
	return nil
}

func runReload(c *call) error {
	_, pid, err := running(c)
	if err != nil {
		return err
	}
	if err := syscall.Kill(pid, syscall.SIGHUP); err != nil {
		return fmt.Errorf("signal pid %d: %w", pid, err)
	}
	fmt.Fprintf(c.out, "reload requested (pid %d)\n", pid)
	return nil
}

func runStatus(c *call) error {
	cfg, pid, err := running(c)
	out := c.out
	switch {
	case cfg == nil:
		return err // the file is wrong: that is no answer about the node
	case err != nil:
		fmt.Fprintln(out, "not running:", err)
		return exitCode(3)
	}
	st, err := fetchStatus(cfg)
	var refused *unauthorizedError
	switch {
	case errors.As(err, &refused):
		fmt.Fprintf(out, "running (pid %d), state unknown: %v\n", pid, err)
		return exitCode(4)
	case err != nil:
		fmt.Fprintf(out, "running (pid %d); admin API not answering: %v\n", pid, err)
		return nil
	}
	fmt.Fprintf(out, "running (pid %d) node %s version %s since %s\n", pid, st.Node, st.Version, st.Started.Format(time.RFC3339))
	fmt.Fprintf(out, "  nats  %s %s (embedded: %v)\n", st.NATS, st.NATSState, st.EmbeddedNATS)
	fmt.Fprintf(out, "  http  %s\n", st.HTTP)
	for _, l := range st.Listeners {
		fmt.Fprintf(out, "  %-9s %-5s %s\n", l.Protocol, l.Name, l.Address)
	}
	return nil
}

// running loads the configuration and returns the pid of the live node
// its pid file names.
func running(c *call) (*config.Config, int, error) {
	cfg, err := c.config()
	if err != nil {
		return nil, 0, err
	}
	if cfg.PIDFile == "" {
		return cfg, 0, fmt.Errorf("pid_file is empty: nothing to find the node by")
	}
	pid, err := readPIDFile(cfg.PIDFile)
	if err != nil {
		return cfg, 0, fmt.Errorf("no pid file %s", cfg.PIDFile)
	}
	if !processAlive(pid) {
		return cfg, 0, fmt.Errorf("pid %d from %s is not running (stale pid file)", pid, cfg.PIDFile)
	}
	return cfg, pid, nil
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

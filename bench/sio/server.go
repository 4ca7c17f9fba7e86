package sio

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"
)

// Server is the bench's Socket.IO server (bench/peer/server.js) running
// in a node process of its own.
type Server struct {
	URL string // http://127.0.0.1:port
	PID int
	cmd *exec.Cmd
}

// Install runs dir/install (npm ci of the committed lock file) unless
// dir/node_modules already has socket.io.
func Install(dir string) error {
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "socket.io", "package.json")); err == nil {
		return nil
	}
	cmd := exec.Command(filepath.Join(dir, "install"))
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s/install: %w", dir, err)
	}
	return nil
}

// StartServer installs the server's packages when missing and starts
// `node dir/server.js --port 0 args...`, returning once it listens.
func StartServer(dir string, args ...string) (*Server, error) {
	if err := Install(dir); err != nil {
		return nil, err
	}
	cmd := exec.Command("node", append([]string{filepath.Join(dir, "server.js"), "--port", "0"}, args...)...)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("node: %w", err)
	}
	s := &Server{cmd: cmd, PID: cmd.Process.Pid}
	line := make(chan []byte, 1)
	go func() {
		sc := bufio.NewScanner(out)
		if sc.Scan() {
			line <- sc.Bytes()
		}
		close(line)
		for sc.Scan() { // keep its stdout drained
		}
	}()
	select {
	case l, ok := <-line:
		var hello struct {
			URL string `json:"url"`
		}
		if !ok || json.Unmarshal(l, &hello) != nil || hello.URL == "" {
			s.Stop()
			return nil, fmt.Errorf("%s/server.js did not say where it listens (%q)", dir, l)
		}
		s.URL = hello.URL
		return s, nil
	case <-time.After(30 * time.Second):
		s.Stop()
		return nil, fmt.Errorf("%s/server.js: not listening within 30s", dir)
	}
}

// Stop kills the server and waits for it.
func (s *Server) Stop() {
	_ = s.cmd.Process.Kill()
	_ = s.cmd.Wait()
}

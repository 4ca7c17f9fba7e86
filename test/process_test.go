package test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"tether/client"
)

// serveProcess is `tether serve` in a process of its own, for tests that
// must kill a node without letting it say goodbye.
type serveProcess struct {
	cmd     *exec.Cmd
	tcpAddr string
	logs    *syncBuffer
}

// startServeProcess runs tether serve with the configuration conf, whose
// TCP listener is at tcpAddr; a shell command given as before runs first
// in the same process (ulimit -n 300, say).
func startServeProcess(t *testing.T, conf, tcpAddr string, before ...string) *serveProcess {
	t.Helper()
	return startServeProcessIn(t, t.TempDir(), conf, tcpAddr, before...)
}

// startServeProcessIn is startServeProcess in the working directory dir
// (where the node keeps its pid file and its history store), its
// configuration in dir/tether.yaml.
func startServeProcessIn(t *testing.T, dir, conf, tcpAddr string, before ...string) *serveProcess {
	t.Helper()
	path := filepath.Join(dir, "tether.yaml")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	return startServeProcessFile(t, dir, path, tcpAddr, before...)
}

// startServeProcessFile is startServeProcessIn with the configuration
// file at path: several nodes in one directory.
func startServeProcessFile(t *testing.T, dir, path, tcpAddr string, before ...string) *serveProcess {
	t.Helper()
	cmd := exec.Command(tetherBin, "serve", "-c", path)
	if len(before) > 0 {
		cmd = exec.Command("sh", "-c", strings.Join(before, " && ")+` && exec "$0" serve -c "$1"`, tetherBin, path)
	}
	p := &serveProcess{cmd: cmd, tcpAddr: tcpAddr, logs: &syncBuffer{}}
	p.cmd.Dir, p.cmd.Env, p.cmd.Stderr = dir, cleanEnv(), p.logs
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		p.kill()
		if t.Failed() {
			t.Logf("serve process log:\n%s", p.logs.String())
		}
	})
	return p
}

// startClusterProcess runs node name in a process of its own on the NATS
// server at natsURL, with the cluster timing of clusterTiming and a TCP
// listener; extra is more configuration (YAML lines), or "".
func startClusterProcess(t *testing.T, name, natsURL, extra string) *serveProcess {
	t.Helper()
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	return startServeProcess(t, fmt.Sprintf(`
node: {name: %s}
log: {format: json}
http: {address: ""}
nats: {url: %q, reconnect_wait: 100ms}
cluster: {heartbeat_interval: 100ms, dead_after: 1s}
listeners:
  - {name: tcp, address: %q}
%s`, name, natsURL, addr, extra), addr)
}

// stop ends the process the way tether stop does (SIGTERM) and waits for
// it to exit.
func (p *serveProcess) stop(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Wait(); err != nil {
		t.Fatalf("serve after SIGTERM: %v", err)
	}
}

// kill ends the process at once (SIGKILL): no goodbye, no leaves.
func (p *serveProcess) kill() {
	if p.cmd.ProcessState == nil {
		_ = p.cmd.Process.Kill()
		_ = p.cmd.Wait()
	}
}

// dialRetry connects the client to addr, retrying while a process starts.
func dialRetry(t *testing.T, addr string) *client.Client {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		c, err := client.DialTCP(ctx, addr, client.TCPOptions{})
		cancel()
		if err == nil {
			t.Cleanup(func() { c.Close() })
			return c
		}
		if time.Now().After(deadline) {
			t.Fatalf("dial %s: %v", addr, err)
		}
		time.Sleep(50 * time.Millisecond) // the process is still starting
	}
}

var (
	examplesMu    sync.Mutex
	examplesBuilt = map[string]string{}
)

// buildExample builds examples/<name> once per test run.
func buildExample(t *testing.T, name string) string {
	t.Helper()
	examplesMu.Lock()
	defer examplesMu.Unlock()
	if bin, ok := examplesBuilt[name]; ok {
		return bin
	}
	bin := filepath.Join(filepath.Dir(tetherBin), name)
	if out, err := exec.Command("go", "build", "-race", "-o", bin, "tether/examples/"+name).CombinedOutput(); err != nil {
		t.Fatalf("build %s: %v\n%s", name, err, out)
	}
	examplesBuilt[name] = bin
	return bin
}

// startProcess runs bin with args and waits for its "ready" line. It
// returns the process and what it writes on stderr.
func startProcess(t *testing.T, bin string, args ...string) (*exec.Cmd, *syncBuffer) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = cleanEnv()
	logs := &syncBuffer{}
	cmd.Stderr = logs
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("%s log:\n%s", filepath.Base(bin), logs.String())
		}
	})
	ready := make(chan error, 1)
	go func() {
		line, err := bufio.NewReader(out).ReadString('\n')
		if err == nil && line != "ready\n" {
			err = errorString("unexpected first line " + line)
		}
		ready <- err
	}()
	select {
	case err := <-ready:
		if err != nil {
			t.Fatalf("%s: %v\n%s", filepath.Base(bin), err, logs.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("%s not ready", filepath.Base(bin))
	}
	return cmd, logs
}

type errorString string

func (e errorString) Error() string { return string(e) }

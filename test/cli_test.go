package test

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"tether/test/check"
)

// tetherBin is the tether binary built once for the tests that run it as
// a real process.
var tetherBin string

func TestMain(m *testing.M) {
	if spec := os.Getenv(dialerEnv); spec != "" {
		runDialer(spec) // this process is a client of another test
		return
	}
	dir, err := os.MkdirTemp("", "tether-test-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	tetherBin = filepath.Join(dir, "tether")
	build := exec.Command("go", "build", "-race", "-o", tetherBin, "tether/cmd/tether")
	build.Stdout, build.Stderr = os.Stdout, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build tether:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// freePort returns a loopback port that was free a moment ago, for
// configurations a separate process must know in advance.
func freePort(t *testing.T) int {
	t.Helper()
	portsGiven.Lock()
	defer portsGiven.Unlock()
	for {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := ln.Addr().(*net.TCPAddr).Port
		ln.Close()
		// The kernel may hand a port just closed out again at once: a
		// test asking for several (a node's listeners) once got the same
		// one twice.
		if !portsGiven.ports[port] {
			portsGiven.ports[port] = true
			return port
		}
	}
}

// portsGiven are the ports freePort has handed out in this process.
var portsGiven = struct {
	sync.Mutex
	ports map[int]bool
}{ports: map[int]bool{}}

// tether runs the binary in dir to completion and returns its output and
// exit code.
func tether(t *testing.T, dir string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	return tetherEnv(t, dir, nil, args...)
}

// tetherEnv is tether with env (KEY=value) added to the environment.
func tetherEnv(t *testing.T, dir string, env []string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(tetherBin, args...)
	cmd.Dir = dir
	cmd.Env = append(cleanEnv(), env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		code = exit.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return out.String(), errb.String(), code
}

// cleanEnv is the test's environment without TETHER_* variables, which
// would change the configuration under test.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "TETHER_") {
			env = append(env, kv)
		}
	}
	return env
}

func TestServeRejectsBadConfigWithOneLineNamingTheKey(t *testing.T) {
	cases := []struct{ name, yaml, key string }{
		{"unknown key", "listeners:\n  - name: tcp\n    address: ':0'\n    heartbeat: {idle_timout: 5s}\n", "listeners.tcp.heartbeat.idle_timout: unknown key"},
		{"negative duration", "listeners:\n  - {name: tcp, address: ':0', heartbeat: {idle_timeout: -5s}}\n", "listeners.tcp.heartbeat.idle_timeout: must not be negative"},
		{"unknown framing type", "listeners:\n  - {name: tcp, address: ':0', framing: {type: lenght}}\n", `listeners.tcp.framing.type: unknown value "lenght"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "bad.yaml")
			if err := os.WriteFile(path, []byte(c.yaml), 0o644); err != nil {
				t.Fatal(err)
			}
			_, stderr, code := tether(t, dir, "serve", "--config", path)
			if code == 0 {
				t.Fatal("serve accepted a bad configuration")
			}
			lines := strings.Split(strings.TrimSpace(stderr), "\n")
			if len(lines) != 1 || !strings.Contains(lines[0], c.key) {
				t.Fatalf("want one line naming %q, got:\n%s", c.key, stderr)
			}
			if _, err := os.Stat(filepath.Join(dir, "tether.pid")); err == nil {
				t.Error("a rejected configuration left a pid file")
			}
		})
	}
}

func TestServeStatusStop(t *testing.T) {
	dir := t.TempDir()
	httpAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	conf := filepath.Join(dir, "tether.yaml")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf(`
node: {name: cli}
log: {format: json}
http: {address: %q}
nats: {embedded: {port: -1}}
listeners:
  - {name: tcp, address: "127.0.0.1:0"}
`, httpAddr)), 0o644); err != nil {
		t.Fatal(err)
	}

	if out, _, code := tether(t, dir, "status", "-c", conf); code != 3 || !strings.Contains(out, "not running") {
		t.Fatalf("status before serve: code %d, %q", code, out)
	}

	serve := exec.Command(tetherBin, "serve", "-c", conf)
	serve.Dir = dir
	serve.Env = cleanEnv()
	var logs bytes.Buffer
	serve.Stderr = &logs
	if err := serve.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- serve.Wait() }()
	t.Cleanup(func() { _ = serve.Process.Kill() })

	var status string
	check.For(t, 20*time.Second, 50*time.Millisecond, func() error {
		out, _, code := tether(t, dir, "status", "-c", conf)
		if code != 0 || !strings.Contains(out, "node cli-") {
			return fmt.Errorf("status: code %d, %q", code, out)
		}
		status = out
		return nil
	})
	for _, want := range []string{fmt.Sprintf("running (pid %d)", serve.Process.Pid), "connected (embedded: true)", "http  " + httpAddr} {
		if !strings.Contains(status, want) {
			t.Errorf("status lacks %q:\n%s", want, status)
		}
	}
	// A file status cannot read says what is wrong with it, not "not
	// running" (exit 3 would tell a supervisor the node is down).
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("node: {name: cli, nmae: x}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, stderr, code := tether(t, dir, "status", "-c", bad); code != 1 || !strings.Contains(stderr, "node.nmae: unknown key") {
		t.Errorf("status with a bad file: code %d, %q %q", code, out, stderr)
	}

	out, stderr, code := tether(t, dir, "stop", "-c", conf)
	if code != 0 || !strings.Contains(out, "stopped") {
		t.Fatalf("stop: code %d, %q %q", code, out, stderr)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("serve exited with %v after SIGTERM; logs:\n%s", err, logs.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("serve still running after stop returned")
	}
	if _, err := os.Stat(filepath.Join(dir, "tether.pid")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("pid file left after a clean stop: %v", err)
	}
	for _, want := range []string{`"message":"embedded nats listening"`, `"message":"node stopped"`} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("logs lack %s", want)
		}
	}
	if out, _, code := tether(t, dir, "status", "-c", conf); code != 3 {
		t.Errorf("status after stop: code %d, %q", code, out)
	}
	if _, stderr, code := tether(t, dir, "stop", "-c", conf); code == 0 || !strings.Contains(stderr, "no pid file") {
		t.Errorf("stop when not running: code %d, %q", code, stderr)
	}
}

func TestReloadKeepsNodeRunningAndRejectsBadConfig(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "tether.yaml")
	write := func(level string) {
		body := fmt.Sprintf("node: {name: rl}\nlog: {format: json, level: %s}\nhttp: {address: ''}\nnats: {embedded: {port: -1}}\nlisteners: []\n", level)
		if err := os.WriteFile(conf, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("info")
	serve := exec.Command(tetherBin, "serve", "-c", conf)
	serve.Dir = dir
	serve.Env = cleanEnv()
	logs := &syncBuffer{}
	serve.Stderr = logs
	if err := serve.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = serve.Process.Kill(); _ = serve.Wait() }()
	check.For(t, 20*time.Second, 50*time.Millisecond, func() error {
		if !strings.Contains(logs.String(), `"node started"`) {
			return errors.New("node not started yet")
		}
		return nil
	})

	write("loud") // invalid: the running configuration stays
	if _, stderr, code := tether(t, dir, "reload", "-c", conf); code == 0 {
		t.Fatal("reload accepted an invalid file in the CLI")
	} else if !strings.Contains(stderr, "log.level") {
		t.Errorf("reload error does not name the key: %q", stderr)
	}
	if err := serve.Process.Signal(syscall.SIGHUP); err != nil { // as if sent by hand
		t.Fatal(err)
	}
	check.For(t, 10*time.Second, 50*time.Millisecond, func() error {
		if !strings.Contains(logs.String(), "configuration rejected") {
			return errors.New("no rejection logged")
		}
		return nil
	})

	write("debug")
	if _, stderr, code := tether(t, dir, "reload", "-c", conf); code != 0 {
		t.Fatalf("reload: %d %s", code, stderr)
	}
	check.For(t, 10*time.Second, 50*time.Millisecond, func() error {
		for _, line := range strings.Split(logs.String(), "\n") {
			if strings.Contains(line, `"configuration reloaded"`) && strings.Contains(line, `"log_level":"debug"`) {
				return nil
			}
		}
		return errors.New("reload to debug not logged")
	})
	if err := serve.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := serve.Wait(); err != nil {
		t.Fatalf("serve after SIGTERM: %v", err)
	}
}

// TestCLIUnauthorizedSaysWhatToDo: a CLI whose configuration lacks the
// node's http.token is told where to set it, by every admin command; and
// status, refused, exits 4, not 0.
func TestCLIUnauthorizedSaysWhatToDo(t *testing.T) {
	dir := t.TempDir()
	httpAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	tcpAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	p := startServeProcessIn(t, dir, fmt.Sprintf(`node: {name: tok}
log: {format: json}
http: {address: %q, token: s3cret}
nats: {embedded: {port: -1}}
listeners:
  - {name: tcp, address: %q}
`, httpAddr, tcpAddr), tcpAddr)
	conf := filepath.Join(dir, "tether.yaml")
	// The CLI's own file: the node's address, not its token.
	cli := filepath.Join(dir, "cli.yaml")
	if err := os.WriteFile(cli, []byte(fmt.Sprintf("http: {address: %q}\n", httpAddr)), 0o644); err != nil {
		t.Fatal(err)
	}
	check.For(t, 20*time.Second, 50*time.Millisecond, func() error {
		if out, stderr, code := tether(t, dir, "status", "-c", conf); code != 0 || !strings.Contains(out, "node tok-") {
			return fmt.Errorf("status with the token: code %d, %q %q", code, out, stderr)
		}
		return nil
	})

	const hint = "the admin API wants http.token: set it in the config the CLI reads (-c) or TETHER_HTTP_TOKEN"
	for _, args := range [][]string{{"nodes"}, {"rooms"}, {"push", "--all", "x"}, {"conn", "tok-x.y"}} {
		_, stderr, code := tether(t, dir, append(args, "-c", cli)...)
		if code != 1 || !strings.Contains(stderr, "unauthorized: "+hint) {
			t.Errorf("%v without the token: code %d, %q", args, code, stderr)
		}
	}
	out, stderr, code := tether(t, dir, "status", "-c", cli)
	if code != 4 || !strings.Contains(out, fmt.Sprintf("running (pid %d), state unknown: unauthorized: %s", p.cmd.Process.Pid, hint)) {
		t.Errorf("status without the token: code %d, %q %q", code, out, stderr)
	}
	out, stderr, code = tether(t, dir, "status", "-c", cli, "--set", "http.token=wrong")
	if code != 4 || !strings.Contains(out, "the admin API refused the CLI's http.token: set the node's in the config the CLI reads (-c) or TETHER_HTTP_TOKEN") {
		t.Errorf("status with a wrong token: code %d, %q %q", code, out, stderr)
	}
	// What the hint says works.
	if out, stderr, code := tetherEnv(t, dir, []string{"TETHER_HTTP_TOKEN=s3cret"}, "status", "-c", cli); code != 0 || !strings.Contains(out, "node tok-") {
		t.Errorf("status with TETHER_HTTP_TOKEN: code %d, %q %q", code, out, stderr)
	}
	p.stop(t)
}

// TestCLIFindsTheNodeFromAnotherDirectory: the pid file is relative to
// the configuration file's directory, so a node started in one directory
// is found from another; without its pid file the CLI finds the node by
// its admin API, and signals it only if it is a tether serve.
func TestCLIFindsTheNodeFromAnotherDirectory(t *testing.T) {
	root := t.TempDir()
	confDir, runDir, elsewhere := filepath.Join(root, "conf"), filepath.Join(root, "run"), filepath.Join(root, "elsewhere")
	for _, d := range []string{confDir, runDir, elsewhere} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	httpAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	tcpAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	conf := filepath.Join(confDir, "tether.yaml")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf(`node: {name: away}
log: {format: json}
http: {address: %q}
nats: {embedded: {port: -1}}
listeners:
  - {name: tcp, address: %q}
`, httpAddr, tcpAddr)), 0o644); err != nil {
		t.Fatal(err)
	}
	p := startServeProcessFile(t, runDir, conf, tcpAddr)
	pid := p.cmd.Process.Pid
	relConf := filepath.Join("..", "conf", "tether.yaml") // from elsewhere

	check.For(t, 20*time.Second, 50*time.Millisecond, func() error {
		out, stderr, code := tether(t, elsewhere, "status", "-c", relConf)
		if code != 0 || !strings.Contains(out, fmt.Sprintf("running (pid %d) node away-", pid)) {
			return fmt.Errorf("status from another directory: code %d, %q %q", code, out, stderr)
		}
		if strings.Contains(out, "found by its admin API") {
			return fmt.Errorf("status did not find the pid file: %q", out)
		}
		return nil
	})
	if _, err := os.Stat(filepath.Join(confDir, "tether.pid")); err != nil {
		t.Errorf("no pid file next to the configuration: %v", err)
	}
	if _, err := os.Stat(filepath.Join(runDir, "tether.pid")); err == nil {
		t.Error("the node wrote its pid file in its working directory")
	}
	if out, stderr, code := tether(t, elsewhere, "reload", "-c", relConf); code != 0 || !strings.Contains(out, fmt.Sprintf("reload requested (pid %d)", pid)) {
		t.Errorf("reload from another directory: code %d, %q %q", code, out, stderr)
	}

	// A pid file that is not there: the admin API names the node.
	noPID := []string{"-c", relConf, "--set", "pid_file=elsewhere.pid"}
	out, stderr, code := tether(t, elsewhere, append([]string{"status"}, noPID...)...)
	if code != 0 || !strings.Contains(out, fmt.Sprintf("running (pid %d) node away-", pid)) ||
		!strings.Contains(out, "found by its admin API at "+httpAddr+": no pid file "+filepath.Join("..", "conf", "elsewhere.pid")) {
		t.Errorf("status without the pid file: code %d, %q %q", code, out, stderr)
	}

	// An admin API whose pid is no tether serve (a node inside another
	// program, or another pid namespace's) is reported, not signalled.
	sleeper := exec.Command("sleep", "60")
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sleeper.Process.Kill(); _ = sleeper.Wait() })
	fake := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, `{"node":"fake-1","pid":%d,"listeners":[]}`, sleeper.Process.Pid)
	}))
	defer fake.Close()
	other := []string{"--set", "http.address=" + fake.Listener.Addr().String(), "--set", "pid_file="}
	if out, stderr, code := tether(t, elsewhere, append([]string{"status"}, other...)...); code != 0 || !strings.Contains(out, fmt.Sprintf("running (pid %d) node fake-1", sleeper.Process.Pid)) {
		t.Errorf("status of a node found by its admin API: code %d, %q %q", code, out, stderr)
	}
	for _, cmd := range []string{"stop", "reload"} {
		if _, stderr, code := tether(t, elsewhere, append([]string{cmd}, other...)...); code != 1 || !strings.Contains(stderr, fmt.Sprintf("answers for pid %d, which is not a tether serve process: signal it yourself", sleeper.Process.Pid)) {
			t.Errorf("%s of a process that is not tether serve: code %d, %q", cmd, code, stderr)
		}
	}
	if stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", sleeper.Process.Pid)); err != nil || strings.Contains(string(stat), ") Z ") {
		t.Errorf("the process that is not tether serve was signalled: %q %v", stat, err)
	}

	if out, stderr, code := tether(t, elsewhere, append([]string{"stop"}, noPID...)...); code != 0 || !strings.Contains(out, fmt.Sprintf("stopped (pid %d)", pid)) {
		t.Fatalf("stop without the pid file: code %d, %q %q", code, out, stderr)
	}
	if err := p.cmd.Wait(); err != nil {
		t.Errorf("serve after stop: %v", err)
	}
	if out, _, code := tether(t, elsewhere, "status", "-c", relConf); code != 3 || !strings.Contains(out, "not running: no pid file") || !strings.Contains(out, "no admin API answers at "+httpAddr) {
		t.Errorf("status after stop: code %d, %q", code, out)
	}
}

// TestCLIBenchFindsTheServerByItsConfiguration: bench idle and bench
// connect measure the node the configuration's pid_file names when --pid
// is not given, and bench idle reports a figure per connection or says it
// is not measurable, never a negative one.
func TestCLIBenchFindsTheServerByItsConfiguration(t *testing.T) {
	dir, elsewhere := t.TempDir(), t.TempDir()
	httpAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	tcpAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	wsAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	p := startServeProcessIn(t, dir, fmt.Sprintf(`node: {name: bench}
log: {format: json, level: warn}
http: {address: %q}
nats: {embedded: {port: -1}}
listeners:
  - {name: tcp, address: %q}
  - {name: ws, protocol: websocket, address: %q}
`, httpAddr, tcpAddr, wsAddr), tcpAddr)
	conf := filepath.Join(dir, "tether.yaml")
	check.For(t, 20*time.Second, 50*time.Millisecond, func() error {
		if out, stderr, code := tether(t, elsewhere, "status", "-c", conf); code != 0 || !strings.Contains(out, "node bench-") {
			return fmt.Errorf("status: code %d, %q %q", code, out, stderr)
		}
		return nil
	})
	server := fmt.Sprintf("server              pid %d (from %s)\n", p.cmd.Process.Pid, filepath.Join(dir, "tether.pid"))

	out, stderr, code := tether(t, elsewhere, "bench", "idle", "-c", conf, "--addr", tcpAddr, "--conns", "200", "--procs", "1", "--baseline", "1s", "--settle", "2s")
	if code != 0 || !strings.Contains(out, server) || !strings.Contains(out, "connections         200 ") {
		t.Fatalf("bench idle: code %d, %q %q", code, out, stderr)
	}
	var perConn float64
	if _, err := fmt.Sscanf(out[strings.Index(out, "RSS per connection"):], "RSS per connection  %f bytes", &perConn); err == nil {
		if perConn <= 0 {
			t.Errorf("bench idle: %v bytes per connection:\n%s", perConn, out)
		}
	} else if !strings.Contains(out, "RSS per connection  not measurable with 200 connections") {
		t.Errorf("bench idle: no figure per connection, and no word why:\n%s", out)
	}

	out, stderr, code = tether(t, elsewhere, "bench", "connect", "-c", conf, "--url", "ws://"+wsAddr+"/ws", "--conns", "20", "--procs", "1", "--rounds", "1")
	if code != 0 || !strings.Contains(out, server) || !strings.Contains(out, "server CPU") {
		t.Errorf("bench connect: code %d, %q %q", code, out, stderr)
	}

	// Neither --pid nor a running node: bench idle says so.
	_, stderr, code = tether(t, elsewhere, "bench", "idle", "--set", "http.address=", "--addr", tcpAddr, "--conns", "1")
	if code != 1 || !strings.Contains(stderr, "the server's RSS cannot be measured: --pid not given, and the configuration names no running node: no pid file tether.pid") {
		t.Errorf("bench idle without a server: code %d, %q", code, stderr)
	}
	p.stop(t)
}

package test

import (
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestDockerfile: what can be checked of the Dockerfile without a Docker
// daemon and its base images. Its build command, run here as it is
// written, builds a static binary (distroless/static has no C library)
// that reports the VERSION build argument; the image has a build stage
// and a runtime stage, runs as a user other than root, and exposes the
// client ports.
func TestDockerfile(t *testing.T) {
	data, err := os.ReadFile("../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	dockerfile := string(data)
	build := regexp.MustCompile(`(?m)^RUN (CGO_ENABLED=0 go build .*)$`).FindStringSubmatch(dockerfile)
	if build == nil || !strings.Contains(build[1], "-trimpath") || !strings.Contains(build[1], "-X main.version=${VERSION}") {
		t.Fatalf("no CGO_ENABLED=0 go build -trimpath with the version in -ldflags: %q", build)
	}
	bin := filepath.Join(t.TempDir(), "tether")
	cmd := exec.Command("sh", "-c", strings.ReplaceAll(build[1], "/out/tether", bin))
	cmd.Dir = ".."
	cmd.Env = append(os.Environ(), "VERSION=v0.0.0-docker")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", build[1], err, out)
	}
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Errorf("the binary needs a dynamic loader: not for distroless/static")
		}
	}
	if out, err := exec.Command(bin, "version").Output(); err != nil || !strings.HasPrefix(string(out), "tether v0.0.0-docker ") {
		t.Errorf("version: %q %v", out, err)
	}

	if n := len(regexp.MustCompile(`(?m)^FROM `).FindAllString(dockerfile, -1)); n != 2 {
		t.Errorf("%d stages, want a build and a runtime stage", n)
	}
	runtime := dockerfile[strings.LastIndex(dockerfile, "\nFROM "):]
	user := regexp.MustCompile(`(?m)^USER (\S+)$`).FindStringSubmatch(runtime)
	if user == nil || user[1] == "root" || strings.HasPrefix(user[1], "0") {
		t.Errorf("the runtime stage runs as %q, want a user other than root", user)
	}
	if !regexp.MustCompile(`(?m)^EXPOSE 9501 9502`).MatchString(runtime) {
		t.Errorf("the runtime stage does not expose 9501 and 9502")
	}
}

// TestSystemdUnit: packaging/tether.service passes systemd-analyze verify
// (with ExecStart at the test's binary) and has what the README promises:
// a dedicated user, a descriptor limit, a restart on failure, and reload
// by SIGHUP.
func TestSystemdUnit(t *testing.T) {
	data, err := os.ReadFile("../packaging/tether.service")
	if err != nil {
		t.Fatal(err)
	}
	unit := string(data)
	for _, want := range []string{"\nUser=tether\n", "\nLimitNOFILE=", "\nRestart=on-failure\n", "\nExecReload=/bin/kill -HUP $MAINPID\n", "\nExecStart=/usr/local/bin/tether serve\n"} {
		if !strings.Contains(unit, want) {
			t.Errorf("the unit lacks %q", strings.TrimSpace(want))
		}
	}
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("no systemd-analyze")
	}
	path := filepath.Join(t.TempDir(), "tether.service")
	if err := os.WriteFile(path, []byte(strings.ReplaceAll(unit, "/usr/local/bin/tether", tetherBin)), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(analyze, "verify", path).CombinedOutput(); err != nil || len(out) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}

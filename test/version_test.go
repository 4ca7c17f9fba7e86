package test

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestVersionNamesTheCommit: `tether version` says which build runs. Built
// from a git checkout it prints the commit (and whether the tree had
// changes) that the Go toolchain recorded, with no -ldflags; with
// -ldflags "-X main.version=..." that version, and the commit too. The
// checkout is a copy of this tree in a fresh repository: Go records the
// commit only where .git is a directory, not in a git worktree. Built
// with -trimpath, as the Dockerfile builds, so that the build cache
// serves the copy from the second run on.
func TestVersionNamesTheCommit(t *testing.T) {
	if testing.Short() {
		t.Skip("builds tether twice")
	}
	repo := t.TempDir()
	files, err := exec.Command("git", "-C", "..", "ls-files", "-co", "--exclude-standard").Output()
	if err != nil {
		t.Skipf("not in a git work tree: %v", err)
	}
	for _, f := range strings.Fields(string(files)) {
		data, err := os.ReadFile(filepath.Join("..", f))
		if os.IsNotExist(err) {
			continue // deleted in the tree, not yet in the index
		}
		if err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Join(repo, filepath.Dir(f)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(repo, f), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	run := func(name string, args ...string) string {
		t.Helper()
		cmd := exec.Command(name, args...)
		cmd.Dir = repo
		cmd.Env = append(cleanEnv(), "GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@t", "GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@t")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
		}
		return strings.TrimSpace(string(out))
	}
	run("git", "init", "-q")
	run("git", "add", "-A")
	run("git", "commit", "-q", "-m", "build")
	commit := run("git", "rev-parse", "HEAD")[:12]

	bin := filepath.Join(repo, "tether-bin")
	run("go", "build", "-trimpath", "-buildvcs=true", "-o", bin, "./cmd/tether")
	plain := regexp.MustCompile(`^tether \S+ \(commit ` + commit + `\) go1\.\S+ \S+/\S+$`)
	if out := run(bin, "version"); !plain.MatchString(out) {
		t.Errorf("go build in a checkout: %q, want the commit %s", out, commit)
	}
	if err := os.WriteFile(filepath.Join(repo, "README.md"), []byte("changed\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	run("go", "build", "-trimpath", "-buildvcs=true", "-ldflags", "-X main.version=v9.9.9", "-o", bin, "./cmd/tether")
	if out, want := run(bin, "version"), "tether v9.9.9 (commit "+commit+", modified) go1."; !strings.HasPrefix(out, want) {
		t.Errorf("with -ldflags and a changed tree: %q, want %q...", out, want)
	}
}

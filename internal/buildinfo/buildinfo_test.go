package buildinfo

import (
	"runtime/debug"
	"testing"
)

func TestFrom(t *testing.T) {
	vcs := func(rev, modified string) []debug.BuildSetting {
		return []debug.BuildSetting{{Key: "vcs", Value: "git"}, {Key: "vcs.revision", Value: rev}, {Key: "vcs.modified", Value: modified}}
	}
	const rev = "3ba658c1a2b4d5e6f708192a3b4c5d6e7f809112"
	cases := []struct {
		name    string
		ldflags string
		bi      *debug.BuildInfo
		want    string
	}{
		{"nothing recorded", "", nil, "dev"},
		{"go build without vcs (a worktree, -buildvcs=false)", "", &debug.BuildInfo{Main: debug.Module{Version: "(devel)"}}, "dev"},
		{"go build in a checkout", "", &debug.BuildInfo{Main: debug.Module{Version: "(devel)"}, Settings: vcs(rev, "false")}, "dev (commit 3ba658c1a2b4)"},
		{"go run with changes", "", &debug.BuildInfo{Settings: vcs(rev, "true")}, "dev (commit 3ba658c1a2b4, modified)"},
		{"go install of a version", "", &debug.BuildInfo{Main: debug.Module{Version: "v1.2.3"}}, "v1.2.3"},
		{"ldflags win", "v2.0.0", &debug.BuildInfo{Main: debug.Module{Version: "v1.2.3"}, Settings: vcs(rev, "false")}, "v2.0.0 (commit 3ba658c1a2b4)"},
		{"a short revision", "v2.0.0", &debug.BuildInfo{Settings: vcs("abc", "false")}, "v2.0.0 (commit abc)"},
	}
	for _, c := range cases {
		if got := from(c.ldflags, c.bi).String(); got != c.want {
			t.Errorf("%s: %q, want %q", c.name, got, c.want)
		}
	}
}

// TestGet: the test binary has build info; no -ldflags version.
func TestGet(t *testing.T) {
	if got := Get("v9").Version; got != "v9" {
		t.Errorf("Get(v9).Version = %q", got)
	}
	if got := Get(""); got.Version == "" {
		t.Errorf("Get(\"\") = %+v: no version", got)
	}
}

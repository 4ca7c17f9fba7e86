// Package buildinfo says which build of tether is running: the version
// given at build time with -ldflags, or else what the Go toolchain
// recorded in the binary (runtime/debug.ReadBuildInfo): the module's
// version under `go install tether/cmd/tether@v1.2.3`, and the VCS
// revision, and whether the tree had changes, under `go build` in a git
// checkout. Go records those only where .git is a directory (not in a
// git worktree), not with -buildvcs=false, and under `go run` only with
// -buildvcs=true.
package buildinfo

import (
	"runtime/debug"
	"strings"
)

// Info is one build's identity.
type Info struct {
	// Version is the -ldflags version, else the module's version, else
	// "dev".
	Version string
	// Commit is the VCS revision, shortened to 12 characters; "" when
	// the toolchain recorded none.
	Commit string
	// Modified says the tree had changes the commit does not hold.
	Modified bool
}

// Get returns the running binary's Info; ldflags is the version set at
// build time ("" when none was).
func Get(ldflags string) Info {
	bi, _ := debug.ReadBuildInfo() // nil when the binary has none
	return from(ldflags, bi)
}

// from builds the Info of ldflags and bi (nil: nothing recorded).
func from(ldflags string, bi *debug.BuildInfo) Info {
	info := Info{Version: ldflags}
	if bi != nil {
		if info.Version == "" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			info.Version = bi.Main.Version
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				info.Commit = s.Value[:min(len(s.Value), 12)]
			case "vcs.modified":
				info.Modified = s.Value == "true"
			}
		}
	}
	if info.Version == "" {
		info.Version = "dev"
	}
	return info
}

// String is the version, then the commit when known:
// "v1.2.3 (commit 3ba658c1a2b4, modified)".
func (i Info) String() string {
	if i.Commit == "" {
		return i.Version
	}
	var b strings.Builder
	b.WriteString(i.Version + " (commit " + i.Commit)
	if i.Modified {
		b.WriteString(", modified")
	}
	b.WriteString(")")
	return b.String()
}

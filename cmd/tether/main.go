// Command tether is the tether node and its control tool: `tether serve`
// runs a node; stop, reload and status find it by its pid file; push,
// conn, rooms and nodes talk to a cluster through the admin API; bench
// generates load. Every command is declared in commands.go.
package main

import (
	"fmt"
	"os"
	"runtime"

	"tether/internal/buildinfo"
)

// version is set at build time with -ldflags "-X main.version=v1.2.3";
// init adds the commit, and finds both when it is not set (buildinfo).
var version string

func init() { version = buildinfo.Get(version).String() }

func main() {
	if err := rootCommand().Execute(); err != nil {
		if code, ok := err.(exitCode); ok {
			os.Exit(int(code)) // the command already said why
		}
		fmt.Fprintln(os.Stderr, "tether:", err)
		os.Exit(1)
	}
}

// exitCode is an error that carries the process exit status, for commands
// whose status is an answer (status: 3 means not running).
type exitCode int

func (e exitCode) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

func runVersion(c *call) error {
	fmt.Fprintf(c.out, "tether %s %s %s/%s\n", version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
	return nil
}

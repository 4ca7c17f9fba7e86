// Command tether is the tether node and its control tool: `tether serve`
// runs a node; stop, reload and status find it by its pid file; push,
// conn, rooms and nodes talk to a cluster through the admin API; bench
// generates load.
package main

import (
	"fmt"
	"os"
	"runtime"

	"github.com/spf13/cobra"

	"tether/config"
	"tether/internal/buildinfo"
)

// version is set at build time with -ldflags "-X main.version=v1.2.3";
// init adds the commit, and finds both when it is not set (buildinfo).
var version string

func init() { version = buildinfo.Get(version).String() }

// configFlags are the flags every command that reads the configuration
// shares: the file, and --set overrides.
type configFlags struct {
	file string
	sets []string
}

func (f *configFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringVarP(&f.file, "config", "c", "", "configuration file (default $TETHER_CONFIG; none: built-in defaults)")
	cmd.Flags().StringArrayVar(&f.sets, "set", nil, "override one key, e.g. --set log.level=debug (repeatable)")
}

// load reads the configuration: defaults, file, TETHER_* environment,
// --set flags.
func (f *configFlags) load() (*config.Config, error) {
	file := f.file
	if file == "" {
		file = os.Getenv(config.EnvPrefix + "CONFIG")
	}
	return config.Load(file, os.Environ(), f.sets)
}

func main() {
	root := &cobra.Command{
		Use:           "tether",
		Short:         "tether holds many TCP and WebSocket connections open and fans messages out to rooms",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(serveCmd(), stopCmd(), reloadCmd(), statusCmd(), versionCmd(),
		pushCmd(), connCmd(), roomsCmd(), nodesCmd(), tokenCmd(), benchCmd())
	if err := root.Execute(); err != nil {
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

func versionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "print the version",
		Args:  cobra.NoArgs,
		Run: func(cmd *cobra.Command, _ []string) {
			fmt.Fprintf(cmd.OutOrStdout(), "tether %s %s %s/%s\n", version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
		},
	}
}

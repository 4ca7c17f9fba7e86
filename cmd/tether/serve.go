package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"

	"tether/actors/node"
)

// serveGCPercent is the garbage collector's target of `tether serve` when
// GOGC is not set.
const serveGCPercent = 50

func runServe(c *call) error {
	cfg, err := c.config()
	if err != nil {
		return err
	}
	log := newLogger(cfg.Log, os.Stderr)
	// A node's heap is mostly its idle connections, long-lived and
	// small: GOGC=50 keeps its size at 1.5x what is live instead of 2x
	// (a quarter less memory per idle connection), for collections that
	// cost little, as the delivery path allocates per message, not per
	// delivery. GOGC in the environment still decides.
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(serveGCPercent)
	}
	if err := writePIDFile(cfg.PIDFile); err != nil {
		return err
	}
	defer removePIDFile(cfg.PIDFile)

	// Listen for signals before the node starts so that an early SIGTERM
	// is not lost.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)

	n, err := node.Start(node.Options{Config: cfg, Log: log, Version: version})
	if err != nil {
		return err
	}
	for sig := range sigs {
		if sig == syscall.SIGHUP {
			newCfg, err := c.config()
			if err != nil {
				log.Error().Err(err).Msg("reload: configuration rejected; keeping the running one")
				continue
			}
			n.Reload(newCfg)
			continue
		}
		log.Info().Str("signal", sig.String()).Msg("stopping")
		break
	}
	ctx, cancel := context.WithTimeout(context.Background(), n.Config().ShutdownTimeout.D())
	defer cancel()
	return n.Shutdown(ctx)
}

// writePIDFile records this process, refusing to start over a live node.
func writePIDFile(path string) error {
	if path == "" {
		return nil
	}
	if pid, err := readPIDFile(path); err == nil && processAlive(pid) {
		return fmt.Errorf("already running with pid %d (pid file %s)", pid, path)
	}
	if err := os.WriteFile(path, fmt.Appendf(nil, "%d\n", os.Getpid()), 0o644); err != nil {
		return fmt.Errorf("pid_file: %w", err)
	}
	return nil
}

func removePIDFile(path string) {
	if path == "" {
		return
	}
	// Only remove our own: a second serve that failed must not delete the
	// file of the node that runs.
	if pid, err := readPIDFile(path); err == nil && pid == os.Getpid() {
		_ = os.Remove(path)
	} else if err != nil && !errors.Is(err, os.ErrNotExist) {
		_ = os.Remove(path)
	}
}

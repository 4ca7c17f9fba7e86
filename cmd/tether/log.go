package main

import (
	"io"
	"os"
	"time"

	"github.com/mattn/go-isatty"
	"github.com/rs/zerolog"

	"tether/config"
)

// newLogger writes JSON lines, or human-readable lines when format is
// console, or auto and stderr is a terminal. The level is set globally by
// the node (so that reload can change it), not on this logger.
func newLogger(cfg config.Log, w *os.File) zerolog.Logger {
	var out io.Writer = w
	if cfg.Format == "console" || (cfg.Format == "auto" && isatty.IsTerminal(w.Fd())) {
		out = zerolog.ConsoleWriter{Out: w, TimeFormat: time.TimeOnly}
	}
	zerolog.TimeFieldFormat = time.RFC3339Nano
	return zerolog.New(out).With().Timestamp().Logger()
}

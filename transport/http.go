package transport

import (
	"context"
	"crypto/subtle"
	"crypto/tls"
	"errors"
	stdlog "log"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/rs/zerolog"
)

// HTTPServer is an http.Server bound to its address before it serves, so
// that a taken port fails the node's start instead of a goroutine later.
type HTTPServer struct {
	srv *http.Server
	ln  net.Listener
}

// ListenHTTP binds addr and serves handler on it in a goroutine: HTTPS
// when tlsConfig is set.
func ListenHTTP(addr string, handler http.Handler, tlsConfig *tls.Config, log zerolog.Logger) (*HTTPServer, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	if tlsConfig != nil {
		ln = tls.NewListener(ln, tlsConfig)
	}
	return serveHTTP(ln, &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second}, log), nil
}

func serveHTTP(ln net.Listener, srv *http.Server, log zerolog.Logger) *HTTPServer {
	srv.ErrorLog = zerologStd(log)
	s := &HTTPServer{ln: ln, srv: srv}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error().Err(err).Str("address", ln.Addr().String()).Msg("http server stopped")
		}
	}()
	return s
}

// Addr is the bound address (useful when the configured port was 0).
func (s *HTTPServer) Addr() net.Addr { return s.ln.Addr() }

// Shutdown stops accepting and waits for requests in flight until ctx
// ends; those still running then are cut.
func (s *HTTPServer) Shutdown(ctx context.Context) error {
	if err := s.srv.Shutdown(ctx); err != nil {
		return s.srv.Close()
	}
	return nil
}

// RequireToken lets a request through only with "Authorization: Bearer
// token". An empty token lets every request through: Validate only allows
// that on a loopback address.
func RequireToken(token string, next http.Handler) http.Handler {
	if token == "" {
		return next
	}
	want := []byte("Bearer " + token)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got := []byte(r.Header.Get("Authorization"))
		if subtle.ConstantTimeCompare(got, want) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="tether"`)
			http.Error(w, `{"error":"unauthorized"}`, http.StatusUnauthorized)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// zerologStd adapts net/http's error log (TLS handshake errors and the
// like) to zerolog at warn level.
func zerologStd(log zerolog.Logger) *stdlog.Logger {
	return stdlog.New(stdLogWriter{log.With().Str("component", "http").Logger()}, "", 0)
}

type stdLogWriter struct{ log zerolog.Logger }

func (w stdLogWriter) Write(p []byte) (int, error) {
	w.log.Warn().Msg(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

package test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"tether/actors/node"
	"tether/config"
)

// TestExternalNATSCredentials: a node connects to an external nats-server
// that requires a user and password, or a token, with nats.user and
// nats.password, nats.token, or credentials in nats.url; without them, or
// with wrong ones, its start fails at once with the authorization error,
// naming the keys. The status API shows the URL without credentials.
func TestExternalNATSCredentials(t *testing.T) {
	cases := []struct {
		name   string
		server func(*server.Options)
		right  func(n *config.NATS, url string)
		wrong  func(n *config.NATS, url string)
	}{
		{"user and password",
			func(o *server.Options) { o.Username, o.Password = "tether", "s3cret" },
			func(n *config.NATS, url string) { n.URL, n.User, n.Password = url, "tether", "s3cret" },
			func(n *config.NATS, url string) { n.URL, n.User, n.Password = url, "tether", "wrong" }},
		{"token",
			func(o *server.Options) { o.Authorization = "s3cret" },
			func(n *config.NATS, url string) { n.URL, n.Token = url, "s3cret" },
			func(n *config.NATS, url string) { n.URL, n.Token = url, "wrong" }},
		{"user and password in the URL",
			func(o *server.Options) { o.Username, o.Password = "tether", "s3cret" },
			func(n *config.NATS, url string) { n.URL = strings.Replace(url, "nats://", "nats://tether:s3cret@", 1) },
			func(n *config.NATS, url string) { n.URL = strings.Replace(url, "nats://", "nats://tether:wrong@", 1) }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			opts := &server.Options{Host: "127.0.0.1", Port: -1, NoSigs: true, NoLog: true}
			c.server(opts)
			ns := runNATS(t, opts)
			for _, creds := range []func(*config.NATS, string){func(n *config.NATS, url string) { n.URL = url }, c.wrong} {
				cfg := nodeConfig()
				creds(&cfg.NATS, ns.ClientURL())
				start := time.Now()
				n, err := node.Start(node.Options{Config: cfg, Log: zerolog.Nop()})
				if err == nil {
					_ = n.Shutdown(t.Context())
					t.Fatalf("started with NATS URL %s, user %q, token %q", cfg.NATS.URL, cfg.NATS.User, cfg.NATS.Token)
				}
				if !errors.Is(err, nats.ErrAuthorization) || !strings.Contains(err.Error(), "nats.user and nats.password, nats.token") ||
					strings.Contains(err.Error(), "s3cret") || strings.Contains(err.Error(), "wrong") {
					t.Errorf("start: %v; want the authorization error, naming the keys, without credentials", err)
				}
				if took := time.Since(start); took > 5*time.Second {
					t.Errorf("the start failed after %s", took)
				}
			}
			n := startNode(t, func(cfg *config.Config) { c.right(&cfg.NATS, ns.ClientURL()) })
			if code := api(t, n, http.MethodGet, "/readyz", nil, nil); code != http.StatusOK {
				t.Errorf("readyz %d", code)
			}
			var st node.Status
			if code := api(t, n, http.MethodGet, "/api/status", nil, &st); code != http.StatusOK || st.NATS != ns.ClientURL() {
				t.Errorf("status %d shows NATS %q, want %q", code, st.NATS, ns.ClientURL())
			}
		})
	}
}

// TestExternalNATSOverTLS: with nats.tls, a node connects to a nats-server
// that speaks TLS only and requires a client certificate: it trusts the
// server's certificate through ca_file and presents the one of cert_file
// and key_file; without the client certificate, or without the CA, its
// start fails.
func TestExternalNATSOverTLS(t *testing.T) {
	dir := t.TempDir()
	ca, caKey := newCert(t, dir, "ca", nil, nil)
	newCert(t, dir, "server", ca, caKey)
	newCert(t, dir, "client", ca, caKey)
	file := func(name string) string { return filepath.Join(dir, name) }
	serverCert, err := tls.LoadX509KeyPair(file("server.pem"), file("server-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	ns := runNATS(t, &server.Options{Host: "127.0.0.1", Port: -1, NoSigs: true, NoLog: true, TLSVerify: true,
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{serverCert}, ClientCAs: pool,
			ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS12}})
	if !strings.HasPrefix(ns.ClientURL(), "tls://") {
		t.Fatalf("the server does not require TLS: %s", ns.ClientURL())
	}
	full := config.NATSTLS{CAFile: file("ca.pem"), CertFile: file("client.pem"), KeyFile: file("client-key.pem")}
	for _, c := range []struct {
		name string
		tls  config.NATSTLS
		want string
	}{
		{"no client certificate", config.NATSTLS{CAFile: full.CAFile}, "tls"}, // the server closes the handshake
		{"no CA", config.NATSTLS{CertFile: full.CertFile, KeyFile: full.KeyFile}, "certificate signed by unknown authority"},
	} {
		cfg := nodeConfig()
		cfg.NATS.URL, cfg.NATS.TLS = ns.ClientURL(), c.tls
		if err := cfg.Validate(); err != nil {
			t.Fatal(err)
		}
		n, err := node.Start(node.Options{Config: cfg, Log: zerolog.Nop()})
		if err == nil {
			_ = n.Shutdown(t.Context())
			t.Fatalf("%s: started", c.name)
		}
		if !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", c.name, err, c.want)
		}
	}
	n := startNode(t, func(cfg *config.Config) { cfg.NATS.URL, cfg.NATS.TLS = ns.ClientURL(), full })
	if code := api(t, n, http.MethodGet, "/readyz", nil, nil); code != http.StatusOK {
		t.Errorf("readyz %d", code)
	}
}

// newCert writes name.pem and name-key.pem in dir: a CA when parent is
// nil, else a certificate for 127.0.0.1 signed by parent.
func newCert(t *testing.T, dir, name string, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		KeyUsage:     x509.KeyUsageDigitalSignature,
	}
	if parent == nil {
		tmpl.IsCA, tmpl.BasicConstraintsValid = true, true
		tmpl.KeyUsage |= x509.KeyUsageCertSign
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	for file, block := range map[string]*pem.Block{
		name + ".pem":     {Type: "CERTIFICATE", Bytes: der},
		name + "-key.pem": {Type: "EC PRIVATE KEY", Bytes: keyDER},
	} {
		if err := os.WriteFile(filepath.Join(dir, file), pem.EncodeToMemory(block), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert, key
}

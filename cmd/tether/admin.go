package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"tether/actors/cluster"
	"tether/actors/node"
	"tether/actors/protocol"
	"tether/config"
)

// adminCall calls the admin API of the node the configuration names (its
// http.address and token); any node answers for the whole cluster.
func adminCall(cfg *config.Config, method, path string, body any, out any) error {
	if cfg.HTTP.Address == "" {
		return fmt.Errorf("http.address is empty: no admin API to call")
	}
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	addr := dialable(cfg.HTTP.Address)
	client, scheme := &http.Client{Timeout: 10 * time.Second}, "http"
	if cfg.HTTP.TLS.Enabled() {
		host, _, _ := net.SplitHostPort(addr)
		tlsConfig, err := adminTLS(cfg.HTTP.TLS.CertFile, host)
		if err != nil {
			return err
		}
		client.Transport = &http.Transport{TLSClientConfig: tlsConfig}
		scheme = "https"
	}
	req, err := http.NewRequest(method, scheme+"://"+addr+path, rd)
	if err != nil {
		return err
	}
	if cfg.HTTP.Token != "" {
		req.Header.Set("Authorization", "Bearer "+cfg.HTTP.Token)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode == http.StatusUnauthorized {
		return &unauthorizedError{sent: cfg.HTTP.Token != ""}
	}
	if resp.StatusCode != http.StatusOK {
		var ae node.APIError
		if json.Unmarshal(data, &ae) == nil && ae.Code != "" {
			return &ae
		}
		return fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(data)))
	}
	if out != nil {
		return json.Unmarshal(data, out)
	}
	return nil
}

// unauthorizedError is the admin API's refusal of the CLI's token: it
// says what to do about it.
type unauthorizedError struct{ sent bool } // whether the CLI sent a token

func (e *unauthorizedError) Error() string {
	const where = "in the config the CLI reads (-c) or TETHER_HTTP_TOKEN"
	if e.sent {
		return "unauthorized: the admin API refused the CLI's http.token: set the node's " + where
	}
	return "unauthorized: the admin API wants http.token: set it " + where
}

// adminTLS is how the CLI trusts a node's admin server over HTTPS: the
// server may present the very certificate http.tls.cert_file holds,
// whatever names it is for (the CLI reads the node's own configuration,
// and dials its address, loopback for 0.0.0.0: a self-signed certificate,
// or one for the node's public name, must do), or else one the system's
// roots vouch for, for host.
func adminTLS(certFile, host string) (*tls.Config, error) {
	data, err := os.ReadFile(certFile)
	if err != nil {
		return nil, fmt.Errorf("http.tls.cert_file: %w", err)
	}
	var configured []*x509.Certificate
	for block, rest := pem.Decode(data); block != nil; block, rest = pem.Decode(rest) {
		if block.Type != "CERTIFICATE" {
			continue
		}
		if c, err := x509.ParseCertificate(block.Bytes); err == nil {
			configured = append(configured, c)
		}
	}
	return &tls.Config{
		// Verified by VerifyConnection instead, which Go calls whatever
		// InsecureSkipVerify says.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("the admin server presented no certificate")
			}
			leaf := cs.PeerCertificates[0]
			for _, c := range configured {
				if leaf.Equal(c) {
					return nil
				}
			}
			inter := x509.NewCertPool()
			for _, c := range cs.PeerCertificates[1:] {
				inter.AddCert(c)
			}
			_, err := leaf.Verify(x509.VerifyOptions{DNSName: host, Intermediates: inter})
			return err
		},
	}, nil
}

// jsonOrString reads a command-line value as JSON, or as a string when it
// is not JSON ("hello" and hello both send the string hello).
func jsonOrString(s string) json.RawMessage {
	if json.Valid([]byte(s)) {
		return json.RawMessage(s)
	}
	b, _ := json.Marshal(s)
	return b
}

func runPush(c *call) error {
	cfg, err := c.config()
	if err != nil {
		return err
	}
	req := node.APIRequest{
		Conn: c.String("conn"), User: c.String("user"), Room: c.String("room"), All: c.Bool("all"),
		Data: jsonOrString(c.args[0]), Count: true,
	}
	var reply node.PushReply
	if err := adminCall(cfg, http.MethodPost, "/api/push", &req, &reply); err != nil {
		return err
	}
	switch {
	case reply.Connections != nil && *reply.Connections == 1:
		fmt.Fprintln(c.out, "pushed to 1 connection")
	case reply.Connections != nil:
		fmt.Fprintf(c.out, "pushed to %d connections\n", *reply.Connections)
	case reply.Uncounted != "":
		fmt.Fprintln(c.out, "pushed; not counted:", reply.Uncounted)
	default: // a node that does not count
		fmt.Fprintln(c.out, "pushed")
	}
	return nil
}

func runConn(c *call) error {
	cfg, err := c.config()
	if err != nil {
		return err
	}
	id, bind := c.args[0], c.String("bind")
	switch {
	case c.Bool("kick"):
		if err := adminCall(cfg, http.MethodPost, "/api/kick", &node.APIRequest{Conn: id}, nil); err != nil {
			return err
		}
		fmt.Fprintln(c.out, "kicked", id)
	case bind != "":
		if err := adminCall(cfg, http.MethodPost, "/api/bind", &node.APIRequest{Conn: id, User: bind}, nil); err != nil {
			return err
		}
		fmt.Fprintf(c.out, "bound %s to user %s\n", id, bind)
	default:
		var info json.RawMessage
		if err := adminCall(cfg, http.MethodGet, "/api/conns/"+url.PathEscape(id), nil, &info); err != nil {
			return err
		}
		var pretty bytes.Buffer
		_ = json.Indent(&pretty, info, "", "  ")
		fmt.Fprintln(c.out, pretty.String())
	}
	return nil
}

func runRooms(c *call) error {
	cfg, err := c.config()
	if err != nil {
		return err
	}
	w := tabwriter.NewWriter(c.out, 0, 4, 2, ' ', 0)
	defer w.Flush()
	if len(c.args) == 1 {
		var members []protocol.Member
		if err := adminCall(cfg, http.MethodGet, "/api/rooms/"+url.PathEscape(c.args[0])+"/members", nil, &members); err != nil {
			return err
		}
		fmt.Fprintln(w, "CONN\tNAME\tNODE")
		for _, m := range members {
			fmt.Fprintf(w, "%s\t%s\t%s\n", m.Conn, m.Name, m.Node)
		}
		return nil
	}
	var rooms []node.RoomInfo
	if err := adminCall(cfg, http.MethodGet, "/api/rooms", nil, &rooms); err != nil {
		return err
	}
	fmt.Fprintln(w, "ROOM\tMEMBERS\tNODES")
	for _, r := range rooms {
		fmt.Fprintf(w, "%s\t%d\t%d\n", r.Room, r.Members, len(r.Nodes))
	}
	return nil
}

func runNodes(c *call) error {
	cfg, err := c.config()
	if err != nil {
		return err
	}
	var nodes []cluster.NodeInfo
	if err := adminCall(cfg, http.MethodGet, "/api/nodes", nil, &nodes); err != nil {
		return err
	}
	w := tabwriter.NewWriter(c.out, 0, 4, 2, ' ', 0)
	defer w.Flush()
	fmt.Fprintln(w, "NODE\tALIVE\tCONNECTIONS\tLAST SEEN\tUP SINCE")
	for _, n := range nodes {
		fmt.Fprintf(w, "%s\t%v\t%d\t%s ago\t%s\n", n.Node, n.Alive, n.Connections,
			time.Since(n.LastSeen).Round(time.Millisecond), n.Started.Format(time.RFC3339))
	}
	return nil
}

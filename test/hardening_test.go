package test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"tether/client"
	"tether/test/check"
)

// TestSubjectInputsCannotCutNodeOffNATS: ids, room names and user ids
// that would become NATS subjects are checked before use. A 5,000-byte
// connection id (which once made the server answer "maximum control line
// exceeded" and nats.go close the node's connection for good) and ids with
// wildcards are refused with bad_request, by the client protocol and the
// admin API alike, and the node stays in the cluster: a whisper across
// nodes still arrives, stats still answer, no NATS disconnect is counted.
func TestSubjectInputsCannotCutNodeOffNATS(t *testing.T) {
	ns := startNATS(t, -1)
	nodes := startCluster(t, ns.ClientURL(), "a", "b")
	a, b := nodes[0], nodes[1]
	ca, cb := a.dial(t, "tcp"), b.dial(t, "tcp")

	long := strings.Repeat("x", 5000) + ".1"
	for _, to := range []string{long, "b*.1", "b>.1", "b .1", "a.b.c\x00", "\xff\xfe.1"} {
		ev, err := ca.Call(client.Request{Op: "whisper", To: to, Data: "psst"})
		if err == nil || ev.Code != "bad_request" {
			t.Errorf("whisper to %.40q: %+v %v, want bad_request", to, ev, err)
		}
	}
	for _, path := range []string{"/api/conns/" + long, "/api/conns/b*.1"} {
		if code := api(t, a, http.MethodGet, path, nil, nil); code != http.StatusBadRequest {
			t.Errorf("GET %.50s: %d, want 400", path, code)
		}
	}
	for _, body := range []map[string]any{
		{"conn": long, "data": "x"}, {"user": strings.Repeat("u", 5000), "data": "x"}, {"room": strings.Repeat("r", 5000), "data": "x"},
	} {
		if code := api(t, a, http.MethodPost, "/api/push", body, nil); code != http.StatusBadRequest {
			t.Errorf("push %.60v: %d, want 400", body, code)
		}
	}

	// Still in the cluster: a whisper crosses, stats answer for both nodes.
	if _, err := ca.Call(client.Request{Op: "whisper", To: cb.ID(), Data: "still here"}); err != nil {
		t.Fatalf("whisper across nodes after the attempts: %v", err)
	}
	if ev, err := cb.Expect("message", 5*time.Second); err != nil || string(ev.Data) != `"still here"` {
		t.Fatalf("whisper: %+v %v", ev, err)
	}
	var stats []map[string]any
	if code := api(t, a, http.MethodGet, "/api/stats", nil, &stats); code != http.StatusOK || len(stats) != 2 {
		t.Fatalf("stats: %d %v", code, stats)
	}
	if v := counterValue(t, a, "tether_nats_disconnects_total"); v != 0 {
		t.Errorf("nats disconnects on a: %v", v)
	}
	check.Never(t, 300*time.Millisecond, 50*time.Millisecond, func() error {
		if code := api(t, a, http.MethodGet, "/readyz", nil, nil); code != http.StatusOK {
			return fmt.Errorf("readyz %d", code)
		}
		return nil
	})
}

package main

import (
	"strings"
	"testing"
)

func TestParseNATSMetrics(t *testing.T) {
	page := `# HELP tether_nats_published_total Messages published to NATS.
# TYPE tether_nats_published_total counter
tether_nats_published_total{kind="heartbeat"} 413
tether_nats_published_total{kind="message"} 20
tether_nats_received_total{kind="message"} 40
tether_nats_lost_total 0
`
	pub, recv := map[string]float64{"message": 1}, map[string]float64{}
	if err := parseNATSMetrics(strings.NewReader(page), pub, recv); err != nil {
		t.Fatal(err)
	}
	if pub["heartbeat"] != 413 || pub["message"] != 21 || recv["message"] != 40 || len(recv) != 1 {
		t.Fatalf("published %v received %v", pub, recv)
	}
	d := diff(map[string]float64{"message": 30, "heartbeat": 5}, map[string]float64{"message": 10, "heartbeat": 5})
	if len(d) != 1 || d["message"] != 20 || sum(d) != 20 || kinds(d) != "message 20" {
		t.Fatalf("diff %v", d)
	}
	if err := parseNATSMetrics(strings.NewReader(`tether_nats_received_total{kind="x"} nope`), pub, recv); err == nil {
		t.Fatal("a bad value parsed")
	}
}

func TestSplitList(t *testing.T) {
	if got := splitList(" a, ,b,"); len(got) != 2 || got[0] != "a" || got[1] != "b" {
		t.Fatalf("%q", got)
	}
}

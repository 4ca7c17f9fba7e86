package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func sampleResult() *benchResult {
	r := newResult("peer", "room", "socket.io", map[string]any{"members": 1000})
	r.add("server CPU per delivery", "µs", 7.5, 30, "lower")
	r.add("send to last member p99", "ms", 64.25, 12.5, "lower")
	r.add("deliveries/s", "1/s", 123456, 61728, "higher")
	r.add("deliveries", "", 0, 0, "")
	r.Series["tether"].LatencyMs = []float64{1, 2}
	return r
}

func TestSummaryTable(t *testing.T) {
	var b strings.Builder
	sampleResult().writeTable(&b)
	want := `room                     unit   tether  socket.io  tether/socket.io
---------------------------------------------------------------------
server CPU per delivery  µs       7.50       30.0             0.25x  lower is better
send to last member p99  ms       64.2       12.5             5.14x  lower is better
deliveries/s             1/s   123,456     61,728             2.00x  higher is better
deliveries                           0          0                 -
`
	if b.String() != want {
		t.Fatalf("got\n%s\nwant\n%s", b.String(), want)
	}
}

func TestFigure(t *testing.T) {
	for x, want := range map[float64]string{
		0: "0", 0.00123: "0.00123", 0.5: "0.50", 9.999: "10.00", 12.34: "12.3", 999: "999",
		1000: "1,000", 1234567.8: "1,234,568", -2500: "-2,500",
	} {
		if got := figure(x); got != want {
			t.Errorf("figure(%v) = %q, want %q", x, got, want)
		}
	}
}

func TestProgressLine(t *testing.T) {
	var sent atomic.Int64
	sent.Store(12)
	for _, c := range []struct {
		got, want string
	}{
		{progressLine("tether idle", 2500*time.Millisecond, 1200, 2000, 0, nil), "[tether idle]    2.5s  connected 1200/2000"},
		{progressLine("connect", time.Second, 40, 0, 0, nil), "[connect]    1.0s  connected 40"},
		{progressLine("room", 3*time.Second, 200, 200, 2400, &sent), "[room]    3.0s  connected 200/200  sent 12  received 2400"},
	} {
		if c.got != c.want {
			t.Errorf("got  %q\nwant %q", c.got, c.want)
		}
	}
}

// saveTwice saves the sample result to path twice and returns the file.
func saveTwice(t *testing.T, path string) []byte {
	t.Helper()
	for range 2 {
		if err := sampleResult().save(path); err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestSaveJSONAppends(t *testing.T) {
	path := filepath.Join(t.TempDir(), "results.json")
	b := saveTwice(t, path)
	var all []benchResult
	if err := json.Unmarshal(b, &all); err != nil {
		t.Fatal(err)
	}
	if len(all) != 2 || all[1].Scenario != "room" || all[1].Sides != [2]string{"tether", "socket.io"} ||
		len(all[1].Rows) != 4 || all[1].Rows[0].Ratio != 0.25 || all[1].Series["tether"].LatencyMs[1] != 2 ||
		all[1].Machine.CPUs == 0 || all[1].Params["members"] != 1000.0 {
		t.Fatalf("read back %+v", all)
	}
	if err := os.WriteFile(path, []byte(`{"not":"a list"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := sampleResult().save(path); err == nil {
		t.Fatal("appended to a file that is not a list of results")
	}
}

func TestSaveCSV(t *testing.T) {
	b := saveTwice(t, filepath.Join(t.TempDir(), "results.csv"))
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) != 1+2*4 || lines[0] != "time,bench,scenario,other,metric,unit,tether,other_value,ratio" {
		t.Fatalf("%s", b)
	}
	if !strings.HasSuffix(lines[1], ",peer,room,socket.io,server CPU per delivery,µs,7.5,30,0.250") {
		t.Fatalf("row %q", lines[1])
	}
}

func TestMedian(t *testing.T) {
	if m := median([]float64{3, 1, 2}); m != 2 {
		t.Fatal(m)
	}
	if m := median([]float64{4, 1, 3, 2}); m != 2.5 {
		t.Fatal(m)
	}
}

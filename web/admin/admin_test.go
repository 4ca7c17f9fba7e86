package admin

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
)

// TestVendoredUPlotIsTheLockedVersion: the uPlot committed in ui/vendor
// is the version package-lock.json pins (scripts/ui-deps copies it).
func TestVendoredUPlotIsTheLockedVersion(t *testing.T) {
	data, err := os.ReadFile("package-lock.json")
	if err != nil {
		t.Fatal(err)
	}
	var lock struct {
		Packages map[string]struct {
			Version string `json:"version"`
		} `json:"packages"`
	}
	if err := json.Unmarshal(data, &lock); err != nil {
		t.Fatal(err)
	}
	version := lock.Packages["node_modules/uplot"].Version
	if version == "" {
		t.Fatal("package-lock.json pins no uplot")
	}
	js, err := os.ReadFile("ui/vendor/uPlot.iife.min.js")
	if err != nil {
		t.Fatal(err)
	}
	// The build's first line: /*! https://github.com/leeoniya/uPlot (v1.6.32) */
	banner, _, _ := strings.Cut(string(js), "\n")
	if !strings.Contains(banner, "(v"+version+")") {
		t.Errorf("ui/vendor/uPlot.iife.min.js begins %q; the lock pins %s: run scripts/ui-deps", banner, version)
	}
}

// TestHandlerServesThePageUnderItsPolicy: every file of the UI, and the
// chat page's stylesheet, comes with the Content-Security-Policy.
func TestHandlerServesThePageUnderItsPolicy(t *testing.T) {
	srv := httptest.NewServer(http.StripPrefix("/ui", Handler()))
	defer srv.Close()
	for path, want := range map[string]string{
		"/ui/":                         `<script src="admin.js" defer></script>`,
		"/ui/admin.js":                 "'use strict';",
		"/ui/chat.css":                 "--accent:",
		"/ui/vendor/uPlot.iife.min.js": "var uPlot=",
		"/ui/vendor/uPlot.min.css":     ".uplot",
		"/ui/vendor/uPlot.LICENSE":     "MIT",
		"/ui/admin.css":                ".panels",
	} {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), want) {
			t.Errorf("%s: %s, body without %q", path, resp.Status, want)
		}
		csp := resp.Header.Get("Content-Security-Policy")
		if !strings.Contains(csp, "script-src 'self';") || !strings.Contains(csp, "frame-ancestors 'none'") || strings.Contains(csp, "unsafe") {
			t.Errorf("%s: Content-Security-Policy %q; want only the page's own scripts, and no framing", path, csp)
		}
	}
}

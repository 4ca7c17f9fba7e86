// Package admin holds the admin web UI, embedded in the binary and served
// by the admin HTTP server at /ui/. The page is static; its data comes
// from the admin API (/api/..., with the token the user types in) and
// /metrics. Its chart library, uPlot, is copied from npm into ui/vendor
// by scripts/ui-deps and committed, so that building needs no npm.
package admin

import (
	"embed"
	"io/fs"
	"net/http"

	"tether/web"
)

//go:embed ui
var files embed.FS

// csp allows the page only its own scripts, styles and API: no inline
// script or style, no framing (the page can kick connections, so no other
// site may overlay it).
const csp = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// Handler serves the UI's files, index.html at its root, and the chat
// page's stylesheet as chat.css: the two pages share one look. Mount it
// with http.StripPrefix.
func Handler() http.Handler {
	sub, err := fs.Sub(files, "ui")
	if err != nil {
		panic(err) // the embed directive guarantees "ui"
	}
	mux := http.NewServeMux()
	mux.Handle("/", http.FileServerFS(sub))
	mux.HandleFunc("/chat.css", func(w http.ResponseWriter, r *http.Request) {
		http.ServeFileFS(w, r, web.FS(), "style.css")
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", csp)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		mux.ServeHTTP(w, r)
	})
}

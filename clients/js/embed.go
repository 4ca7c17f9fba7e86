// Package js holds tether.js, the JavaScript client (README.md here), so
// that the binary carries it: every WebSocket listener serves it at
// /tether.js.
package js

import "embed"

// FS holds tether.js at its root.
//
//go:embed tether.js
var FS embed.FS

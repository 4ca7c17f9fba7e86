// Package web holds the chat page, embedded in the binary and served at /
// by WebSocket listeners that have no static_dir.
package web

import (
	"embed"
	"io/fs"
)

//go:embed static
var files embed.FS

// FS is the page's files, index.html at the root.
func FS() fs.FS {
	sub, err := fs.Sub(files, "static")
	if err != nil {
		panic(err) // the embed directive guarantees "static"
	}
	return sub
}

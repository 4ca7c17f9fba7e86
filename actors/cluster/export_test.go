package cluster

// What this package's tests (package cluster_test, which runs the bridge
// with the rooms and chat that import this package) need of its insides.

var (
	DecodeRoom = decodeRoom
	ParseRelay = Subjects.parseRelay
)

const (
	MaxAdminRequests = maxAdminRequests
	MaxAdminGathers  = maxAdminGathers
)

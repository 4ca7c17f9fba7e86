// Package cluster joins nodes over NATS (DESIGN.md section 6): the bridge
// actor holds the subscriptions and knows which nodes are alive; the Bus
// publishes and asks, counting what it could not send.
//
// Concurrency rules (guarded by this package's tests and
// test/cluster_test.go):
//   - Subscriptions are made and ended by the bridge actor only; a room's
//     events go from its subscription straight to the room's Handle.
//   - A node subscribes to a room's subject once, while the room has a
//     member on it, and to a user's while it holds a connection of the
//     user; an Unsubscribe or UnwatchUser that crossed a newer Subscribe
//     or WatchUser changes nothing.
//   - A node silent for dead_after is declared dead once: every room
//     drops its members, one left (node_down) each.
//   - The Bus bounds each Asker's questions in flight apart: clients
//     cannot use up the admin API's slots.
//
// The wire format is NATS messages whose body is what a client would see
// (the room event or pushed message, encoded once, delivered by every node
// as it is) and whose headers route it:
//
//	Tether-Kind    what the message is (see the Kind constants)
//	Tether-Node    the node that published it
//	Tether-Conn    the connection it is about or for
//	Tether-Room    the room it is about
//	Tether-Member  a member as JSON (joined)
//	Tether-Reason  why (left, kick)
//	Tether-User    a user id (push to a user)
//	Tether-Seq     the number of a node's message to a room (1, 2, ...), or
//	               of its last one (sync, state): gaps and duplicates show
//	Tether-Time    when a room message was sent, Unix nanoseconds
//	Tether-Event   a relay event: connect, message or close
//	Tether-Remote  a relay connection's client address, ip:port
//	Tether-Worker  in a relay worker's answer to connect: the subject it
//	               takes that connection's further events on
//
// Subjects, under the configured prefix (default "tether"):
//
//	<p>.node.<node>      one node: deliver to a connection, kick, info
//	<p>.room.<room>      every node with a local member of the room
//	<p>.user.<uid>       every node holding a connection bound to uid
//	<p>.all              every node: broadcast to every connection
//	<p>.cluster          every node: heartbeats, goodbyes, gathers
//	<p>.events.<name>    relay connects for workers in a queue group
//	<p>.relay.<conn>.<n> reply subject of a relay connection's message
//	                     events: NATS says there that their worker is gone
//	<p>.api.<op>         the admin API, one node answers (queue group)
package cluster

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"
)

// Headers of tether's NATS messages.
const (
	HeaderKind   = "Tether-Kind"
	HeaderNode   = "Tether-Node"
	HeaderConn   = "Tether-Conn"
	HeaderRoom   = "Tether-Room"
	HeaderMember = "Tether-Member"
	HeaderReason = "Tether-Reason"
	HeaderUser   = "Tether-User"
	HeaderEvent  = "Tether-Event"
	HeaderRemote = "Tether-Remote"
	HeaderSeq    = "Tether-Seq"
	HeaderTime   = "Tether-Time"
	HeaderWorker = "Tether-Worker"
)

// Kinds of tether's NATS messages on node, user, all and cluster
// subjects. Room subjects carry the room package's kinds (room.KindMessage
// and the rest).
const (
	KindDeliver   = "deliver"   // node, user, all: deliver the body to the connection(s)
	KindKick      = "kick"      // node: close a connection
	KindBind      = "bind"      // node: bind a connection to a user id
	KindInfo      = "info"      // node: reply with a connection's info
	KindHeartbeat = "heartbeat" // cluster: I am alive (body: JSON NodeInfo)
	KindGoodbye   = "goodbye"   // cluster: I am stopping
	KindGather    = "gather"    // cluster: every node replies (rooms, stats, a user's connections)
)

// Subjects builds the subjects under one prefix.
type Subjects struct{ Prefix string }

// Node is the subject of one node.
func (s Subjects) Node(node string) string { return s.Prefix + ".node." + node }

// Room is the subject of one room.
func (s Subjects) Room(room string) string { return s.Prefix + ".room." + room }

// User is the subject of one user id.
func (s Subjects) User(user string) string { return s.Prefix + ".user." + user }

// All is the broadcast subject.
func (s Subjects) All() string { return s.Prefix + ".all" }

// Cluster is the subject every node listens on.
func (s Subjects) Cluster() string { return s.Prefix + ".cluster" }

// Events is the relay subject of a listener, where workers take
// connects.
func (s Subjects) Events(listener string) string { return s.Prefix + ".events." + listener }

// Relay is the reply subject of a relay connection's message events while
// it is bound to its worker for the binding-th time: NATS answers there
// with a no-responders status when an event found no subscriber, and the
// binding tells a notice about an earlier worker from one about the
// current worker.
func (s Subjects) Relay(conn string, binding int) string {
	return s.Prefix + ".relay." + conn + "." + strconv.Itoa(binding)
}

// relayNotices is what a node subscribes to for its relay connections'
// notices: connection ids begin with their node's id.
func (s Subjects) relayNotices(node string) string { return s.Prefix + ".relay." + node + ".>" }

// parseRelay returns the connection and binding a Relay subject names.
func (s Subjects) parseRelay(subject string) (conn string, binding int, ok bool) {
	rest, ok := strings.CutPrefix(subject, s.Prefix+".relay.")
	i := strings.LastIndexByte(rest, '.')
	if !ok || i < 0 {
		return "", 0, false
	}
	binding, err := strconv.Atoi(rest[i+1:])
	return rest[:i], binding, err == nil
}

// API is the subject of one admin API operation.
func (s Subjects) API(op string) string { return s.Prefix + ".api." + op }

// maxSubject bounds the subjects the bus sends on, far below the NATS
// server's 4 KiB control line: a longer line makes the server answer
// "maximum control line exceeded", on which nats.go closes the
// connection for good.
const maxSubject = 512

// ErrBadSubject refuses a subject NATS would refuse. Every input that
// becomes part of a subject is checked before use (protocol.CheckRoom and
// the rest), so this is the last line, not the check.
var ErrBadSubject = errors.New("not a subject tether publishes on")

// checkSubject returns ErrBadSubject for a subject that is too long, has
// an empty token, whitespace or control bytes, or a wildcard ('*' or '>'
// in a publication closes nats.go's connection too).
func checkSubject(s string) error {
	if s == "" || len(s) > maxSubject || s[0] == '.' || s[len(s)-1] == '.' || strings.Contains(s, "..") {
		return fmt.Errorf("%w: %.80q", ErrBadSubject, s)
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c == 0x7f || c == '*' || c == '>' {
			return fmt.Errorf("%w: %.80q", ErrBadSubject, s)
		}
	}
	return nil
}

// Safe wraps a NATS handler so that a panic (a worker publishing garbage
// on tether's subjects, say) is logged with the subject instead of taking
// the node down: nats.go runs handlers on its own goroutines and does not
// recover them.
func Safe(log zerolog.Logger, h nats.MsgHandler) nats.MsgHandler {
	return func(m *nats.Msg) {
		defer func() {
			if v := recover(); v != nil {
				log.Error().Str("subject", m.Subject).Str("panic", fmt.Sprint(v)).Msg("nats handler panicked; message dropped")
			}
		}()
		h(m)
	}
}

// Go runs f on a goroutine of its own, recovering a panic into onPanic
// (which posts it to an actor) instead of crashing the process.
func Go(f func(), onPanic func(v any)) {
	go func() {
		defer func() {
			if v := recover(); v != nil {
				onPanic(v)
			}
		}()
		f()
	}()
}

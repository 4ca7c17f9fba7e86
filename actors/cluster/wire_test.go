package cluster_test

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"tether/actors/cluster"
	"tether/actors/protocol"
	"tether/actors/room"
	"tether/test/nodetest"
)

// TestRoomEventsRoundTrip guards the wire format of room subjects: every
// kind of room event a node publishes (PublishRoom) is the same event
// once another node decodes it, and headers it cannot read are an error,
// not a wrong event.
func TestRoomEventsRoundTrip(t *testing.T) {
	n := nodetest.Start(t, nodetest.Options{})
	sub, err := n.Peer.SubscribeSync("tether.room.r")
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Peer.Flush(); err != nil {
		t.Fatal(err)
	}
	ann := protocol.Member{Conn: "n.a", Name: "Ann", Avatar: "a.png", Node: "n"}
	events := []*room.Remote{
		{Kind: room.KindMessage, Body: []byte(`{"op":"message"}`), Seq: 3, From: "n.a", Time: time.Now().UnixNano()},
		{Kind: room.KindMessage, Body: []byte(`{"op":"message"}`)}, // the server's push: no sender, no number
		{Kind: room.KindJoined, Body: []byte(`{"op":"joined"}`), Member: ann},
		{Kind: room.KindLeft, Body: []byte(`{"op":"left"}`), Member: ann, Reason: "kicked"},
		{Kind: room.KindSync, Members: []protocol.Member{ann}, Seq: 7},
		{Kind: room.KindState, Members: []protocol.Member{}},
	}
	for _, ev := range events {
		if err := n.Bus.PublishRoom("r", ev); err != nil {
			t.Fatal(err)
		}
		m, err := sub.NextMsg(5 * time.Second)
		if err != nil {
			t.Fatal(err)
		}
		got, err := cluster.DecodeRoom(m)
		if err != nil {
			t.Fatalf("%s: %v", ev.Kind, err)
		}
		want := *ev
		want.Node = "n"
		if ev.Members != nil {
			want.Body = m.Data // sync and state carry the members as the body
		}
		if !reflect.DeepEqual(*got, want) {
			t.Errorf("published %+v, decoded %+v", want, *got)
		}
	}

	for header, value := range map[string]string{
		cluster.HeaderSeq: "x", cluster.HeaderTime: "now", cluster.HeaderMember: "{",
	} {
		m := n.Bus.Msg("tether.room.r", room.KindMessage, nil)
		m.Header.Set(header, value)
		if _, err := cluster.DecodeRoom(m); err == nil {
			t.Errorf("a message with %s %q decoded", header, value)
		}
	}
	if _, err := cluster.DecodeRoom(n.Bus.Msg("tether.room.r", room.KindSync, []byte("["))); err == nil {
		t.Error("a sync with a body that is no member list decoded")
	}
}

// TestRelaySubjectsNameTheirConnection guards Subjects.Relay: the reply
// subject of a relay connection's events gives back the connection and
// its binding (so a notice reaches the connection and tells an earlier
// worker's from the current one's), and nothing else parses as one.
func TestRelaySubjectsNameTheirConnection(t *testing.T) {
	s := cluster.Subjects{Prefix: "tether"}
	if conn, binding, ok := cluster.ParseRelay(s, s.Relay("n-x1.abc_D-9", 12)); !ok || conn != "n-x1.abc_D-9" || binding != 12 {
		t.Errorf("parsed %q %d %v, want n-x1.abc_D-9 12", conn, binding, ok)
	}
	for _, subject := range []string{"tether.relay.n.abc", "tether.relay.n.abc.x", "other.relay.n.abc.1", "tether.room.n.abc.1"} {
		if conn, binding, ok := cluster.ParseRelay(s, subject); ok {
			t.Errorf("%s parsed as %s binding %d", subject, conn, binding)
		}
	}
}

// TestPublishRefusesWhatNATSWouldRefuse guards checkSubject, the last
// line before NATS: a subject NATS would refuse (or take for a wildcard)
// is not sent and is counted lost, and the connection, which NATS would
// have closed, stays.
func TestPublishRefusesWhatNATSWouldRefuse(t *testing.T) {
	n := nodetest.Start(t, nodetest.Options{})
	bad := []string{"", "tether..x", ".tether", "tether.", "tether.a b", "tether.a\x01", "tether.*", "tether.>", "tether." + strings.Repeat("x", 600)}
	for _, subject := range bad {
		if err := n.Bus.Publish(n.Bus.Msg(subject, cluster.KindDeliver, nil)); !errors.Is(err, cluster.ErrBadSubject) {
			t.Errorf("publish on %.20q: %v, want ErrBadSubject", subject, err)
		}
	}
	if lost := n.Bus.Lost(); lost != int64(len(bad)) {
		t.Errorf("%d publications counted lost, want %d", lost, len(bad))
	}
	if err := n.Bus.Publish(n.Bus.Msg("tether.all", cluster.KindDeliver, nil)); err != nil || n.Bus.Conn().Status() != nats.CONNECTED {
		t.Errorf("a good publication after: %v, connection %s", err, n.Bus.Conn().Status())
	}
}

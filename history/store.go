// Package history keeps the messages of rooms with history in NATS
// JetStream (DESIGN.md section 10): appending a message, following a
// room's messages in the one order the stream gives them, and the epoch
// that names a history.
//
// One stream per namespace with history (rooms.namespaces[].history_size
// > 0, or rooms.default's) holds a subject per room,
// <prefix>.hist.<namespace>.<room>, and keeps each room's last
// history_size messages for history_ttl. A message's offset is its
// stream sequence: increasing within the room (not contiguous: the rooms
// of a namespace share the stream). The epoch is the stream's creation
// time: a history that is lost and made again (the stream deleted, a
// memory store restarted) has a new epoch, so a client's position in the
// old one is never taken for a position in the new.
//
// Each message carries the offset of the room's message its publisher had
// seen last (Tether-Prev): a room that gets a message whose predecessor
// it never got knows it missed some (a gap), and a client that was away
// before a room's first message can tell whether anything was pushed out
// since.
package history

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"tether/config"
)

// Headers of stored messages.
const (
	HeaderPrev = "Tether-Prev" // the offset of the room's message seen last by the publisher
	HeaderFrom = "Tether-From" // the member that sent it ("" for the server's pushes)
	HeaderEcho = "Tether-Echo" // "1": its sender gets it too
)

// Store is a node's access to the rooms' history. Its methods are safe for
// concurrent use.
type Store struct {
	o       Options
	streams map[string]*nsStream   // by namespace prefix ("" for rooms.default)
	on      atomic.Pointer[jsConn] // the NATS connection in use
}

// Options say what history to keep, and how.
type Options struct {
	Prefix   string        // nats.subject_prefix
	Rooms    *config.Rooms // the namespaces, with their history options
	Memory   bool          // streams in memory, not on disk
	Replicas int           // servers keeping each stream (nats.history_replicas)
	Log      zerolog.Logger
}

// nsStream is the stream of one namespace.
type nsStream struct {
	config.RoomOptions
	name  string
	token string // the namespace's token in subjects
	epoch string
}

// jsConn is JetStream on one NATS connection, with a handle of every
// namespace's stream on it.
type jsConn struct {
	js      jetstream.JetStream
	streams map[string]jetstream.Stream // by stream name
}

// publishTimeout bounds waiting for JetStream to acknowledge a message;
// past it the sender is told the cluster did not answer.
const publishTimeout = 5 * time.Second

// ErrNoJetStream says that the NATS in use has no JetStream, which
// history needs.
var ErrNoJetStream = errors.New("history needs NATS JetStream, which the NATS server in use does not have (run nats-server with -js, or use tether's embedded server)")

// Open makes (or updates) the stream of every namespace of rooms with
// history, and reads their epochs. With no such namespace it returns a
// Store that has no history.
func Open(ctx context.Context, nc *nats.Conn, o Options) (*Store, error) {
	s := &Store{o: o, streams: map[string]*nsStream{}}
	prefix, rooms := o.Prefix, o.Rooms
	add := func(ns string, o *config.RoomOptions) {
		if o.HistorySize == 0 {
			return
		}
		token := ns
		if token == "" {
			token = "_" // rooms.default: a namespace prefix is never "_"... nor empty
		}
		name := strings.ReplaceAll(prefix, ".", "_") + "_HIST_" + token
		s.streams[ns] = &nsStream{RoomOptions: *o, name: name, token: token}
	}
	add("", &rooms.Default)
	for i := range rooms.Namespaces {
		add(rooms.Namespaces[i].Prefix, &rooms.Namespaces[i].RoomOptions)
	}
	if len(s.streams) == 0 {
		return s, nil
	}
	if err := s.Attach(ctx, nc); err != nil {
		return nil, err
	}
	return s, nil
}

// Attach makes the store use nc: Open's connection, or the node's new one
// when NATS closed the old for good. It makes (or updates) the streams
// on it. A JetStream that does not answer yet (a cluster still electing
// its leader, a stream's replicas not all up) is asked again every
// attemptTimeout until ctx ends; one that is missing is an error at once.
// The epochs are those the streams had at Open: a stream made again since
// (a NATS without the old one's store) starts a history that rooms open
// before do not know, and is logged by them as a gap.
func (s *Store) Attach(ctx context.Context, nc *nats.Conn) error {
	if len(s.streams) == 0 {
		return nil
	}
	for {
		actx, cancel := context.WithTimeout(ctx, attemptTimeout)
		on, err := s.attach(actx, nc)
		cancel()
		switch {
		case err == nil:
			s.on.Store(on)
			return nil
		case errors.Is(err, ErrNoJetStream), ctx.Err() != nil:
			return err
		}
		s.o.Log.Warn().Err(err).Msg("waiting for NATS JetStream to keep the rooms' history")
		select {
		case <-ctx.Done():
			return err
		case <-time.After(attemptTimeout / 4):
		}
	}
}

// attemptTimeout bounds one attempt to reach JetStream.
const attemptTimeout = 2 * time.Second

func (s *Store) attach(ctx context.Context, nc *nats.Conn) (*jsConn, error) {
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncTimeout(publishTimeout))
	if err != nil {
		return nil, err
	}
	if _, err := js.AccountInfo(ctx); err != nil {
		if errors.Is(err, jetstream.ErrJetStreamNotEnabled) || errors.Is(err, jetstream.ErrJetStreamNotEnabledForAccount) {
			return nil, ErrNoJetStream
		}
		return nil, fmt.Errorf("history: jetstream: %w", err)
	}
	storage := jetstream.FileStorage
	if s.o.Memory {
		storage = jetstream.MemoryStorage
	}
	on := &jsConn{js: js, streams: map[string]jetstream.Stream{}}
	for _, ns := range s.streams {
		st, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
			Name:              ns.name,
			Description:       "tether: the history of the rooms of namespace " + ns.token,
			Subjects:          []string{s.o.Prefix + ".hist." + ns.token + ".*"},
			Storage:           storage,
			Replicas:          max(s.o.Replicas, 1),
			MaxMsgsPerSubject: int64(ns.HistorySize),
			MaxAge:            ns.HistoryTTL.D(),
			Discard:           jetstream.DiscardOld,
			Duplicates:        2 * time.Minute, // a send retried with its id is stored once
		})
		if err != nil {
			return nil, fmt.Errorf("history of namespace %s: %w", ns.token, err)
		}
		if ns.epoch == "" { // at Open, before any room reads it
			info, err := st.Info(ctx)
			if err != nil {
				return nil, err
			}
			ns.epoch = strconv.FormatInt(info.Created.UnixNano(), 36)
		}
		on.streams[ns.name] = st
	}
	return on, nil
}

// of returns the stream of room's namespace, nil when it has no history.
func (s *Store) of(room string) *nsStream {
	ns, _, ok := strings.Cut(room, ":")
	if !ok {
		ns = ""
	}
	if st, found := s.streams[ns]; found {
		return st
	}
	if ok { // a prefix no namespace names takes rooms.default
		return s.streams[""]
	}
	return nil
}

// Has says whether room keeps history.
func (s *Store) Has(room string) bool { return s.of(room) != nil }

// Size is how many messages room keeps.
func (s *Store) Size(room string) int { return s.of(room).HistorySize }

// Epoch names the history room's messages belong to.
func (s *Store) Epoch(room string) string { return s.of(room).epoch }

func (s *Store) subject(room string) string {
	return s.o.Prefix + ".hist." + s.of(room).token + "." + room
}

// Append stores payload, sent by from (a member, or "" for the server),
// as room's next message, asynchronously. prev is the offset of the room's
// message the caller saw last; echo says that the sender gets it too; id,
// when not empty, makes a retried append store the message once
// (JetStream's duplicate window). The future answers with the message's
// offset.
func (s *Store) Append(room string, payload []byte, from string, echo bool, prev uint64, id string) (jetstream.PubAckFuture, error) {
	m := nats.NewMsg(s.subject(room))
	m.Header.Set(HeaderPrev, strconv.FormatUint(prev, 10))
	if from != "" {
		m.Header.Set(HeaderFrom, from)
	}
	if echo {
		m.Header.Set(HeaderEcho, "1")
	}
	if id != "" {
		m.Header.Set(jetstream.MsgIDHeader, id)
	}
	m.Data = payload
	return s.on.Load().js.PublishMsgAsync(m)
}

// Entry is one stored message of a room.
type Entry struct {
	Offset  uint64 // its stream sequence
	Prev    uint64 // the offset its publisher had seen last
	From    string // its sender; "" for the server's
	Echo    bool   // its sender gets it too
	Payload []byte
	Pending uint64 // messages of the room after this one not delivered yet
	Time    time.Time
}

// Follow hands every stored message of room after offset after (0: from
// its oldest kept one), then every new one, to handle, in the stream's
// order, one at a time; it resumes by itself across NATS reconnects (an
// ordered consumer), but not onto a new connection (Attach). Stop it
// with the returned function.
func (s *Store) Follow(room string, after uint64, handle func(*Entry)) (stop func(), err error) {
	ctx, cancel := context.WithTimeout(context.Background(), publishTimeout)
	defer cancel()
	cc := jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{s.subject(room)},
		DeliverPolicy:  jetstream.DeliverAllPolicy,
	}
	if after > 0 {
		cc.DeliverPolicy, cc.OptStartSeq = jetstream.DeliverByStartSequencePolicy, after+1
	}
	cons, err := s.stream(room).OrderedConsumer(ctx, cc)
	if err != nil {
		return nil, err
	}
	consumed, err := cons.Consume(func(m jetstream.Msg) {
		meta, err := m.Metadata()
		if err != nil {
			return
		}
		prev, _ := strconv.ParseUint(m.Headers().Get(HeaderPrev), 10, 64)
		h := m.Headers()
		handle(&Entry{Offset: meta.Sequence.Stream, Prev: prev, From: h.Get(HeaderFrom), Echo: h.Get(HeaderEcho) == "1",
			Payload: m.Data(), Pending: meta.NumPending, Time: meta.Timestamp})
	})
	if err != nil {
		return nil, err
	}
	return consumed.Stop, nil
}

// stream is the handle of room's stream on the connection in use.
func (s *Store) stream(room string) jetstream.Stream { return s.on.Load().streams[s.of(room).name] }

// Last is the offset of room's newest stored message, 0 for none.
func (s *Store) Last(ctx context.Context, room string) (uint64, error) {
	m, err := s.stream(room).GetLastMsgForSubject(ctx, s.subject(room))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	return m.Sequence, nil
}

// Store appends payload to room and waits until JetStream has it: the
// server's pushes (the admin API), which have no room actor to wait for
// them.
func (s *Store) Store(ctx context.Context, room string, payload []byte) error {
	fut, err := s.Append(room, payload, "", false, 0, "")
	if err != nil {
		return err
	}
	select {
	case <-fut.Ok():
		return nil
	case err := <-fut.Err():
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

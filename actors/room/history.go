package room

import (
	"bytes"
	"context"
	"encoding/json"
	"strconv"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"tether/actors/protocol"
	"tether/history"
)

// roomHistory is the part of a room with history (DESIGN.md section 10):
// its messages go through its stream in NATS JetStream, which gives them
// their offsets and the one order every node delivers them in, and the
// room keeps the stream's last messages of the room (the same ones the
// stream keeps) to answer joins with since and history requests at once.
type roomHistory struct {
	store *history.Store
	size  int
	epoch string

	following bool
	stop      func()
	loaded    bool   // every message stored when it began following has come
	target    uint64 // the newest stored offset when it began following; 0: not known yet
	last      uint64 // the offset of the last message delivered
	kept      []kept // the last size messages, oldest first
}

// kept is one of a room's last messages, as its members get it.
type kept struct {
	offset, prev uint64
	payload      []byte // the message event, offset and epoch in it
	at           time.Time
}

// loadWait bounds how long joins wait for a room's history to load
// (NATS away): past it they are answered unavailable, and may try again.
const loadWait = 5 * time.Second

// followHistory starts following the room's stream, once: its stored
// messages load the room, then new ones are delivered as they come.
func (r *Actor) followHistory(ctx actor.Context) {
	h := r.hist
	if h.following {
		return
	}
	h.following = true
	system, self, handle, name := ctx.ActorSystem(), r.self, r.handle, r.name
	stop, err := h.store.Follow(name, h.last, func(e *history.Entry) {
		handle.Send(system, &stored{entry: e}) // waits while the room is busy: the stream keeps the rest
	})
	if err != nil {
		h.following = false
		r.deps.Log.Warn().Err(err).Str("room", name).Msg("cannot follow the room's history")
		system.Root.Send(self, &loadTarget{err: err})
		return
	}
	h.stop = stop
	go func() {
		defer func() { recover() }() // a panic here loses the load, which times out
		ctxT, cancel := context.WithTimeout(context.Background(), loadWait)
		defer cancel()
		last, err := h.store.Last(ctxT, name)
		system.Root.Send(self, &loadTarget{last: last, err: err})
	}()
	time.AfterFunc(loadWait, func() { system.Root.Send(self, &loadTimeout{}) })
}

// refollow follows the room's stream again, after the last message the
// room has: the follower it had was on a NATS connection that is closed
// for good.
func (r *Actor) refollow(ctx actor.Context) {
	h := r.hist
	if !h.following {
		return
	}
	h.stop()
	h.following = false
	r.followHistory(ctx)
}

func (r *Actor) loadTarget(ctx actor.Context, m *loadTarget) {
	h := r.hist
	if m.err != nil {
		r.failWaiting(ctx, "the room's history cannot be read: "+m.err.Error())
		return
	}
	h.target = max(m.last, 1) // 1: known, nothing stored
	if m.last == 0 || h.last >= m.last {
		h.loaded = true
		r.admit(ctx)
	}
}

func (r *Actor) loadTimedOut(ctx actor.Context) {
	if !r.hist.loaded {
		r.failWaiting(ctx, "the room's history did not load in time")
	}
}

// failWaiting answers the joins that wait unavailable.
func (r *Actor) failWaiting(ctx actor.Context, why string) {
	for _, p := range r.waiting {
		r.writeTo(p.join.Socket, p.join.Encoder, protocol.Encode(&protocol.Reply{
			Op: "error", ID: p.join.Ref, Code: protocol.CodeUnavailable, Message: why,
		}))
		ctx.Send(p.sender, &JoinReply{Name: r.name}) // no room: the join did not happen
	}
	r.waiting = nil
	if len(r.local) == 0 {
		ctx.Send(ctx.Parent(), &emptied{name: r.name, pid: r.self, joins: r.joins})
	}
}

// storedMessage takes a message from the stream: it is kept, delivered to
// the members, and counts toward the load.
func (r *Actor) storedMessage(ctx actor.Context, e *history.Entry) {
	h := r.hist
	if e.Offset <= h.last {
		return // again, after the consumer resumed
	}
	if h.loaded && e.Prev > h.last {
		// Its sender had seen a message this room never got: the stream
		// no longer has it (pushed out before it was delivered here).
		r.gap(ctx)
	}
	payload := withPosition(e.Payload, e.Offset, h.epoch)
	h.kept = append(h.kept, kept{offset: e.Offset, prev: e.Prev, payload: payload, at: e.Time})
	if len(h.kept) > h.size {
		h.kept[0] = kept{}
		h.kept = h.kept[1:]
	}
	h.last = e.Offset
	if !h.loaded {
		if h.target != 0 && h.last >= h.target {
			h.loaded = true
			r.admit(ctx)
		}
		return
	}
	except := e.From // like a room without history: not to its sender, unless it asked
	if e.Echo {
		except = ""
	}
	r.deliver(ctx, payload, except)
}

// withPosition adds offset and epoch to a stored message event.
func withPosition(event []byte, offset uint64, epoch string) []byte {
	i := bytes.LastIndexByte(event, '}')
	if i < 0 {
		return event
	}
	out := make([]byte, 0, len(event)+48)
	out = append(out, event[:i]...)
	out = append(out, `,"offset":`...)
	out = strconv.AppendUint(out, offset, 10)
	out = append(out, `,"epoch":"`...)
	out = append(out, epoch...)
	return append(out, `"}`...)
}

// prune drops the kept messages older than the history's ttl: the stream
// no longer has them either.
func (h *roomHistory) prune(ttl time.Duration) {
	if ttl <= 0 {
		return
	}
	old := time.Now().Add(-ttl)
	n := 0
	for n < len(h.kept) && h.kept[n].at.Before(old) {
		n++
	}
	clear(h.kept[:n])
	h.kept = h.kept[n:]
}

// recover answers a join: the messages after since to replay (every one,
// or none) and the ok with the room's position, and whether it recovered.
func (h *roomHistory) recover(since *protocol.Position) ([][]byte, *protocol.JoinOK) {
	ok := &protocol.JoinOK{Op: "ok", Offset: h.last, Epoch: h.epoch}
	if since == nil {
		return nil, ok
	}
	yes, no := true, false
	switch {
	case since.Epoch != h.epoch:
		ok.Recovered, ok.Reason = &no, protocol.ReasonEpochChanged
		return nil, ok
	case since.Offset >= h.last:
		ok.Recovered = &yes
		return nil, ok
	}
	// Everything after since is kept only if since itself is (the stream
	// pushes a room's oldest messages out first), or, from the start,
	// if the oldest kept one was its room's first.
	from := -1
	for i, k := range h.kept {
		if k.offset == since.Offset {
			from = i + 1
			break
		}
	}
	if from < 0 && since.Offset == 0 && len(h.kept) > 0 && h.kept[0].prev == 0 {
		from = 0
	}
	if from < 0 {
		ok.Recovered, ok.Reason = &no, protocol.ReasonTooOld
		return nil, ok
	}
	replay := make([][]byte, 0, len(h.kept)-from)
	for _, k := range h.kept[from:] {
		replay = append(replay, k.payload)
	}
	ok.Recovered = &yes
	return replay, ok
}

// storeSend stores a member's message in the room's stream; the member's
// ok (or error) comes once JetStream has answered. A send retried with
// the same request id on the same connection is stored once.
func (r *Actor) storeSend(ctx actor.Context, m *Send, payload []byte) {
	id := ""
	if m.Ref != nil {
		id = m.From + "/" + string(m.Ref)
	}
	system, self, from, ref := ctx.ActorSystem(), r.self, m.From, m.Ref
	fut, err := r.hist.store.Append(r.name, payload, m.From, m.Echo, r.hist.last, id)
	if err != nil {
		r.sendStored(&sendStored{from: from, ref: ref, err: err})
		return
	}
	go func() {
		defer func() { recover() }()
		select {
		case <-fut.Ok():
			system.Root.Send(self, &sendStored{from: from, ref: ref})
		case err := <-fut.Err():
			system.Root.Send(self, &sendStored{from: from, ref: ref, err: err})
		}
	}()
}

// sendStored answers the member whose message was stored (or not).
func (r *Actor) sendStored(m *sendStored) {
	mem, ok := r.local[m.from]
	if !ok || (m.ref == nil && m.err == nil) {
		return
	}
	reply := &protocol.Reply{Op: "ok", ID: m.ref}
	if m.err != nil {
		reply = &protocol.Reply{Op: "error", ID: m.ref, Code: protocol.CodeUnavailable,
			Message: "the message may not have been stored; send it again with the same id: " + m.err.Error()}
	}
	r.writeTo(mem.sock, mem.enc, protocol.Encode(reply))
}

// history answers a member's history request: the room's last messages.
func (r *Actor) history(ctx actor.Context, m *History) {
	if r.hist == nil {
		ctx.Respond(&HistoryReply{History: protocol.History{ID: m.Ref}, Err: protocol.CodeForbidden})
		return
	}
	h := r.hist
	h.prune(r.opts.HistoryTTL.D())
	n := len(h.kept)
	if m.Limit > 0 {
		n = min(n, m.Limit)
	}
	out := protocol.History{Op: "history", ID: m.Ref, Room: r.name, Offset: h.last, Epoch: h.epoch,
		Messages: make([]json.RawMessage, 0, n)}
	for _, k := range h.kept[len(h.kept)-n:] {
		out.Messages = append(out.Messages, k.payload)
	}
	ctx.Respond(&HistoryReply{History: out})
}

func (r *Actor) stopHistory() {
	if r.hist != nil && r.hist.stop != nil {
		r.hist.stop()
	}
}

package room

import (
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"tether/framing"
	"tether/transport"
)

// event is one message of the batch being collected, for every member
// but except, and, when sent is set, only for the members that joined
// before it was sent.
type event struct {
	msg    *framing.Message
	except string
	sent   int64 // Unix nanoseconds; 0: for every member
}

// deliver adds one encoded event, for every local member but except, to
// the batch; the batch is written once what is in the mailbox now has
// been handled.
func (r *Actor) deliver(ctx actor.Context, payload []byte, except string) {
	r.deliverSent(ctx, payload, except, 0)
}

// deliverSent is deliver of a message sent at sent: a member that joined
// after it does not get it, however late it came (NATS held it back).
func (r *Actor) deliverSent(ctx actor.Context, payload []byte, except string, sent int64) {
	if len(r.local) == 0 || (len(r.local) == 1 && r.local[except] != nil) {
		return
	}
	if len(r.batch) == 0 {
		r.batchStart = time.Now()
		ctx.Send(r.self, writeBatchMsg)
	}
	r.batch = append(r.batch, event{msg: framing.NewMessage(payload), except: except, sent: sent})
}

var writeBatchMsg = &writeBatch{}

// write writes the batch: to each member, its events (every one but those
// it sent itself), framed once per wire format, in one writev.
func (r *Actor) write() {
	if len(r.batch) == 0 {
		return
	}
	for id, m := range r.local {
		pushed := false
		for _, ev := range r.batch {
			if ev.except == id || (ev.sent != 0 && m.joined > ev.sent) {
				continue
			}
			frame, err := ev.msg.Frame(m.enc)
			if err != nil {
				r.deps.Log.Warn().Err(err).Str("room", r.name).Str("conn", id).Msg("event not sent: cannot be framed")
				continue
			}
			pushed = m.sock.Push(frame, false) || pushed
		}
		if pushed {
			r.dirty = append(r.dirty, m.sock)
		}
	}
	transport.FlushAll(r.dirty)
	r.deps.Metrics.Delivery.Observe(time.Since(r.batchStart).Seconds())
	clear(r.batch)
	r.batch = r.batch[:0]
	clear(r.dirty)
	r.dirty = r.dirty[:0]
}

// writeTo writes events to one socket at once, in one write (a join's
// replayed messages and its ok).
func (r *Actor) writeTo(sock *transport.Socket, enc *framing.Encoder, payloads ...[]byte) {
	for _, p := range payloads {
		if frame, err := enc.AppendMessage(nil, p); err == nil {
			sock.Push(frame, false)
		}
	}
	sock.Flush()
}

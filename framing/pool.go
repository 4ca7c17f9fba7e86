package framing

import (
	"math/bits"
	"sync"
)

// Partial frames live in buffers shared by all framers through sync.Pools,
// one per power-of-two size class, so that an idle connection holds no buffer
// and a busy one reuses a buffer another connection has just given back.
const (
	minClass = 9             // smallest buffer: 512 bytes
	numClass = bits.UintSize // one class per possible bit length of an int
	minBuf   = 1 << minClass // bytes
)

// pools[c] holds *[]byte buffers with a capacity of at least 1<<c bytes.
// Pointers to slices are pooled (not slices) so that Put does not allocate.
var pools [numClass]sync.Pool

// getBuf returns an empty buffer with a capacity of at least n bytes.
func getBuf(n int) *[]byte {
	c := max(bits.Len(uint(n-1)), minClass) // ceil(log2 n)
	if v := pools[c].Get(); v != nil {
		return v.(*[]byte)
	}
	b := make([]byte, 0, 1<<c)
	return &b
}

// putBuf gives a buffer back. It goes to the class of the largest power of two
// not above its capacity, so getBuf's promise holds for any capacity.
func putBuf(bp *[]byte) {
	c := bits.Len(uint(cap(*bp))) - 1 // floor(log2 cap)
	*bp = (*bp)[:0]
	pools[c].Put(bp)
}

// buffer holds the bytes of one partial frame or message. The zero value holds
// no memory; the memory comes from the pools and goes back by release.
type buffer struct {
	bp *[]byte // nil when empty
}

// len returns the number of bytes held.
func (b *buffer) len() int {
	if b.bp == nil {
		return 0
	}
	return len(*b.bp)
}

// bytes returns the bytes held (nil when none).
func (b *buffer) bytes() []byte {
	if b.bp == nil {
		return nil
	}
	return *b.bp
}

// append copies p to the end of the buffer and returns the copy. limit is the
// most the buffer will ever hold for the current frame (max_frame, or the exact
// frame size once a header has told it): growth doubles, but never asks the
// pool for more than limit bytes, and memory is taken only for bytes that have
// actually arrived, never for a size a peer merely declared. The caller
// guarantees b.len()+len(p) <= limit.
func (b *buffer) append(p []byte, limit int) []byte {
	if len(p) == 0 {
		return nil
	}
	n := b.len() + len(p)
	switch {
	case b.bp == nil:
		b.bp = getBuf(min(max(n, minBuf), limit))
	case n > cap(*b.bp):
		nb := getBuf(min(max(n, 2*cap(*b.bp)), limit))
		*nb = append(*nb, *b.bp...)
		putBuf(b.bp)
		b.bp = nb
	}
	start := len(*b.bp)
	*b.bp = append(*b.bp, p...)
	return (*b.bp)[start:]
}

// take hands the buffer's memory to the caller (who must putBuf it) and leaves
// the buffer empty.
func (b *buffer) take() *[]byte {
	bp := b.bp
	b.bp = nil
	return bp
}

// release gives the memory back to the pool and leaves the buffer empty.
func (b *buffer) release() {
	if b.bp != nil {
		putBuf(b.bp)
		b.bp = nil
	}
}

// lent is a buffer whose bytes the last Next returned as a Payload. It goes
// back to the pool at the next call of Next, Feed or Reset, which is when that
// Payload stops being valid.
type lent struct {
	bp *[]byte
}

// set records bp (which may be nil) as lent out.
func (l *lent) set(bp *[]byte) { l.bp = bp }

// release gives the lent buffer back to the pool.
func (l *lent) release() {
	if l.bp != nil {
		putBuf(l.bp)
		l.bp = nil
	}
}
